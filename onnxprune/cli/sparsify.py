"""``onnxprune sparsify``: make eligible Conv/Gemm/MatMul weights 2:4 (SparseGPT with --calib)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from onnxprune.cli.printing import print_sparsity
from onnxprune.cli.shared import ModelArg, user_errors
from onnxprune.files import check_output_path, save_json
from onnxprune.inputs import parse_shapes
from onnxprune.sparsity import SparsifyOptions
from onnxprune.sparsity import sparsify as run_sparsify
from onnxprune.sparsity.layers import MIN_CHANNELS


@user_errors
def sparsify(
    model: ModelArg,
    output: Annotated[Path, typer.Option("-o", "--output", help="Where to write the 2:4 model.")],
    min_channels: Annotated[
        int, typer.Option(help="Skip layers with C*R*S or K below this (they do not speed up).")
    ] = MIN_CHANNELS,
    layers: Annotated[list[str] | None, typer.Option(help="Only layers whose name matches (glob).")] = None,
    exclude: Annotated[list[str] | None, typer.Option(help="Never layers whose name matches (glob).")] = None,
    calib: Annotated[
        Path | None, typer.Option(help="Calibration data (.npz, JSON, folder): SparseGPT, not magnitude.")
    ] = None,
    holdout: Annotated[float, typer.Option(help="Fraction of --calib held out to measure fidelity.")] = 0.25,
    selection: Annotated[
        str, typer.Option(help="auto (SparseGPT with --calib, else magnitude) | magnitude | sparsegpt")
    ] = "auto",
    sequential: Annotated[
        bool,
        typer.Option(
            "--sequential/--one-pass",
            help="SparseGPT: each layer's Gram from the model as sparsified so far, or all from the input.",
        ),
    ] = True,
    shape: Annotated[
        list[str] | None, typer.Option(help="NAME:1x3x224x224 for a dynamic input (MACs, random feeds).")
    ] = None,
    report: Annotated[Path | None, typer.Option(help="Write the report as JSON here.")] = None,
    external_data: Annotated[
        bool | None, typer.Option("--external-data/--no-external-data", help="Weights in a side file.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON only.")] = False,
) -> None:
    """Make eligible Conv/Gemm/MatMul weights 2:4 for sparse Tensor Cores (TensorRT --sparsity=enable)."""
    if report is not None:
        check_output_path(report, [model])
    options = SparsifyOptions(
        min_channels, list(layers or []), list(exclude or []), calib, holdout, selection=selection,
        sequential=sequential, shapes=parse_shapes(shape or []),
    )  # fmt: skip
    # The report first: where it cannot be written, neither is the model.
    write_report = (lambda done: save_json(done.report, report)) if report is not None else None
    result = run_sparsify(model, output, options, external_data=external_data, before_save=write_report)
    if as_json:
        print(json.dumps(result.report, indent=2))
        return
    print_sparsity(result.report, output)
