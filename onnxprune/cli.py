"""The command line: each command parses options, calls one library function and prints with rich.

No graph logic lives here. Library errors (``OnnxPruneError``) become one line on stderr and exit 1 (2 for
bad usage); anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable, Mapping
from enum import Enum, StrEnum
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from onnxprune import __version__, api
from onnxprune.errors import CapabilityError, OnnxPruneError, UsageError
from onnxprune.files import check_output_path, save_json
from onnxprune.inputs import parse_shapes
from onnxprune.options import Criterion, Scope, choice
from onnxprune.plan import load_plan
from onnxprune.report import group_summary, groups_table, inspect_table, prune_table
from onnxprune.tensorrt import build_engine
from onnxprune.text import number
from onnxprune.tolerances import CHECK, parse_tolerances
from onnxprune.verify import NOISE_FACTOR, check_models, render_comparison

app = typer.Typer(
    name="onnxprune",
    help="Offline channel pruning for exported ONNX CNNs: exact, verified, TensorRT-ready.",
    no_args_is_help=True,
    add_completion=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
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


ModelArg = Annotated[Path, typer.Argument(help="ONNX model file.", show_default=False)]


class ToleranceRule(StrEnum):
    sum = "sum"
    either = "either"


InputsOpt = Annotated[
    Path | None,
    typer.Option(
        "--inputs",
        "--load-inputs",
        help="Data to verify on: .npz keyed by input name, or Polygraphy JSON (polygraphy --save-inputs).",
    ),
]
IterationsOpt = Annotated[
    int | None,
    typer.Option(help="Feeds: N random ones (default 1), or N samples split off an --inputs file."),
]


def _version(value: bool) -> None:
    if value:
        console.print(f"onnxprune {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    """Offline channel pruning for exported ONNX CNNs: exact, verified, TensorRT-ready."""


@app.command()
@user_errors
def inspect(
    model: ModelArg,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON only.")] = False,
    explain: Annotated[bool, typer.Option("--explain", help="List every decline with its node.")] = False,
    criterion: Annotated[str, _choices(Criterion, "How channels are ranked.")] = Criterion.AUTO,
) -> None:
    """Show every channel group: its nodes, |gamma| spread, share of MACs, and prunable or why not."""
    found = api.inspect(model, criterion)
    groups = [group_summary(g, found.macs) for g in found.groups if g.nodes]
    if as_json:
        payload = {
            "model": str(model),
            "params": found.params,
            "macs": found.macs,
            "conv_bn_pairs": found.pairs,
            "hints": found.hints,
            "groups": groups,
        }
        print(json.dumps(payload, indent=2))
        return
    shown = groups if explain else [g for g in groups if g["prunable"]]
    title = f"{model.name}: {sum(g['prunable'] for g in groups)} prunable of {len(groups)} channel groups"
    console.print(inspect_table(shown, title))
    for hint in found.hints:
        console.print(f"note: {hint}", highlight=False, markup=False, soft_wrap=True)
    convs = sum(p["producer_op"] == "Conv" for p in found.pairs)
    others = len(found.pairs) - convs
    console.print(f"{convs} Conv→BatchNormalization pairs, {others} BatchNormalizations after other ops")
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
    criterion: Annotated[str, _choices(Criterion, "How channels are ranked.")] = Criterion.AUTO,
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
    plan: Annotated[Path | None, typer.Option(help="Also build a TensorRT plan of the pruned model.")] = None,
    fp16: Annotated[bool, typer.Option(help="With --plan: an FP16 engine (from an FP16 ONNX).")] = False,
    save_onnx: Annotated[
        Path | None, typer.Option(help="With --plan: write the ONNX handed to TensorRT.")
    ] = None,
) -> None:
    """Remove the least important channels and write a smaller, validated, verified model."""
    _distinct_outputs(model, {"-o": output, "--report": report, "--plan": plan, "--save-onnx": save_onnx})
    options = api.PlanOptions(
        ratio=ratio,
        threshold=threshold,
        replay=load_plan(replay) if replay is not None else None,
        round_to=round_to,
        min_keep=min_keep,
        scope=choice(Scope, scope, "--scope"),
        exclude=tuple(exclude or ()),
        criterion=choice(Criterion, criterion, "--criterion"),
    )
    checks = api.VerifyOptions(
        enabled=verify,
        inputs=inputs,
        iterations=iterations,
        seed=seed,
        shapes=parse_shapes(shape or []),
        progress=not as_json,
    )
    built: list[Any] = []
    # The plan is built from a staged copy before the .onnx is published: a failed build writes nothing.
    stage = None
    if plan is not None:
        stage = functools.partial(
            _build_into, built, plan, output, fp16=fp16, save_onnx=save_onnx, shapes=checks.shapes
        )
    result = api.prune(model, output, options, verify=checks, external_data=external_data, before_save=stage)
    if report is not None:
        save_json(result.report, report)
    _warn(result.report.get("warnings", []) + result.report.get("verify", {}).get("warnings", []))
    if as_json:
        print(json.dumps(result.report, indent=2))
        return
    console.print(groups_table(result.report))
    console.print(prune_table(result.report, f"{model.name} → {output.name}"))
    if "verify" in result.report:
        _print_verification(result.report["verify"])
    for engine in built:
        _print_build(engine)


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


def _build_into(built: list[Any], plan: Path, output: Path, staged: Path, **options: Any) -> None:
    save_onnx, shapes = options.pop("save_onnx"), options.pop("shapes")
    try:
        engine = build_engine(staged, plan, fp16=options["fp16"], save_onnx=save_onnx, shapes=shapes or None)
    except CapabilityError as err:
        # The staged copy is gone once this fails: name the file the user will have.
        message = str(err).replace(str(staged), str(output))
        raise CapabilityError(
            f"{message}; {output} not written either (prune without --plan for it)"
        ) from None
    built.append(engine)


def _print_verification(verification: dict[str, Any]) -> None:
    exact, change = verification["exact"], verification["change"]
    console.print(f"inputs fed: {_fed_line(verification['inputs'])}", highlight=False, markup=False)
    console.print(_exact_line(exact), highlight=False)
    sensitivity = _sensitivity_line(exact)
    if sensitivity:
        console.print(sensitivity, highlight=False, markup=False)
    table = Table(title="change from the original (what pruning did to the outputs)")
    for column in ("output", "max abs", "max rel", "cosine", "top-1 agree"):
        table.add_column(column, justify="right")
    for o in change["outputs"]:
        top1 = "-" if o["top1_agreement"] is None else f"{o['top1_agreement']:.1%}"
        table.add_row(
            o["name"], number(o["max_abs_err"]), number(o["max_rel_err"]), number(o["cosine"], ".5f"), top1
        )
    console.print(table)


def _fed_line(inputs: dict[str, Any]) -> str:
    shapes = ", ".join(
        f"{name} [{inputs['dtypes'][name]}, {'x'.join(map(str, dims))}]"
        for name, dims in inputs["shapes"].items()
    )
    return f"{shapes} ({inputs['description']})"


def _exact_line(exact: dict[str, Any]) -> str:
    """The statistic actually tested, for the output closest to its bound."""
    worst = max(exact["outputs"], key=lambda o: (o["max_abs_err"] or 0.0) / max(o["allowed"] or 0.0, 1e-300))
    return (
        f"[green]exact[/]: matches its masked reference; worst output {escape(worst['name'])!r}: "
        f"max|a-b| {_num(worst['max_abs_err'], '.2g')} <= {_num(worst['allowed'], '.2g')}, the larger of "
        f"{exact['atol']:g} + {exact['rtol']:g} * max|a| and {NOISE_FACTOR:g} x the float32 noise floor "
        f"({_num(worst['noise'], '.2g')}); relative error {_num(worst['max_rel_err'], '.2g')}"
    )


def _sensitivity_line(exact: dict[str, Any]) -> str:
    measured = [o for o in exact["outputs"] if o.get("sensitivity") is not None]
    if not measured:
        return ""
    least = min(measured, key=lambda o: o["sensitivity"])
    ratio = max((o["error_per_change"] or 0.0) for o in measured)
    return (
        f"input sensitivity: outputs move {least['sensitivity']:.2g} (relative, least: {least['name']!r}) "
        f"between two different inputs; the surgery error is {ratio:.2g} of that movement"
    )


def _warn(lines: list[str]) -> None:
    for line in lines:
        errors.print(f"[yellow]warning:[/] {escape(line)}", highlight=False, soft_wrap=True)


def _num(value: float | None, spec: str = ".3g") -> str:
    return "-" if value is None else format(value, spec)


@app.command()
@user_errors
def check(
    original: ModelArg,
    other: Annotated[Path, typer.Argument(help="The model to compare with ORIGINAL.", show_default=False)],
    inputs: InputsOpt = None,
    iterations: IterationsOpt = None,
    seed: Annotated[int, typer.Option(help="Seed of the random inputs.")] = 0,
    atol: Annotated[
        list[str] | None,
        typer.Option(
            help=f"Absolute tolerance (default {CHECK.atol:g}), or OUTPUT:VALUE for one output; repeatable."
        ),
    ] = None,
    rtol: Annotated[
        list[str] | None,
        typer.Option(
            help=f"Relative tolerance (default {CHECK.rtol:g}), or OUTPUT:VALUE for one output; repeatable."
        ),
    ] = None,
    tolerance_rule: Annotated[
        str,
        _choices(
            ToleranceRule,
            "sum: pass if |a-b| <= atol + rtol*|a| (numpy.isclose); "
            "either: fail only where both atol and rtol are exceeded (Polygraphy's rule).",
        ),
    ] = ToleranceRule.sum,
    shape: Annotated[list[str] | None, typer.Option(help="NAME:1x3x224x224 for a dynamic input.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON only.")] = False,
) -> None:
    """Compare two models on the same inputs with Polygraphy; exit 1 if any output is out of tolerance."""
    tolerances = parse_tolerances(atol or [], rtol or [], str(tolerance_rule))
    result = check_models(
        original, other, inputs=inputs, iterations=iterations, seed=seed, tolerances=tolerances,
        shapes=shape or [], progress=not as_json,
    )  # fmt: skip
    if as_json:
        print(json.dumps(result.to_dict(), indent=2))
    else:
        console.print(f"inputs fed: {_fed_line(result.inputs)}", highlight=False, markup=False)
        console.print(render_comparison(result, f"{original.name} vs {other.name}"))
        console.print("[green]within tolerance[/]" if result.passed else "[red]outside tolerance[/]")
    _warn(result.notes)
    if not result.passed:
        raise typer.Exit(1)


@app.command()
@user_errors
def build(
    model: ModelArg,
    output: Annotated[Path, typer.Option("-o", "--output", help="Where to write the TensorRT plan.")],
    fp16: Annotated[bool, typer.Option(help="FP16 engine: the ONNX is converted to float16 first.")] = False,
    sparse_weights: Annotated[bool, typer.Option(help="Let TensorRT use 2:4 sparse weights.")] = False,
    workspace: Annotated[int | None, typer.Option(help="Builder workspace limit in MiB.")] = None,
    save_onnx: Annotated[Path | None, typer.Option(help="Write the exact ONNX handed to TensorRT.")] = None,
    shape: Annotated[list[str] | None, typer.Option(help="NAME:1x3x224x224 for a dynamic input.")] = None,
) -> None:
    """Build a TensorRT plan (engine) from an ONNX model and check it against ONNX Runtime."""
    shapes = parse_shapes(shape or [])
    _build_and_print(model, output, fp16=fp16, save_onnx=save_onnx, shapes=shapes, sparse=sparse_weights,
                     workspace=workspace)  # fmt: skip


def _build_and_print(model: Path, plan: Path, *, fp16: bool, save_onnx: Path | None, shapes: Mapping,
                     sparse: bool = False, workspace: int | None = None) -> None:  # fmt: skip
    check_output_path(plan, [model])
    if save_onnx is not None:
        check_output_path(save_onnx, [model])
    result = build_engine(model, plan, fp16=fp16, sparse_weights=sparse, workspace_mib=workspace,
                          shapes=shapes or None, save_onnx=save_onnx)  # fmt: skip
    _print_build(result)


def _print_build(result: Any) -> None:
    console.print(
        f"[green]built[/] {result.plan_path} with TensorRT {result.trt_version} (fp16={result.fp16})"
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
