"""The command line: each command parses options, calls one library function and prints with rich.

No graph logic lives here. Library errors (``OnnxPruneError``) become one line on stderr and exit 1 (2 for
bad usage); anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable, Mapping
from enum import Enum
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from onnxprune import api
from onnxprune.compensate.calibrate import CalibOptions
from onnxprune.data import parse_floats, parse_size
from onnxprune.errors import OnnxPruneError, UsageError
from onnxprune.files import check_output_path, read_model, save_json
from onnxprune.inputs import parse_shapes
from onnxprune.options import Compensate, Criterion, Scope, choice
from onnxprune.plan import load_plan
from onnxprune.report import (
    calibration_table,
    compensation_table,
    group_summary,
    groups_table,
    inspect_table,
    prune_table,
)
from onnxprune.sparsity import SparsifyOptions, survey
from onnxprune.sparsity import sparsify as run_sparsify
from onnxprune.sparsity.layers import MIN_CHANNELS
from onnxprune.sparsity.tables import fidelity_table, sparsify_table, survey_table
from onnxprune.tensorrt import build_engine
from onnxprune.text import number
from onnxprune.tolerances import CHECK
from onnxprune.verify import check_models, render_comparison

app = typer.Typer(
    name="onnxprune",
    help="Offline channel pruning for exported ONNX CNNs: exact, verified, TensorRT-ready.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console()
errors = Console(stderr=True)
F = TypeVar("F", bound=Callable[..., Any])


def user_errors(func: F) -> F:
    """Turn library errors into one line and an exit code; Ctrl-C into exit 130 without a traceback."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except OnnxPruneError as exc:
            errors.print(f"[red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
            raise typer.Exit(getattr(exc, "exit_code", 1)) from None
        except KeyboardInterrupt:
            errors.print("interrupted")
            raise typer.Exit(130) from None

    return wrapper  # type: ignore[return-value]


def _choices(kind: type[Enum], help: str) -> Any:
    """An option whose values are an enum's: typer lists and completes them, and the library's own check
    (``options.choice``) refuses others with one line, like every other bad option."""
    values = [str(m.value) for m in kind]
    return typer.Option(metavar="[" + "|".join(values) + "]", help=help, autocompletion=lambda: values)


# Measured on the MNIST models (README, benchmarks/accuracy.py).
DEFAULT_MAX_GROUP_RATIO = 1.0


ModelArg = Annotated[Path, typer.Argument(help="ONNX model file.", show_default=False)]


@app.command()
@user_errors
def inspect(
    model: ModelArg,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON only.")] = False,
    explain: Annotated[bool, typer.Option("--explain", help="List every decline with its node.")] = False,
    criterion: Annotated[str, _choices(Criterion, "How channels are ranked.")] = Criterion.AUTO,
    sparsity: Annotated[
        bool, typer.Option("--sparsity", help="List each layer for 2:4: already 2:4, eligible or why not.")
    ] = False,
    min_channels: Annotated[
        int, typer.Option(help="With --sparsity: the size floor (C*R*S and K).")
    ] = MIN_CHANNELS,
) -> None:
    """Show every channel group: its nodes, |gamma| spread, share of MACs, and prunable or why not."""
    if sparsity:
        _inspect_sparsity(model, min_channels, as_json)
        return
    found = api.inspect(model, criterion)
    groups = [group_summary(g, found.macs) for g in found.groups if g.nodes]
    if as_json:
        payload = {
            "model": str(model),
            "params": found.params,
            "macs": found.macs,
            "conv_bn_pairs": found.pairs,
            "groups": groups,
            "warnings": found.warnings,
        }
        print(json.dumps(payload, indent=2))
        return
    shown = groups if explain else [g for g in groups if g["prunable"]]
    title = f"{model.name}: {sum(g['prunable'] for g in groups)} prunable of {len(groups)} channel groups"
    console.print(inspect_table(shown, title))
    convs = sum(p["producer_op"] == "Conv" for p in found.pairs)
    others = len(found.pairs) - convs
    console.print(f"{convs} Conv→BatchNormalization pairs, {others} BatchNormalizations after other ops")
    for warning in found.warnings:
        errors.print(f"[yellow]warning:[/] {escape(warning)}", highlight=False, soft_wrap=True)
    if explain:
        for p in found.pairs:
            console.print(
                f"  {p['producer']} ({p['producer_op']}) → {p['bn']}", highlight=False, markup=False
            )
        console.print("declines, one line each (group: reason at node):")
        for g in groups:
            for d in g["declines"]:
                at = f" at {d['node']}" if d["node"] else ""
                line = f"  group {g['id']}: {d['reason']}{at}"
                console.print(line, soft_wrap=True, highlight=False, markup=False)
    else:
        hidden = len(groups) - len(shown)
        console.print(f"{hidden} declined groups hidden; --explain lists them with reasons.")


def _inspect_sparsity(model: Path, min_channels: int, as_json: bool) -> None:
    layers, total = survey(read_model(model), SparsifyOptions(min_channels=min_channels))
    rows = [layer.to_dict(total) for layer in layers]
    if as_json:
        print(json.dumps({"model": str(model), "macs": total, "sparsity": rows}, indent=2))
        return
    eligible = [row for row in rows if row["eligible"]]
    share = sum(row["macs_share"] for row in eligible)
    title = f"{model.name}: {len(eligible)} of {len(rows)} layers eligible for 2:4 ({share:.1%} of MACs)"
    console.print(survey_table(rows, title))
    console.print(f"{sum(row['already_24'] for row in rows)} layers already 2:4")


@app.command()
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
    round_to: Annotated[int, typer.Option(help="Round kept counts up to a multiple of N (1: off).")] = 8,
    min_keep: Annotated[int, typer.Option(help="Never keep fewer channels in a group.")] = 8,
    scope: Annotated[
        str, _choices(Scope, "global: one percentile over all groups; layer: per group.")
    ] = Scope.GLOBAL,
    exclude: Annotated[
        list[str] | None, typer.Option(help="Node-name glob whose channels stay untouched.")
    ] = None,
    criterion: Annotated[
        str, _choices(Criterion, "How channels are ranked (activation needs --calib).")
    ] = Criterion.AUTO,
    compensate: Annotated[
        str | None,
        _choices(
            Compensate,
            "What removed channels leave behind, folded into biases "
            "(default: bn, data-free; calib with --calib).",
        ),
    ] = None,
    max_group_ratio: Annotated[
        float, typer.Option(help="With --ratio: remove at most this fraction of any one group.")
    ] = DEFAULT_MAX_GROUP_RATIO,
    calib: Annotated[
        Path | None,
        typer.Option(help="Calibration data (.npz, Polygraphy JSON, folder of .npy or images)."),
    ] = None,
    calib_size: Annotated[str | None, typer.Option(help="Images: resize to HxW.")] = None,
    calib_mean: Annotated[str | None, typer.Option(help="Images: mean per channel, m or m,m,m.")] = None,
    calib_std: Annotated[str | None, typer.Option(help="Images: std per channel, s or s,s,s.")] = None,
    calib_samples: Annotated[int | None, typer.Option(help="Use the first N calibration samples.")] = None,
    calib_steps: Annotated[
        str, typer.Option(help="Calibration steps, comma list of bias, refit, bn.")
    ] = "refit",
    report: Annotated[Path | None, typer.Option(help="Write the report as JSON here.")] = None,
    external_data: Annotated[
        bool | None, typer.Option("--external-data/--no-external-data", help="Weights in a side file.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON only.")] = False,
    verify: Annotated[
        bool, typer.Option("--verify/--no-verify", help="Check exactness and output change.")
    ] = True,
    inputs: Annotated[Path | None, typer.Option(help="Verify on this .npz or Polygraphy JSON.")] = None,
    iterations: Annotated[int, typer.Option(help="Random inputs to verify on.")] = 1,
    seed: Annotated[int, typer.Option(help="Seed of the random inputs.")] = 0,
    shape: Annotated[list[str] | None, typer.Option(help="NAME:1x3x224x224 for a dynamic input.")] = None,
    plan: Annotated[Path | None, typer.Option(help="Also build a TensorRT plan of the pruned model.")] = None,
    fp16: Annotated[bool, typer.Option(help="With --plan: an FP16 engine (from an FP16 ONNX).")] = False,
    save_onnx: Annotated[
        Path | None, typer.Option(help="With --plan: write the ONNX handed to TensorRT.")
    ] = None,
    sparsify: Annotated[
        bool, typer.Option("--sparsify", help="Then make eligible layers 2:4 (by magnitude).")
    ] = False,
    min_channels: Annotated[int, typer.Option(help="With --sparsify: the 2:4 size floor.")] = MIN_CHANNELS,
) -> None:
    """Remove the least important channels and write a smaller, validated, verified model."""
    if report is not None:
        check_output_path(report, [model])
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
    request = _calib_request(calib, calib_size, calib_mean, calib_std, calib_samples, calib_steps)
    result = api.prune(
        model, output, options, verify=checks, external_data=external_data, sparsify=sparse, calib=request
    )
    if report is not None:
        save_json(result.report, report)
    if as_json:
        print(json.dumps(result.report, indent=2))
        return
    console.print(groups_table(result.report))
    console.print(prune_table(result.report, f"{model.name} → {output.name}"))
    if result.report.get("compensation", {}).get("layers"):
        console.print(compensation_table(result.report["compensation"]))
    if "calibration" in result.report:
        console.print(calibration_table(result.report["calibration"]))
    if "verify" in result.report:
        _print_verification(result.report["verify"])
    if "sparsity" in result.report:
        _print_sparsity(result.report["sparsity"], output)
    if plan is not None:
        _build_and_print(output, plan, fp16=fp16, save_onnx=save_onnx, shapes=checks.shapes)


@app.command()
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
        min_channels, list(layers or []), list(exclude or []), calib, holdout, selection=selection
    )
    result = run_sparsify(model, output, options, external_data=external_data)
    if report is not None:
        save_json(result.report, report)
    if as_json:
        print(json.dumps(result.report, indent=2))
        return
    _print_sparsity(result.report, output)


def _print_sparsity(report: dict[str, Any], output: Path) -> None:
    method = "SparseGPT, calibrated" if report["method"] == "sparsegpt" else "magnitude"
    if not report["sparsified"]:
        console.print("no layer eligible for 2:4; `onnxprune inspect --sparsity` lists the reasons")
        return
    title = f"{output.name}: {report['sparsified']} of {report['candidates']} layers 2:4 ({method})"
    console.print(sparsify_table(report, title))
    console.print(
        f"{report['macs_share']:.1%} of MACs in 2:4 layers; every one checked to hold the pattern "
        "(build with TensorRT's sparse weights: onnxprune build turns them on by itself)"
    )
    if "fidelity" in report:
        console.print(fidelity_table(report["fidelity"]))


def _print_verification(verification: dict[str, Any]) -> None:
    exact, change = verification["exact"], verification["change"]
    worst = max((o["max_rel_err"] or 0.0 for o in exact["outputs"]), default=0.0)
    console.print(
        f"[green]exact[/]: matches its masked reference (max relative error {worst:.2g} <= {exact['rtol']:g})"
    )
    table = Table(title="change from the original (what pruning did to the outputs)")
    for column in ("output", "max abs", "max rel", "cosine", "top-1 agree"):
        table.add_column(column, justify="right")
    for o in change["outputs"]:
        top1 = "-" if o["top1_agreement"] is None else f"{o['top1_agreement']:.1%}"
        table.add_row(
            o["name"], number(o["max_abs_err"]), number(o["max_rel_err"]), number(o["cosine"], ".5f"), top1
        )
    console.print(table)


@app.command()
@user_errors
def check(
    original: ModelArg,
    other: Annotated[Path, typer.Argument(help="The model to compare with ORIGINAL.", show_default=False)],
    inputs: Annotated[Path | None, typer.Option(help=".npz keyed by input name, or Polygraphy JSON.")] = None,
    iterations: Annotated[int, typer.Option(help="Random inputs to compare on.")] = 1,
    seed: Annotated[int, typer.Option(help="Seed of the random inputs.")] = 0,
    atol: Annotated[float, typer.Option(help="Absolute tolerance.")] = CHECK.atol,
    rtol: Annotated[float, typer.Option(help="Relative tolerance: |a-b| <= atol + rtol*|a|.")] = CHECK.rtol,
    shape: Annotated[list[str] | None, typer.Option(help="NAME:1x3x224x224 for a dynamic input.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON only.")] = False,
) -> None:
    """Compare two models on the same inputs with Polygraphy; exit 1 if any output is out of tolerance."""
    result = check_models(
        original, other, inputs=inputs, iterations=iterations, seed=seed, atol=atol, rtol=rtol,
        shapes=shape or [], progress=not as_json,
    )  # fmt: skip
    if as_json:
        print(json.dumps(result.to_dict(), indent=2))
    else:
        console.print(render_comparison(result, f"{original.name} vs {other.name}"))
        console.print("[green]within tolerance[/]" if result.passed else "[red]outside tolerance[/]")
    if not result.passed:
        raise typer.Exit(1)


def _calib_request(
    source: Path | None,
    size: str | None,
    mean: str | None,
    std: str | None,
    samples: int | None,
    steps: str,
) -> Any:
    if source is None:
        if any(v is not None for v in (size, mean, std, samples)):
            raise UsageError("--calib-size/--calib-mean/--calib-std/--calib-samples need --calib")
        return None
    return api.CalibRequest(
        source,
        size=parse_size(size) if size is not None else None,
        mean=parse_floats(mean, "--calib-mean") if mean is not None else None,
        std=parse_floats(std, "--calib-std") if std is not None else None,
        limit=samples,
        options=CalibOptions(steps=tuple(s.strip() for s in steps.split(",") if s.strip())),
    )


@app.command()
@user_errors
def build(
    model: ModelArg,
    output: Annotated[Path, typer.Option("-o", "--output", help="Where to write the TensorRT plan.")],
    fp16: Annotated[bool, typer.Option(help="FP16 engine: the ONNX is converted to float16 first.")] = False,
    sparse_weights: Annotated[
        bool | None,
        typer.Option(
            "--sparse-weights/--no-sparse-weights",
            help="Let TensorRT use 2:4 sparse weights (default: when the model holds 2:4 layers).",
        ),
    ] = None,
    workspace: Annotated[int | None, typer.Option(help="Builder workspace limit in MiB.")] = None,
    save_onnx: Annotated[Path | None, typer.Option(help="Write the exact ONNX handed to TensorRT.")] = None,
    shape: Annotated[list[str] | None, typer.Option(help="NAME:1x3x224x224 for a dynamic input.")] = None,
) -> None:
    """Build a TensorRT plan (engine) from an ONNX model and check it against ONNX Runtime."""
    shapes = parse_shapes(shape or [])
    _build_and_print(model, output, fp16=fp16, save_onnx=save_onnx, shapes=shapes, sparse=sparse_weights,
                     workspace=workspace)  # fmt: skip


def _build_and_print(model: Path, plan: Path, *, fp16: bool, save_onnx: Path | None, shapes: Mapping,
                     sparse: bool | None = None, workspace: int | None = None) -> None:  # fmt: skip
    check_output_path(plan, [model])
    if save_onnx is not None:
        check_output_path(save_onnx, [model])
    result = build_engine(model, plan, fp16=fp16, sparse_weights=sparse, workspace_mib=workspace,
                          shapes=shapes or None, save_onnx=save_onnx)  # fmt: skip
    console.print(
        f"[green]built[/] {result.plan_path} with TensorRT {result.trt_version} (fp16={result.fp16}, "
        f"sparse weights={result.sparse})"
    )
    if result.comparison is not None:
        console.print(render_comparison(result.comparison, "TensorRT engine vs ONNX Runtime"))


def main() -> None:
    """The console script: the parser's own usage errors become one line and exit 2, like onnxprune's.

    Typer runs on click or, in newer releases, on a vendored copy of it; the two raise different classes,
    so usage errors are recognised by what they carry rather than by class.
    """
    command = typer.main.get_command(app)
    try:
        code = command.main(standalone_mode=False)
    except KeyboardInterrupt:
        errors.print("interrupted", markup=False)
        sys.exit(130)
    except Exception as exc:
        if type(exc).__name__ == "Abort":  # the parser's own Ctrl-C
            errors.print("interrupted", markup=False)
            sys.exit(130)
        if getattr(exc, "exit_code", None) != 2 or not hasattr(exc, "format_message"):
            raise
        message, context = exc.format_message(), getattr(exc, "ctx", None)
        if message:  # an empty one follows the help text printed for a bare `onnxprune`
            hint = f" (see '{context.command_path} --help')" if context is not None else ""
            errors.print(f"error: {message}{hint}", markup=False, highlight=False, soft_wrap=True)
        sys.exit(2)
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()
