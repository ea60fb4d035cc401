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
    EvalCmdOpt,
    InputsOpt,
    IterationsOpt,
    MinFidelityOpt,
    ModelArg,
    RayOpt,
    RoundToOpt,
    SensitivitySamplesOpt,
    WorkersOpt,
    calib_request,
    choices,
    console,
    in_panel,
    one_target,
    user_errors,
    warn,
)
from onnxprune.cli.summary import print_summary
from onnxprune.engine import BiasMapForm, BuildOptions, EngineBackend, build_engine, measure_engine
from onnxprune.engine.backends import require
from onnxprune.engine.build import check_shapes, with_batch_one
from onnxprune.engine.report import layers_path
from onnxprune.errors import OnnxPruneError, UsageError
from onnxprune.files import check_output_path, save_json
from onnxprune.inputs import parse_shapes
from onnxprune.measure.bench import BenchOptions, bench_record
from onnxprune.options import (
    MIN_FIDELITY,
    Allocate,
    Compensate,
    Criterion,
    Device,
    PlanOptions,
    Scope,
    choice,
)
from onnxprune.planning import load_plan
from onnxprune.plots import check_plot_path, plot_kept
from onnxprune.progress import steps
from onnxprune.report import (
    bench_table,
    calibration_table,
    compensation_table,
    groups_table,
    prune_table,
    target_line,
)
from onnxprune.search.sensitivity import SAMPLES as SENSITIVITY_SAMPLES
from onnxprune.search.sensitivity import SensitivityOptions
from onnxprune.sparsity.layers import MIN_CHANNELS

# The library's default (options.PlanOptions), measured on the MNIST models (README, benchmarks/accuracy.py).
DEFAULT_MAX_GROUP_RATIO = PlanOptions.max_group_ratio


# --help groups the options by what they decide, as Polygraphy's tools do.
PLAN, COMPENSATION, VERIFICATION, OUTPUTS, DEPLOY = (
    "What to remove",
    "Compensation and calibration",
    "Verification",
    "Output and report",
    "Timing, TensorRT and 2:4",
)


@user_errors
def prune(
    model: ModelArg,
    output: Annotated[
        Path, typer.Option("-o", "--output", help="Where to write the pruned model.", rich_help_panel=OUTPUTS)
    ],
    ratio: Annotated[
        float | None,
        typer.Option(help="Fraction of prunable channels to remove, 0 <= R < 1.", rich_help_panel=PLAN),
    ] = None,
    threshold: Annotated[
        float | None, typer.Option(help="Remove channels whose importance is <= T.", rich_help_panel=PLAN)
    ] = None,
    target_macs: Annotated[
        float | None, typer.Option(help="Prune to this fraction of the MACs.", rich_help_panel=PLAN)
    ] = None,
    target_params: Annotated[
        float | None, typer.Option(help="Prune to this fraction of the params.", rich_help_panel=PLAN)
    ] = None,
    target_latency: Annotated[
        float | None,
        typer.Option(help="Prune to this fraction of the ONNX Runtime latency here.", rich_help_panel=PLAN),
    ] = None,
    replay: Annotated[
        Path | None,
        typer.Option(help="Apply the kept channels of an earlier --report.", rich_help_panel=PLAN),
    ] = None,
    round_to: Annotated[str, in_panel(RoundToOpt, PLAN)] = "auto",
    device: Annotated[
        str,
        choices(
            Device,
            "What the model is for: the widths --round-to auto rounds to (tensorrt: multiples of 8 on any "
            "machine; cpu: ONNX Runtime's channel block here).",
            panel=PLAN,
            flag="--for",
        ),
    ] = Device.TENSORRT,
    min_keep: Annotated[
        int, typer.Option(help="Never keep fewer channels in a group.", rich_help_panel=PLAN)
    ] = 8,
    scope: Annotated[
        str,
        choices(Scope, "global: one percentile over all groups; layer: per group.", panel=PLAN),
    ] = Scope.GLOBAL,
    exclude: Annotated[
        list[str] | None,
        typer.Option(help="Node-name glob whose channels stay untouched.", rich_help_panel=PLAN),
    ] = None,
    criterion: Annotated[
        str,
        choices(
            Criterion,
            "How channels are ranked (activation and rebuild need --calib; auto is rebuild where --calib "
            "rebuilds and the budget is allocated by sensitivity).",
            panel=PLAN,
        ),
    ] = Criterion.AUTO,
    max_group_ratio: Annotated[
        float,
        typer.Option(help="With --ratio: remove at most this share of any one group.", rich_help_panel=PLAN),
    ] = DEFAULT_MAX_GROUP_RATIO,
    allocate: Annotated[
        str,
        choices(
            Allocate,
            "With a --target-*: how its budget is shared among the groups (auto: by measured sensitivity "
            "with --calib or --eval-cmd; without data, global for a model trained for slimming, else layer).",
            panel=PLAN,
        ),
    ] = Allocate.AUTO,
    eval_cmd: Annotated[str | None, in_panel(EvalCmdOpt, PLAN)] = None,
    sensitivity_samples: Annotated[int, in_panel(SensitivitySamplesOpt, PLAN)] = SENSITIVITY_SAMPLES,
    workers: Annotated[int | None, in_panel(WorkersOpt, PLAN)] = None,
    ray: Annotated[str | None, in_panel(RayOpt, PLAN)] = None,
    compensate: Annotated[
        str | None,
        choices(
            Compensate,
            "What removed channels leave behind, folded into biases "
            "(default: bn, data-free; calib with --calib).",
            panel=COMPENSATION,
        ),
    ] = None,
    calib: Annotated[Path | None, in_panel(CalibOpt, COMPENSATION)] = None,
    calib_size: Annotated[
        str | None, typer.Option(help="Images: resize to HxW.", rich_help_panel=COMPENSATION)
    ] = None,
    calib_mean: Annotated[
        str | None, typer.Option(help="Images: mean per channel, m or m,m,m.", rich_help_panel=COMPENSATION)
    ] = None,
    calib_std: Annotated[
        str | None, typer.Option(help="Images: std per channel, s or s,s,s.", rich_help_panel=COMPENSATION)
    ] = None,
    calib_samples: Annotated[int | None, in_panel(CalibSamplesOpt, COMPENSATION)] = None,
    calib_steps: Annotated[str, in_panel(CalibStepsOpt, COMPENSATION)] = "rebuild,refit",
    finetune_minutes: Annotated[
        float | None,
        typer.Option(
            help="Then distil from the original on the --calib data for at most N minutes (the train extra).",
            rich_help_panel=COMPENSATION,
        ),
    ] = None,
    verify: Annotated[
        bool,
        typer.Option(
            "--verify/--no-verify", help="Check exactness and output change.", rich_help_panel=VERIFICATION
        ),
    ] = True,
    inputs: Annotated[Path | None, in_panel(InputsOpt, VERIFICATION)] = None,
    iterations: Annotated[int | None, in_panel(IterationsOpt, VERIFICATION)] = None,
    seed: Annotated[int, typer.Option(help="Seed of the random inputs.", rich_help_panel=VERIFICATION)] = 0,
    min_fidelity: Annotated[float, in_panel(MinFidelityOpt, VERIFICATION)] = MIN_FIDELITY,
    shape: Annotated[
        list[str] | None,
        typer.Option(help="NAME:1x3x224x224 for a dynamic input.", rich_help_panel=VERIFICATION),
    ] = None,
    report: Annotated[
        Path | None, typer.Option(help="Write the full report as JSON here.", rich_help_panel=OUTPUTS)
    ] = None,
    verbose: Annotated[
        bool,
        typer.Option(
            "-v",
            "--verbose",
            help="Print every table (groups, compensation and calibration per layer), not the summary.",
            rich_help_panel=OUTPUTS,
        ),
    ] = False,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the report as JSON only.", rich_help_panel=OUTPUTS)
    ] = False,
    external_data: Annotated[
        bool | None,
        typer.Option(
            "--external-data/--no-external-data", help="Weights in a side file.", rich_help_panel=OUTPUTS
        ),
    ] = None,
    plot: Annotated[
        Path | None, typer.Option(help="Draw kept channels per layer into this PNG.", rich_help_panel=OUTPUTS)
    ] = None,
    bench: Annotated[
        bool,
        typer.Option("--bench", help="Time original and pruned on ONNX Runtime.", rich_help_panel=DEPLOY),
    ] = False,
    plan: Annotated[
        Path | None,
        typer.Option(
            help="Also build an engine plan of the pruned model (and measure the original's).",
            rich_help_panel=DEPLOY,
        ),
    ] = None,
    fp16: Annotated[
        bool, typer.Option(help="With --plan: an FP16 engine (from an FP16 ONNX).", rich_help_panel=DEPLOY)
    ] = False,
    save_onnx: Annotated[
        Path | None,
        typer.Option(help="With --plan: write the ONNX handed to the builder.", rich_help_panel=DEPLOY),
    ] = None,
    backend: Annotated[str, in_panel(BackendOpt, DEPLOY)] = EngineBackend.AUTO,
    bias_maps: Annotated[str, in_panel(BiasMapsOpt, DEPLOY)] = BiasMapForm.AUTO,
    sparsify: Annotated[
        bool,
        typer.Option(
            "--sparsify",
            help="Then make eligible layers 2:4 (SparseGPT with --calib, else magnitude).",
            rich_help_panel=DEPLOY,
        ),
    ] = False,
    min_channels: Annotated[
        int, typer.Option(help="With --sparsify: the 2:4 size floor.", rich_help_panel=DEPLOY)
    ] = MIN_CHANNELS,
) -> None:
    """Remove the least important channels and write a smaller, validated, verified model."""
    layers = layers_path(plan) if plan is not None else None
    layers = layers_path(plan) if plan is not None else None
    _distinct_outputs(
        model,
        {"-o": output, "--report": report, "--plan": plan, "--save-onnx": save_onnx, "--plot": plot,
         "the plan's layer record": layers},
    )  # fmt: skip
    if plot is not None:
        check_plot_path(plot, [model])
    engine_options = _engine_options(model, plan, backend, bias_maps, fp16, save_onnx, shape)
    target = one_target(target_macs, target_params, target_latency)
    if target is not None:
        if ratio is not None or threshold is not None or replay is not None:
            raise UsageError("give a --target-* or one of --ratio, --threshold and --replay, not both")
        ratio = 0.0  # where the search starts
    options = api.PlanOptions(
        ratio=ratio,
        threshold=threshold,
        replay=load_plan(replay) if replay is not None else None,
        round_to=round_to,
        device=choice(Device, device, "--for"),
        min_keep=min_keep,
        scope=choice(Scope, scope, "--scope"),
        exclude=tuple(exclude or ()),
        criterion=choice(Criterion, criterion, "--criterion"),
        compensate=choice(Compensate, compensate or Compensate.AUTO, "--compensate"),
        max_group_ratio=max_group_ratio,
        allocate=choice(Allocate, allocate, "--allocate"),
    )
    search = api.SearchOptions(
        eval_cmd=eval_cmd,
        sensitivity=SensitivityOptions(samples=sensitivity_samples),
        progress=not as_json,
        workers=workers,
        ray=ray,
    )
    checks = api.VerifyOptions(
        enabled=verify,
        inputs=inputs,
        iterations=iterations,
        seed=seed,
        shapes=parse_shapes(shape or []),
        progress=not as_json,
        min_fidelity=min_fidelity,
    )
    if min_channels != MIN_CHANNELS and not sparsify:
        raise UsageError("--min-channels only applies with --sparsify")
    sparse = api.SparsifyOptions(min_channels=min_channels) if sparsify else None
    request = calib_request(calib, calib_size, calib_mean, calib_std, calib_samples, calib_steps)
    title = f"{model.name} → {output.name}"
    printer = functools.partial(_print_report, verbose=verbose)
    tables = _Tables(title, output, render=not (as_json or bench), printer=printer)
    extras = _Extras(
        tables, model, output, plan=plan, engine=engine_options, save_onnx=save_onnx, shapes=checks.shapes,
        bench=bench, plot=plot, report=report, progress=not as_json,
    )  # fmt: skip
    result = api.prune(
        model, output, options, verify=checks, external_data=external_data, target=target, sparsify=sparse,
        calib=request, before_save=extras if extras.wanted else None, on_pruned=tables, search=search,
        finetune_minutes=finetune_minutes,
    )  # fmt: skip
    warn(result.report.get("warnings", []) + result.report.get("verify", {}).get("warnings", []))
    if as_json:
        print(json.dumps(result.report, indent=2))
        return
    if tables.result is result and tables.text:
        console.file.write(tables.text)
    else:
        printer(result.report, title, output)
    params = result.report["params"]["before"], result.report["params"]["after"]
    for engine, original in extras.built:
        if isinstance(original, str):
            print_build(engine)
            warn([original])
        else:
            print_build(engine, (model, params[0], original.to_dict()), params[1])


class _Extras:
    """What is written beside the model (a TensorRT plan, the plot, the report) and the timing: done on the
    staged copy of the pruned model before it is published (``api.prune``'s ``before_save``), so that a
    failure in any of them leaves no model behind (a full disk under ``--report``, a plan TensorRT
    refuses)."""

    def __init__(self, tables: _Tables, model: Path, output: Path, **asked: Any) -> None:
        self.tables, self.model, self.output, self.asked = tables, model, output, asked
        self.built: list[Any] = []
        self.wanted = any(asked[k] for k in ("plan", "bench", "plot", "report"))

    def __call__(self, staged: Path) -> None:
        asked, result = self.asked, self.tables.result
        assert result is not None, "on_pruned runs before before_save"
        if asked["plan"] is not None:
            _build_into(self.built, self.model, asked["plan"], asked["engine"], asked["save_onnx"], staged)
            engine, original = self.built[-1]
            params = result.report["params"]["before"], result.report["params"]["after"]
            result.report["engine"] = _engine_record(engine, original, params)
        if asked["bench"]:
            timing = BenchOptions(shapes=asked["shapes"], min_seconds=2.0)
            with steps("timing", enabled=asked["progress"]) as step:
                result.report["bench"] = bench_record([self.model, staged], timing, progress=step)
        if asked["plot"] is not None:
            plot_kept(result.report, asked["plot"], f"{self.model.name} → {self.output.name}")
        if asked["report"] is not None:
            save_json(result.report, asked["report"])


class _Tables:
    """Keeps the latest result (``api.prune``'s ``on_pruned``) and, with ``render``, renders what will be
    printed as soon as it is known: a prune without verification renders it while ONNX Runtime checks the
    model in its thread (time that was spent after the wait); it is printed once the file
    is written."""

    def __init__(self, title: str, output: Path, render: bool, printer: Any) -> None:
        self.title, self.output, self.render, self.printer = title, output, render, printer
        self.result: api.PruneResult | None = None
        self.text = ""

    def __call__(self, result: api.PruneResult) -> None:
        self.result, self.text = result, ""
        if self.render:
            with console.capture() as captured:
                self.printer(result.report, self.title, self.output)
            self.text = captured.get()


def _print_report(report: dict[str, Any], title: str, output: Path, verbose: bool = False) -> None:
    if not verbose:
        print_summary(report, title, output)
        return
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


def _engine_options(
    model: Path,
    plan: Path | None,
    backend: str,
    bias_maps: str,
    fp16: bool,
    save_onnx: Path | None,
    shape: list[str] | None,
) -> BuildOptions | None:
    """The build's options, checked before any work: a missing backend or a dynamic input without a build
    shape is one line, exit 1, nothing written."""
    if plan is None:
        if (fp16, save_onnx, backend, bias_maps) != (False, None, "auto", "auto"):
            raise UsageError(
                "--fp16, --save-onnx, --backend and --bias-maps apply to --plan; give --plan too"
            )
        return None
    options = BuildOptions(
        backend=choice(EngineBackend, backend, "--backend"),
        fp16=fp16,
        bias_maps=choice(BiasMapForm, bias_maps, "--bias-maps"),
        profiles=shape_profiles(shape),
    )
    require(options.backend)
    options, batch_one = with_batch_one(model, options)
    if batch_one:
        warn([f"a dynamic batch built for batch 1 ({', '.join(batch_one)}): give --shape for another"])
    check_shapes(model, options)
    return options


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
