"""``onnxprune prune``: remove the least important channels, write the model, verify it, and on request
compensate, sparsify, build a TensorRT plan, time and plot."""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Annotated, Any

import typer

from onnxprune import api
from onnxprune.cli.build import BackendOpt, BiasMapsOpt, shape_profiles
from onnxprune.cli.printing import print_build, print_sparsity, print_verification
from onnxprune.cli.shared import (
    CalibOpt,
    CalibSamplesOpt,
    CalibStepsOpt,
    InputsOpt,
    IterationsOpt,
    ModelArg,
    RoundToOpt,
    calib_request,
    choices,
    console,
    one_target,
    user_errors,
    warn,
)
from onnxprune.engine import BiasMapForm, BuildOptions, EngineBackend, build_engine, measure_engine
from onnxprune.engine.backends import require
from onnxprune.engine.build import check_shapes
from onnxprune.engine.report import layers_path
from onnxprune.errors import OnnxPruneError, UsageError
from onnxprune.files import check_output_path, save_json
from onnxprune.inputs import parse_shapes
from onnxprune.measure.bench import BenchOptions, bench_record
from onnxprune.measure.plots import plot_kept
from onnxprune.options import Compensate, Criterion, PlanOptions, Scope, choice
from onnxprune.plan import load_plan
from onnxprune.report import (
    bench_table,
    calibration_table,
    compensation_table,
    groups_table,
    prune_table,
    target_line,
)
from onnxprune.sparsity.layers import MIN_CHANNELS

# The library's default (options.PlanOptions), measured on the MNIST models (README, benchmarks/accuracy.py).
DEFAULT_MAX_GROUP_RATIO = PlanOptions.max_group_ratio


@user_errors
def prune(
    model: ModelArg,
    output: Annotated[Path, typer.Option("-o", "--output", help="Where to write the pruned model.")],
    ratio: Annotated[
        float | None, typer.Option(help="Fraction of prunable channels to remove, 0 <= R < 1.")
    ] = None,
    threshold: Annotated[float | None, typer.Option(help="Remove channels whose importance is <= T.")] = None,
    replay: Annotated[
        Path | None, typer.Option(help="Apply the kept channels of an earlier --report.")
    ] = None,
    round_to: RoundToOpt = "auto",
    min_keep: Annotated[int, typer.Option(help="Never keep fewer channels in a group.")] = 8,
    scope: Annotated[
        str, choices(Scope, "global: one percentile over all groups; layer: per group.")
    ] = Scope.GLOBAL,
    exclude: Annotated[
        list[str] | None, typer.Option(help="Node-name glob whose channels stay untouched.")
    ] = None,
    criterion: Annotated[
        str, choices(Criterion, "How channels are ranked (activation needs --calib).")
    ] = Criterion.AUTO,
    compensate: Annotated[
        str | None,
        choices(
            Compensate,
            "What removed channels leave behind, folded into biases "
            "(default: bn, data-free; calib with --calib).",
        ),
    ] = None,
    max_group_ratio: Annotated[
        float, typer.Option(help="With --ratio: remove at most this fraction of any one group.")
    ] = DEFAULT_MAX_GROUP_RATIO,
    calib: CalibOpt = None,
    calib_size: Annotated[str | None, typer.Option(help="Images: resize to HxW.")] = None,
    calib_mean: Annotated[str | None, typer.Option(help="Images: mean per channel, m or m,m,m.")] = None,
    calib_std: Annotated[str | None, typer.Option(help="Images: std per channel, s or s,s,s.")] = None,
    calib_samples: CalibSamplesOpt = None,
    calib_steps: CalibStepsOpt = "refit",
    report: Annotated[Path | None, typer.Option(help="Write the report as JSON here.")] = None,
    external_data: Annotated[
        bool | None, typer.Option("--external-data/--no-external-data", help="Weights in a side file.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON only.")] = False,
    verify: Annotated[
        bool, typer.Option("--verify/--no-verify", help="Check exactness and output change.")
    ] = True,
    inputs: InputsOpt = None,
    iterations: IterationsOpt = None,
    seed: Annotated[int, typer.Option(help="Seed of the random inputs.")] = 0,
    shape: Annotated[list[str] | None, typer.Option(help="NAME:1x3x224x224 for a dynamic input.")] = None,
    plan: Annotated[
        Path | None,
        typer.Option(help="Also build an engine plan of the pruned model (and measure the original's)."),
    ] = None,
    backend: BackendOpt = "auto",
    fp16: Annotated[bool, typer.Option(help="With --plan: an FP16 engine (from an FP16 ONNX).")] = False,
    save_onnx: Annotated[
        Path | None, typer.Option(help="With --plan: write the ONNX handed to the builder.")
    ] = None,
    bias_maps: BiasMapsOpt = "auto",
    target_macs: Annotated[float | None, typer.Option(help="Prune to this fraction of the MACs.")] = None,
    target_params: Annotated[float | None, typer.Option(help="Prune to this fraction of the params.")] = None,
    target_latency: Annotated[
        float | None, typer.Option(help="Prune to this fraction of the ONNX Runtime latency here.")
    ] = None,
    bench: Annotated[bool, typer.Option("--bench", help="Time original and pruned on ONNX Runtime.")] = False,
    plot: Annotated[Path | None, typer.Option(help="Draw kept channels per layer into this PNG.")] = None,
    sparsify: Annotated[
        bool,
        typer.Option(
            "--sparsify", help="Then make eligible layers 2:4 (SparseGPT with --calib, else magnitude)."
        ),
    ] = False,
    min_channels: Annotated[int, typer.Option(help="With --sparsify: the 2:4 size floor.")] = MIN_CHANNELS,
) -> None:
    """Remove the least important channels and write a smaller, validated, verified model."""
    layers = layers_path(plan) if plan is not None else None
    _distinct_outputs(
        model,
        {"-o": output, "--report": report, "--plan": plan, "--save-onnx": save_onnx, "--plot": plot,
         "the plan's layer record": layers},
    )  # fmt: skip
    target = one_target(target_macs, target_params, target_latency)
    engine_options = None
    if plan is not None:
        engine_options = BuildOptions(
            backend=choice(EngineBackend, backend, "--backend"),
            fp16=fp16,
            bias_maps=choice(BiasMapForm, bias_maps, "--bias-maps"),
            profiles=shape_profiles(shape),
        )
        require(engine_options.backend)  # before any work: one line, nothing written
        check_shapes(model, engine_options)
    elif (fp16, save_onnx, backend, bias_maps) != (False, None, "auto", "auto"):
        raise UsageError("--fp16, --save-onnx, --backend and --bias-maps apply to --plan; give --plan too")
    if target is not None:
        if ratio is not None or threshold is not None or replay is not None:
            raise UsageError("give a --target-* or one of --ratio, --threshold and --replay, not both")
        ratio = 0.0  # where the search starts
    options = api.PlanOptions(
        ratio=ratio,
        threshold=threshold,
        replay=load_plan(replay) if replay is not None else None,
        round_to=round_to,
        min_keep=min_keep,
        scope=choice(Scope, scope, "--scope"),
        exclude=tuple(exclude or ()),
        criterion=choice(Criterion, criterion, "--criterion"),
        compensate=choice(Compensate, compensate or ("calib" if calib is not None else "bn"), "--compensate"),
        max_group_ratio=max_group_ratio,
    )
    checks = api.VerifyOptions(
        enabled=verify,
        inputs=inputs,
        iterations=iterations,
        seed=seed,
        shapes=parse_shapes(shape or []),
        progress=not as_json,
    )
    if min_channels != MIN_CHANNELS and not sparsify:
        raise UsageError("--min-channels only applies with --sparsify")
    sparse = api.SparsifyOptions(min_channels=min_channels) if sparsify else None
    request = calib_request(calib, calib_size, calib_mean, calib_std, calib_samples, calib_steps)
    built: list[Any] = []
    # The plan is built from a staged copy before the .onnx is published: a failed build writes nothing.
    stage = None
    if plan is not None and engine_options is not None:
        stage = functools.partial(_build_into, built, model, plan, engine_options, save_onnx)
    title = f"{model.name} → {output.name}"
    tables = _Tables(title, output) if not (as_json or bench) else None
    result = api.prune(
        model, output, options, verify=checks, external_data=external_data, target=target, sparsify=sparse,
        calib=request, before_save=stage, on_pruned=tables,
    )  # fmt: skip
    if bench:
        timing = BenchOptions(shapes=checks.shapes, min_seconds=2.0)
        result.report["bench"] = bench_record([model, output], timing)
    if plot is not None:
        plot_kept(result.report, plot)
    params = result.report["params"]["before"], result.report["params"]["after"]
    if built:
        engine, original = built[0]
        result.report["engine"] = _engine_record(engine, original, params)
    if report is not None:
        save_json(result.report, report)
    warn(result.report.get("warnings", []) + result.report.get("verify", {}).get("warnings", []))
    if as_json:
        print(json.dumps(result.report, indent=2))
        return
    if tables is not None and tables.result is result:
        console.file.write(tables.text)
    else:
        _print_report(result.report, title, output)
    for engine, original in built:
        if isinstance(original, str):
            print_build(engine)
            warn([original])
        else:
            print_build(engine, (model, params[0], original.to_dict()), params[1])


class _Tables:
    """The report's tables, rendered as soon as the result is known: a prune without verification renders
    them while ONNX Runtime checks the model in its thread (ResNet-50: 0.05-0.1 s that were spent after the
    wait); they are printed once the file is written."""

    def __init__(self, title: str, output: Path) -> None:
        self.title, self.output = title, output
        self.result: api.PruneResult | None = None
        self.text = ""

    def __call__(self, result: api.PruneResult) -> None:
        with console.capture() as captured:
            _print_report(result.report, self.title, self.output)
        self.result, self.text = result, captured.get()


def _print_report(report: dict[str, Any], title: str, output: Path) -> None:
    console.print(groups_table(report))
    console.print(prune_table(report, title))
    if "target" in report:
        console.print(target_line(report["target"]), highlight=False)
    if report["unaligned"]:
        first = report["unaligned"][0]
        console.print(
            f"[yellow]{len(report['unaligned'])} widths a consumer sees are not multiples of "
            f"{report['options']['aligned_to']}[/] (first: {first['width']} at {first['node']}; "
            "the report lists them: 'unaligned')",
            highlight=False,
        )
    if "bench" in report:
        console.print(bench_table(report["bench"]))
    if report.get("compensation", {}).get("layers"):
        console.print(compensation_table(report["compensation"]))
    if "calibration" in report:
        console.print(calibration_table(report["calibration"]))
    if "verify" in report:
        print_verification(report["verify"])
    if "sparsity" in report:
        print_sparsity(report["sparsity"], output)


def _distinct_outputs(model: Path, outputs: dict[str, Path | None]) -> None:
    """No output may overwrite the input or another output (``--report`` equal to ``-o``)."""
    seen: dict[Path, str] = {}
    for option, path in outputs.items():
        if path is None:
            continue
        check_output_path(path, [model])
        resolved = path.resolve()
        if resolved in seen:
            raise UsageError(f"{seen[resolved]} and {option} name the same file {path}; give each its own")
        seen[resolved] = option


def _build_into(
    built: list[Any], model: Path, plan: Path, options: BuildOptions, save_onnx: Path | None, staged: Path
) -> None:
    """Builds the original's plan (measured for the table, not written), then the pruned model's from its
    staged copy. A failed build of the pruned model names no file it did not write."""
    try:
        original: Any = measure_engine(model, options)
    except OnnxPruneError as err:  # the table is a comparison, not the product: the pruned plan stands
        original = f"the original's plan could not be built to compare with: {err}"
    try:
        engine = build_engine(staged, plan, options, save_onnx=save_onnx)
    except OnnxPruneError as err:
        raise type(err)(
            f"{err}; the pruned model was not written either (prune without --plan for it)"
        ) from None
    built.append((engine, original))


def _engine_record(engine: Any, original: Any, params: tuple[int, int]) -> dict[str, Any]:
    return {
        "pruned": engine.engine.to_dict(),
        "original": original if isinstance(original, str) else original.to_dict(),
        "params": {"before": params[0], "after": params[1]},
        "compared": engine.comparison is not None,
    }
