"""``onnxprune bench`` (latency of one or two models) and ``onnxprune sweep`` (a ladder of targets from
one analysis)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from onnxprune import api
from onnxprune.cli.shared import (
    CalibOpt,
    CalibSamplesOpt,
    CalibStepsOpt,
    ModelArg,
    RayOpt,
    RoundToOpt,
    WorkersOpt,
    calib_request,
    console,
    user_errors,
)
from onnxprune.errors import UsageError
from onnxprune.inputs import parse_shapes
from onnxprune.measure.bench import BenchOptions, bench_record
from onnxprune.options import Criterion, Scope, choice
from onnxprune.plots import check_plot_path, plot_sweep
from onnxprune.progress import steps
from onnxprune.report import bench_table, sweep_table
from onnxprune.search.sweep import SweepOptions, sweep


@user_errors
def bench_command(
    model: ModelArg,
    other: Annotated[Path | None, typer.Argument(help="A second model (e.g. the pruned one).")] = None,
    runs: Annotated[int, typer.Option(help="Timed runs per model (at least).")] = 50,
    min_seconds: Annotated[float, typer.Option(help="Keep timing until this much time has passed.")] = 1.0,
    warmup: Annotated[int, typer.Option(help="Untimed runs first.")] = 5,
    threads: Annotated[int | None, typer.Option(help="ONNX Runtime intra-op threads (default: all).")] = None,
    backend: Annotated[
        str, typer.Option(help="cpu | cuda | tensorrt (ORT providers) | trt (Polygraphy)")
    ] = "cpu",
    shape: Annotated[list[str] | None, typer.Option(help="NAME:8x3x224x224: batch and dynamic dims.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON only.")] = False,
) -> None:
    """Latency of one or two models: median and p90 of N runs after a warm-up, side by side with the ratio."""

    options = BenchOptions(runs, warmup, threads, backend, parse_shapes(shape or []), min_seconds=min_seconds)
    options.check()
    with steps("timing", enabled=not as_json) as step:
        record = bench_record([model] + ([other] if other is not None else []), options, progress=step)
    if as_json:
        print(json.dumps(record, indent=2))
    else:
        console.print(bench_table(record))


@user_errors
def sweep_command(
    model: ModelArg,
    targets: Annotated[
        str, typer.Option(help="Comma-separated fractions of the original.")
    ] = "0.9,0.8,0.7,0.6,0.5,0.4,0.3,0.2",
    kind: Annotated[str, typer.Option(help="What the targets are fractions of: macs | params.")] = "macs",
    labels: Annotated[Path | None, typer.Option(help=".npz with x and y: accuracy of every point.")] = None,
    compensate: Annotated[
        str | None,
        typer.Option(help="Modes, comma list of none, bn, calib (default: bn; and calib with --calib)."),
    ] = None,
    calib: CalibOpt = None,
    calib_samples: CalibSamplesOpt = None,
    calib_steps: CalibStepsOpt = "rebuild,refit",
    plot: Annotated[
        Path | None, typer.Option(help="Draw fidelity vs MACs (and latency) into this PNG.")
    ] = None,
    bench: Annotated[
        bool, typer.Option("--bench/--no-bench", help="Time every point on ONNX Runtime.")
    ] = True,
    runs: Annotated[int, typer.Option(help="Timed runs per point.")] = 10,
    round_to: RoundToOpt = "auto",
    min_keep: Annotated[int, typer.Option(help="Never keep fewer channels in a group.")] = 8,
    scope: Annotated[str, typer.Option(help="global | layer")] = "global",
    criterion: Annotated[str, typer.Option(help="auto | gamma | l1 | l2")] = "auto",
    exclude: Annotated[list[str] | None, typer.Option(help="Node-name glob left untouched.")] = None,
    iterations: Annotated[int, typer.Option(help="Random inputs to compare on.")] = 4,
    shape: Annotated[list[str] | None, typer.Option(help="NAME:1x3x224x224 for a dynamic input.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON only.")] = False,
    workers: WorkersOpt = None,
    ray: RayOpt = None,
) -> None:
    """Prune to a ladder of targets with one analysis: MACs, params, latency, fidelity (and accuracy) each."""

    try:
        ladder = [float(t) for t in targets.split(",") if t.strip()]
    except ValueError:
        raise UsageError(f"--targets must be comma-separated numbers, got {targets!r}") from None
    shapes = parse_shapes(shape or [])
    plan_options = api.PlanOptions(
        ratio=0.0,  # the search sets it
        round_to=round_to,
        min_keep=min_keep,
        exclude=tuple(exclude or ()),
        scope=choice(Scope, scope, "--scope"),
        criterion=choice(Criterion, criterion, "--criterion"),
    )
    timing = BenchOptions(runs=runs, warmup=2, shapes=shapes, min_seconds=1.0) if bench else None
    modes = [m.strip() for m in compensate.split(",") if m.strip()] if compensate is not None else None
    request = calib_request(calib, None, None, None, calib_samples, calib_steps)
    search = api.SearchOptions(workers=workers, ray=ray)
    options = SweepOptions(
        kind, ladder, plan_options, shapes, iterations, labels, timing, modes, request, search=search
    )
    options.check()
    timing.check() if timing is not None else None
    if plot is not None:
        check_plot_path(plot, [model])
    total = len(ladder) * len(options.modes())
    with steps("sweeping", total=total, enabled=not as_json) as step:
        result = sweep(model, options, progress=step)
    if plot is not None:
        plot_sweep(result, plot, model.name)
    if as_json:
        print(json.dumps(result, indent=2))
        return
    console.print(sweep_table(result, model.name))
