"""``onnxprune sensitivity``: how much each group alone degrades the outputs when cut to a few widths."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from onnxprune import api
from onnxprune.cli.shared import (
    CalibOpt,
    CalibSamplesOpt,
    CalibStepsOpt,
    EvalCmdOpt,
    ModelArg,
    RayOpt,
    RoundToOpt,
    SensitivitySamplesOpt,
    WorkersOpt,
    calib_request,
    choices,
    console,
    user_errors,
)
from onnxprune.errors import UsageError
from onnxprune.files import check_output_path, save_json
from onnxprune.inputs import parse_shapes
from onnxprune.options import Compensate, Criterion, choice
from onnxprune.plots import check_plot_path, plot_sensitivity
from onnxprune.report import sensitivity_table
from onnxprune.search.sensitivity import FRACTIONS, SAMPLES


@user_errors
def sensitivity(
    model: ModelArg,
    calib: CalibOpt = None,
    calib_samples: CalibSamplesOpt = None,
    calib_steps: CalibStepsOpt = "rebuild,refit",
    eval_cmd: EvalCmdOpt = None,
    sensitivity_samples: SensitivitySamplesOpt = SAMPLES,
    fractions: Annotated[
        str, typer.Option(help="Fractions of each group's channels kept, one evaluation each.")
    ] = ",".join(f"{f:g}" for f in FRACTIONS),
    compensate: Annotated[
        str,
        choices(Compensate, "The compensation measured with (default: calib with --calib, else bn)."),
    ] = Compensate.AUTO,
    criterion: Annotated[str, choices(Criterion, "Which channels of a group go first.")] = Criterion.AUTO,
    round_to: RoundToOpt = "auto",
    min_keep: Annotated[int, typer.Option(help="Never keep fewer channels in a group.")] = 8,
    exclude: Annotated[list[str] | None, typer.Option(help="Node-name glob left untouched.")] = None,
    shape: Annotated[list[str] | None, typer.Option(help="NAME:1x3x224x224 for a dynamic input.")] = None,
    json_out: Annotated[Path | None, typer.Option("--json", help="Write the curves as JSON here.")] = None,
    plot: Annotated[
        Path | None, typer.Option(help="Draw damage against channels kept into this PNG.")
    ] = None,
    workers: WorkersOpt = None,
    ray: RayOpt = None,
) -> None:
    """Cut each group alone to a few widths and measure how far the outputs move on the calibration data
    (its fitting part), with the compensation a prune would use: the curves a --target-* prune allocates
    its budget by."""
    for path in (json_out, plot):
        if path is not None:
            check_output_path(path, [model])
    if plot is not None:
        check_plot_path(plot, [model])
    try:
        kept = tuple(float(f) for f in fractions.split(",") if f.strip())
    except ValueError:
        raise UsageError(f"--fractions must be comma-separated numbers, got {fractions!r}") from None
    options = api.PlanOptions(
        ratio=0.0,
        round_to=round_to,
        min_keep=min_keep,
        exclude=tuple(exclude or ()),
        criterion=choice(Criterion, criterion, "--criterion"),
        compensate=choice(Compensate, compensate, "--compensate"),
    )
    search = api.SearchOptions(
        eval_cmd=eval_cmd,
        sensitivity=api.SensitivityOptions(kept, sensitivity_samples),
        progress=True,
        workers=workers,
        ray=ray,
    )
    request = calib_request(calib, None, None, None, calib_samples, calib_steps)
    found = api.sensitivity(model, options, request, search, parse_shapes(shape or []))
    record = found.to_dict()
    if json_out is not None:
        save_json(record, json_out)
    if plot is not None:
        plot_sensitivity(record, plot, model.name)
    console.print(sensitivity_table(record, model.name))
    if json_out is None:
        console.print("the curves as JSON: --json FILE", style="dim")
