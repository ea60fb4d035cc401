"""Sweep: prune one model to a ladder of targets and measure each point against the original.

The model is prepared once per analysis mode (``none`` walks without the BN estimates; ``bn`` with them,
and ``calib`` starts from it). Each point is what ``prune --target-KIND value`` writes: the same target
search (``targets.plan_to_target``) and the same pipeline (``pipeline.execute``: rewrite, isolation of
groups that break the model, calibration in mode calib). It is counted, timed (ONNX Runtime, interleaved
with the original) and compared with the original on the same feeds: cosine similarity and top-1 agreement
of the first output, and accuracy where labelled data is given (an ``.npz`` with ``x`` or the input's name,
and ``y``; never the calibration file). A point the model cannot reach is recorded with its reason; the
sweep goes on.
"""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import onnx

from onnxprune import files
from onnxprune.channels import Plan
from onnxprune.compensate.calibrate import CalibOptions
from onnxprune.compensate.rebuild import Moments
from onnxprune.errors import ModelLoadError, UsageError, first_line
from onnxprune.files import same_file
from onnxprune.inputs import _graph_inputs, make_inputs
from onnxprune.measure.bench import BenchOptions, bench
from onnxprune.measure.counter import Counts, count
from onnxprune.options import Compensate, PlanOptions, VerifyOptions, choice
from onnxprune.pipeline import Execution, Prepared, execute, prepare
from onnxprune.runtime import ort_session
from onnxprune.search.budget import Budget, SearchOptions, moments_for
from onnxprune.search.score import EvalCommand
from onnxprune.search.targets import Target, TargetError
from onnxprune.search.tasks import fingerprint, model_bytes
from onnxprune.search.workers import Workers
from onnxprune.verify import compare

LADDER = (0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2)


class CalibSource(Protocol):
    """Calibration data and how to fit on it (``api.CalibRequest`` is one)."""

    source: str | Path | None

    def load(self, model: onnx.ModelProto) -> dict[str, np.ndarray]: ...

    def calib_options(self) -> CalibOptions: ...


@dataclass
class SweepOptions:
    kind: str = "macs"  # macs | params (a latency ladder would time every bisection step)
    targets: Sequence[float] = LADDER
    plan: PlanOptions = field(default_factory=lambda: PlanOptions(ratio=0.0))  # the search sets the ratio
    shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)
    iterations: int = 4
    labels: str | Path | None = None
    bench: BenchOptions | None = field(
        default_factory=lambda: BenchOptions(runs=10, warmup=2, min_seconds=1.0)
    )
    # Compensation modes, one row each per target; None: bn, and calib too when calibration data is given.
    compensate: Sequence[str] | None = None
    calib: CalibSource | None = None
    search: SearchOptions = field(default_factory=SearchOptions)  # --eval-cmd, the sensitivity scan

    def modes(self) -> tuple[Compensate, ...]:
        if self.compensate is None:
            return (Compensate.BN, Compensate.CALIB) if self.calib is not None else (Compensate.BN,)
        # auto is what prune would choose: calib where calibration data is given.
        auto = Compensate.CALIB if self.calib is not None else Compensate.BN
        chosen = (choice(Compensate, m, "--compensate") for m in self.compensate)
        return tuple(auto if m == Compensate.AUTO else m for m in chosen)

    def check(self) -> None:

        if self.kind not in ("macs", "params"):
            raise UsageError(f"--kind must be macs or params, got {self.kind!r}")
        if not self.targets:
            raise UsageError("--targets needs at least one fraction")
        for value in self.targets:
            if not (math.isfinite(value) and 0.0 < value <= 1.0):
                raise UsageError(f"--targets are fractions of the original in (0, 1], got {value:g}")
            Target(self.kind, value).check()
        if self.iterations < 1:
            raise UsageError(f"--iterations must be at least 1, got {self.iterations}")
        self._check_modes()

    def _check_modes(self) -> None:
        modes = self.modes()
        if not modes or len(set(modes)) != len(modes):
            raise UsageError(f"--compensate takes a comma list of distinct modes, got {self.compensate}")
        if (Compensate.CALIB in modes) != (self.calib is not None):
            raise UsageError("--compensate calib and --calib go together: one needs the other")
        if self.calib is None:
            return
        self.calib.calib_options().check()
        source, labels = self.calib.source, self.labels
        if source is not None and labels is not None and same_file(source, labels):
            raise UsageError(
                f"--calib and --labels are the same file ({labels}): never calibrate on evaluation data"
            )


@dataclass
class _Sweep:
    """What every point shares: the model, one prepared analysis per compensation mode, the feeds and the
    data."""

    model: onnx.ModelProto
    options: SweepOptions
    before: Counts
    feeds: list
    labelled: tuple | None
    prepared: dict[str, Prepared]  # by the analysis' mode: none or bn (which calib starts from)
    samples: dict[str, np.ndarray] | None
    moments: dict[str, Mapping[str, Moments] | None]  # by compensation mode: calibration's statistics
    holdout: float
    allocations: dict[str, str] = field(default_factory=dict)  # by compensation mode: how it allocates

    def ready(self, mode: Compensate) -> Prepared:
        """The prepared model with ``mode``'s plan options (its analysis shared by modes that walk alike)."""
        plan = replace(self.options.plan, compensate=mode)
        return replace(self.prepared[plan.analysis_mode], options=plan)


def sweep(
    source: onnx.ModelProto | str | Path,
    options: SweepOptions,
    progress: Callable[[str], None] | None = None,
) -> dict:
    """Every point of the ladder of ``source`` (a model, or its file: read once the workers are reached)
    as a dict; ``points[0]`` is the original (target 1.0); then one point per target and compensation
    mode, in the order of ``options.modes()``. Each point's plan is chosen here
    (a sensitivity scan on the workers of ``options.search``), then the points are pruned and measured on
    those workers, and timed here one after another (a timing shares the machine with nothing).
    ``progress(what)`` is told once before the first point and then as each finishes."""

    options.check()
    with options.search.open_workers() as workers:  # a cluster that cannot be reached: before any work
        model = source if isinstance(source, onnx.ModelProto) else files.read_model(source)
        start = time.perf_counter()
        state = _prepare(model, options)
        setup = time.perf_counter() - start
        points = [_original(model, state.before, state.labelled, timed=options.bench is not None)]
        points[0]["score"] = _score(options, model)
        planned = _plans(state, workers)
        points += _run_points(state, planned, workers, progress or (lambda _what: None))
    modes = [str(m) for m in options.modes()]
    return {"kind": options.kind, "inputs": {k: list(v) for k, v in state.before.inputs.items()},
            "compensate": modes, "analysis_seconds": setup, "points": points}  # fmt: skip


def _prepare(model: onnx.ModelProto, options: SweepOptions) -> _Sweep:
    samples = options.calib.load(model) if options.calib is not None else None
    holdout = options.calib.calib_options().holdout if options.calib is not None else 0.1
    prepared: dict[str, Prepared] = {}
    for mode in options.modes():
        plan = replace(options.plan, compensate=mode)
        if plan.analysis_mode not in prepared:
            prepared[plan.analysis_mode] = prepare(model, plan, options.shapes, samples, holdout)
    before = next(iter(prepared.values())).before
    feeds = make_inputs(model, iterations=options.iterations, shapes=before.inputs)
    labelled = _labelled(options.labels, model) if options.labels is not None else None
    state = _Sweep(model, options, before, feeds, labelled, prepared, samples, {}, holdout)
    steps = options.calib.calib_options().steps if options.calib is not None else ()
    for mode in options.modes():
        data = options.search.data(samples, holdout)
        state.moments[str(mode)] = moments_for(state.ready(mode), state.ready(mode).options, data, steps)
    return state


def _plans(state: _Sweep, workers: Workers) -> list[tuple[float, Compensate, Plan | str]]:
    """Every point's plan (or why its target cannot be reached), in the ladder's order; a budget
    allocated by sensitivity scans once, on the workers, and serves every target. Each mode's allocation
    method is kept in ``state.allocations``."""
    options = state.options
    budgets = {}
    for mode in options.modes():
        data = options.search.data(state.samples, state.holdout, state.moments[str(mode)], workers)
        budgets[mode] = Budget(state.ready(mode), data)
        state.allocations[str(mode)] = str(budgets[mode].how)
    planned: list[tuple[float, Compensate, Plan | str]] = []
    for value in options.targets:
        for mode in options.modes():
            try:
                _, plan, _ = budgets[mode].plan(Target(options.kind, value), measured=False)
            except TargetError as err:
                # A point of a ladder: the sweep goes on, and writes no model anyway.
                planned.append((value, mode, first_line(err).removesuffix("; nothing written")))
                continue
            planned.append((value, mode, plan))
    return planned


def _run_points(
    state: _Sweep,
    planned: list[tuple[float, Compensate, Plan | str]],
    workers: Workers,
    progress: Callable[[str], None],
) -> list[dict[str, Any]]:
    """Each planned point pruned and measured on the workers, then timed here; unreachable ones as
    their reason."""
    tasks = [(value, mode, plan) for value, mode, plan in planned if isinstance(plan, Plan)]
    where = workers.describe()
    progress(f"on {where}")

    def done(index: int) -> None:
        value, mode, _ = tasks[index]
        progress(f"{state.options.kind} {value:g} ({mode}) on {where}")

    measured = workers.run(PointJob.of(state), tasks, done, local=functools.partial(_points_of, state))
    found = iter(measured)
    rows = []
    for value, mode, plan in planned:
        if not isinstance(plan, Plan):
            rows.append({"target": value, "compensate": str(mode), "error": plan})
            continue
        row, pruned = next(found)
        row["allocation"] = state.allocations[str(mode)]
        if state.options.bench is not None:
            start = time.perf_counter()
            row["latency_ratio"] = _latency_ratio(state.model, pruned, state.options.bench)
            row["seconds"] += time.perf_counter() - start
        rows.append(row)
    return rows


def _points_of(state: _Sweep) -> Callable[[tuple[float, Compensate, Plan]], Any]:
    """What a worker runs: a point's task (target, mode, plan) -> (row, pruned model)."""
    return lambda task: _point(state, *task)


def _point(
    state: _Sweep, value: float, mode: Compensate, plan: Plan
) -> tuple[dict[str, Any], onnx.ModelProto]:
    """The model ``prune --target-KIND value`` writes with ``mode`` (given its plan), measured against the
    original (not timed), and the pruned model."""
    start = time.perf_counter()
    ready = state.ready(mode)
    result = execute(ready, plan, _execution(state, mode))
    row = _measure(state, result.pruned, value, str(mode))
    row["fidelity"] = result.report.get("verdict", {}).get("fidelity")
    row["score"] = _score(state.options, result.pruned)
    row["seconds"] = time.perf_counter() - start
    return row, result.pruned


@dataclass(frozen=True)
class PointJob:
    """What a worker prunes and measures sweep points from: the model's bytes and the shared state (the
    worker prepares the model again; its analysis is deterministic, so the plans' group ids match)."""

    model: bytes
    options: SweepOptions
    feeds: list
    labelled: tuple | None
    samples: dict[str, np.ndarray] | None
    moments: dict[str, Mapping[str, Moments] | None]
    holdout: float
    groups: dict[str, tuple[tuple[int, int, bool], ...]]

    @classmethod
    def of(cls, state: _Sweep) -> PointJob:
        groups = {mode: fingerprint(p) for mode, p in state.prepared.items()}
        body = model_bytes(next(iter(state.prepared.values())))
        shared = (state.feeds, state.labelled, state.samples, state.moments, state.holdout)
        return cls(body, state.options, *shared, groups)

    def build(self) -> Callable[[tuple[float, Compensate, Plan]], tuple[dict[str, Any], onnx.ModelProto]]:
        model = onnx.load_from_string(self.model)
        prepared = {}
        for mode in self.options.modes():
            plan = replace(self.options.plan, compensate=mode)
            if plan.analysis_mode not in prepared:
                found = prepare(model, plan, self.options.shapes, self.samples, self.holdout)
                if fingerprint(found) != self.groups[plan.analysis_mode]:
                    raise RuntimeError("a worker's analysis of the model differs from the sweep's")
                prepared[plan.analysis_mode] = found
        before = next(iter(prepared.values())).before
        state = _Sweep(model, self.options, before, self.feeds, self.labelled, prepared, self.samples,
                       self.moments, self.holdout)  # fmt: skip
        return _points_of(state)


def _original(model: onnx.ModelProto, before: Any, labelled: tuple | None, timed: bool) -> dict[str, Any]:
    accuracy = _accuracy(model, labelled) if labelled is not None else None
    return {"target": 1.0, "compensate": None, "reached": 1.0, "macs": before.macs, "params": before.params,
            "cosine": 1.0, "top1_agreement": 1.0, "accuracy": accuracy,
            "latency_ratio": 1.0 if timed else None, "seconds": 0.0}  # fmt: skip


def _score(options: SweepOptions, model: onnx.ModelProto) -> float | None:
    """The user's --eval-cmd score of a point's model, where one is given."""
    command = options.search.eval_cmd
    return EvalCommand(command).score(model) if command is not None else None


def _execution(state: _Sweep, mode: Compensate) -> Execution:
    """As ``prune --target-* --no-verify`` runs the pipeline: checked by one ONNX Runtime run, fitted on
    the calibration data in mode calib; its verdict on the held-out samples is recorded, never refused."""
    checks = VerifyOptions(enabled=False, shapes=state.options.shapes, min_fidelity=-1.0)
    calib = state.options.calib.calib_options() if state.options.calib is not None else None
    return Execution(checks, state.samples, calib, moments=state.moments[str(mode)])


def _measure(state: _Sweep, pruned: onnx.ModelProto, value: float, mode: str) -> dict[str, Any]:
    options, before = state.options, state.before
    after = count(pruned, options.shapes)
    return {
        "target": value,
        "compensate": mode,
        "reached": (after.macs / before.macs) if options.kind == "macs" else after.params / before.params,
        "macs": after.macs,
        "params": after.params,
        **_fidelity(state.model, pruned, state.feeds),
        "accuracy": _accuracy(pruned, state.labelled) if state.labelled is not None else None,
        "latency_ratio": None,
    }


def _fidelity(model: onnx.ModelProto, pruned: onnx.ModelProto, feeds: list) -> dict[str, Any]:

    first = compare(model, pruned, feeds=feeds).outputs[0]
    return {"cosine": first.cosine, "top1_agreement": first.top1_agreement}


def _latency_ratio(model: onnx.ModelProto, pruned: onnx.ModelProto, options: BenchOptions) -> float:

    original, candidate = bench([model, pruned], options)
    return candidate.median_ms / original.median_ms


def _labelled(path: str | Path, model: onnx.ModelProto) -> tuple[str, np.ndarray, np.ndarray]:
    """(input name, x, y) from an .npz holding ``y`` and ``x`` (or the model's single input by name)."""

    specs = _graph_inputs(model)
    if len(specs) != 1:
        raise UsageError("--labels evaluates single-input models only")
    name = specs[0].name
    try:
        with np.load(path, allow_pickle=False) as data:
            x = data[name] if name in data.files else data["x"]
            y = data["y"]
    except (OSError, ValueError, KeyError) as err:
        raise ModelLoadError(
            f"{path}: not an .npz with 'x' (or {name!r}) and 'y' ({first_line(err)})"
        ) from None
    if len(x) != len(y):
        raise ModelLoadError(f"{path}: {len(x)} samples in x but {len(y)} labels in y")
    return name, x.astype(specs[0].dtype, copy=False), y.reshape(-1).astype(np.int64)


def _accuracy(
    model: onnx.ModelProto, labelled: tuple[str, np.ndarray, np.ndarray], batch: int = 500
) -> float:

    name, x, y = labelled
    session = ort_session(model)
    output = session.get_outputs()[0].name
    right = 0
    for lo in range(0, len(x), batch):
        scores = session.run([output], {name: x[lo : lo + batch]})[0]
        right += int(np.sum(np.argmax(scores.reshape(len(scores), -1), axis=1) == y[lo : lo + batch]))
    return right / max(len(y), 1)
