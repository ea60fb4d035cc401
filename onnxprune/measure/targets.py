"""Targets: prune to a fraction of the original's MACs, parameters or measured latency.

MACs and parameters: bisection over the global ratio (a percentile of the scores, i.e. a global threshold),
or over one ratio for every group with ``--scope layer``; each step plans and estimates (``estimate.py``),
no rewrite. The plan nearest the target wins. Latency: each step rewrites and times the model with ONNX
Runtime (``bench.py``), starting from the MACs fraction equal to the target and correcting it by the measured
ratio, since latency is roughly proportional to MACs but not exactly.

A target is reached when the result lands within ``TOLERANCE`` (relative) of it. A target below what the
model can reach at all (everything prunable at its minimum, the rest declined) is a TargetError (exit 1).
"""

from __future__ import annotations

import importlib.util
import math
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from onnxprune.channels.analysis import Analysis
from onnxprune.errors import OnnxPruneError, UsageError
from onnxprune.graph import to_model
from onnxprune.measure.bench import BenchOptions, bench
from onnxprune.measure.counter import Counts
from onnxprune.measure.estimate import Estimator
from onnxprune.plan import PlanOptions, _top, make_plan
from onnxprune.progress import steps
from onnxprune.rewrite import apply_plan

KINDS = ("macs", "params", "latency")
TOLERANCE = 0.02
MAX_RATIO = 0.999
LATENCY_STEPS = 5


class TargetError(OnnxPruneError):
    """The model cannot reach the target: it says what it reached, and why no further."""


@dataclass(frozen=True)
class Target:
    kind: str
    value: float

    def check(self) -> None:
        if self.kind not in KINDS:
            raise UsageError(f"target must be one of {', '.join(KINDS)}, got {self.kind!r}")
        if not (math.isfinite(self.value) and 0.0 < self.value <= 1.0):
            raise UsageError(
                f"--target-{self.kind} is a fraction of the original in (0, 1], got {self.value}"
            )
        if self.kind == "latency" and importlib.util.find_spec("onnxruntime") is None:
            raise UsageError("--target-latency needs ONNX Runtime to measure: pip install 'onnxprune[cpu]'")


def target_options(options: PlanOptions, target: Target) -> PlanOptions:
    """The plan options a target search starts from: a target replaces --threshold and --replay, and the
    search sets the ratio (whatever ``options.ratio`` holds is only where it starts)."""
    target.check()
    if options.threshold is not None or options.replay is not None:
        raise UsageError("give a --target-* or one of --ratio, --threshold and --replay, not both")
    return replace(options, ratio=0.0)


@dataclass
class Reached:
    """Where a search landed: the ratio it chose and the fractions it estimated (or measured)."""

    ratio: float
    params: float
    macs: float
    latency: float | None = None
    steps: int = 0

    def value(self, kind: str) -> float:
        found = {"params": self.params, "macs": self.macs, "latency": self.latency}[kind]
        return float(found if found is not None else math.nan)

    def to_dict(self, target: Target) -> dict[str, Any]:
        reached = self.value(target.kind)
        within = abs(reached / target.value - 1) <= TOLERANCE
        return {"kind": target.kind, "asked": target.value, "reached": reached, "ratio": self.ratio,
                "params": self.params, "macs": self.macs, "latency": self.latency,
                "within_tolerance": within, "steps": self.steps}  # fmt: skip


def search(
    analysis: Analysis,
    options: PlanOptions,
    kind: str,
    value: float,
    estimate: Callable[[], tuple[float, float]],
) -> Reached:
    """Plan the groups of ``analysis`` for the ratio whose estimated ``kind`` fraction is nearest ``value``.

    Leaves that plan in the groups. ``estimate`` gives (params, MACs) fractions of the current plan.
    """
    # Planning keeps the best channel of a Split piece it would empty (must_keep); one step's must not
    # carry into the next, so every step starts from what the analysis said.
    saved = [(g, None if g.must_keep is None else g.must_keep.copy()) for g in analysis.groups]

    def plan(opts: PlanOptions) -> None:
        for group, must in saved:
            group.must_keep = None if must is None else must.copy()
        make_plan(analysis.groups, opts, analysis)

    first = replace(options, ratio=0.0)
    plan(first)  # applies --exclude once
    quiet = replace(first, exclude=())
    cache: dict[float, Reached] = {}

    def at(ratio: float) -> Reached:
        if ratio not in cache:
            plan(replace(quiet, ratio=ratio))
            params, macs = estimate()
            cache[ratio] = Reached(ratio, params, macs, steps=len(cache) + 1)
        return cache[ratio]

    def settle(ratio: float) -> Reached:
        plan(replace(quiet, ratio=ratio))  # leaves this plan in the groups
        return replace(at(ratio), steps=len(cache))

    lo, hi = 0.0, MAX_RATIO
    if at(lo).value(kind) <= value:
        return settle(lo)
    floor = at(hi)
    if floor.value(kind) > value * (1 + TOLERANCE):
        raise TargetError(_unreachable(analysis, kind, value, floor.value(kind)))
    if floor.value(kind) > value:
        return settle(hi)
    for _ in range(40):  # lo stays above the target, hi at or below it
        mid = (lo + hi) / 2
        if at(mid).value(kind) > value:
            lo = mid
        else:
            hi = mid
        if hi - lo < 1e-4 or abs(at(hi).value(kind) / value - 1) < TOLERANCE / 4:
            break
    found = settle(min((lo, hi), key=lambda r: abs(at(r).value(kind) - value)))
    if abs(found.value(kind) / value - 1) > TOLERANCE:
        found = _refine(analysis, options, kind, value, estimate, found)
    return found


def _refine(
    analysis: Analysis,
    options: PlanOptions,
    kind: str,
    value: float,
    estimate: Callable[[], tuple[float, float]],
    found: Reached,
) -> Reached:
    """Where one ratio for all cannot land near enough (few, small groups), move single groups by one
    --round-to step at a time, each time the one that brings the estimate nearest the target."""

    def current() -> float:
        return dict(zip(("params", "macs"), estimate(), strict=True))[kind]

    groups = [g for g in analysis.groups if g.prunable and g.score is not None and g.tie < 0]
    now = current()
    for _ in range(sum(g.size for g in groups) // max(options.width_step, 1) + 1):
        if abs(now / value - 1) <= TOLERANCE:
            break
        best: tuple[float, Any, np.ndarray] | None = None
        for group in groups:
            keep = _step(group, options, up=now < value)
            if keep is None:
                continue
            old, group.keep = group.keep, _top(group, keep)
            candidate = (current(), group, group.keep)
            group.keep = old
            if best is None or abs(candidate[0] - value) < abs(best[0] - value):
                best = candidate
        if best is None or abs(best[0] - value) >= abs(now - value):
            break
        now, best[1].keep = best[0], best[2]
    params, macs = estimate()
    return Reached(found.ratio, params, macs, steps=found.steps)


def _step(group: Any, options: PlanOptions, up: bool) -> int | None:
    """The kept count one --round-to step up or down from the group's, or None where it cannot move."""
    kept = group.kept
    floor = max(
        min(options.min_keep, group.size), int(group.must_keep.sum()) if group.must_keep is not None else 0, 1
    )
    new = min(kept + options.width_step, group.size) if up else max(kept - options.width_step, floor)
    return None if new == kept else new


def _unreachable(analysis: Analysis, kind: str, value: float, floor: float) -> str:
    groups = [g for g in analysis.groups if g.nodes]
    declined = sum(not g.prunable for g in groups)
    return (
        f"cannot reach {kind} {value:g} of the original: at most down to {floor:.4g} "
        f"(every prunable group at its minimum by --min-keep/--round-to; {declined} of {len(groups)} groups "
        "declined, see inspect --explain); nothing written"
    )


def search_latency(
    analysis: Analysis,
    options: PlanOptions,
    value: float,
    estimate: Callable[[], tuple[float, float]],
    measure: Callable[[], float],
    progress: Callable[[str], None] | None = None,
) -> Reached:
    """Plan for a latency fraction: ``measure`` times the current plan (a fraction of the original's);
    ``progress(step)`` is told each timing round as it starts."""
    macs_goal, best = value, None
    for step in range(1, LATENCY_STEPS + 1):
        if progress is not None:
            progress(f"round {step} of at most {LATENCY_STEPS}, MACs {macs_goal:.3f}")
        found = search(analysis, options, "macs", macs_goal, estimate)
        found.latency, found.steps = measure(), step
        if best is None or abs(found.latency - value) < abs(best.latency - value):  # type: ignore[operator]
            best = found
        if abs(found.latency / value - 1) <= TOLERANCE or found.ratio >= MAX_RATIO:
            break
        macs_goal = min(1.0, macs_goal * value / max(found.latency, 1e-6))
    assert best is not None
    if best is not found:
        best = replace(search(analysis, options, "macs", best.macs, estimate), latency=best.latency)
    return best


def plan_to_target(
    graph: gs.Graph,
    analysis: Analysis,
    options: PlanOptions,
    target: Target,
    counts: Counts,
    model: onnx.ModelProto,
    bench_options: BenchOptions | None = None,
    progress: bool = False,
) -> Reached:
    """Leave in the analysis' groups the plan nearest ``target``; latency is timed on rewritten copies
    (``progress``: with a progress line on stderr where it is a terminal)."""

    estimator = Estimator(graph, analysis, counts)
    if target.kind != "latency":
        return search(analysis, options, target.kind, target.value, estimator.fractions)

    timing = bench_options or BenchOptions(runs=20, warmup=3, shapes=counts.inputs)

    def measure() -> float:
        pruned = to_model(apply_plan(graph.copy(), analysis), model)
        original, candidate = bench([model, pruned], timing)
        return candidate.median_ms / original.median_ms

    with steps(f"searching latency {target.value:g}", total=LATENCY_STEPS, enabled=progress) as say:
        return search_latency(analysis, options, target.value, estimator.fractions, measure, say)


def target_record(reached: Reached, target: Target, before: Counts, after: Counts) -> dict[str, Any]:
    """The report's ``target``: asked, and reached as counted on the pruned model (latency: as timed).

    MACs and params must land within TOLERANCE (else TargetError: nothing is written); a latency is a
    measurement on a busy machine, so missing it by more is reported, not refused.
    """
    reached.params = after.params / max(before.params, 1)
    reached.macs = after.macs / max(before.macs, 1)
    record = reached.to_dict(target)
    if target.kind != "latency" and not record["within_tolerance"]:
        raise TargetError(
            f"cannot land within {TOLERANCE:.0%} of {target.kind} {target.value:g}: the nearest plan reaches "
            f"{record['reached']:.4g} (kept counts move in steps of --round-to; try --round-to 1 or "
            "--scope layer); nothing written"
        )
    return record
