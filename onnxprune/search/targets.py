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

from onnxprune.channels import Analysis, ChannelGroup, Plan
from onnxprune.errors import OnnxPruneError, UsageError
from onnxprune.measure.bench import BenchOptions, bench
from onnxprune.measure.counter import Counts
from onnxprune.options import PlanOptions
from onnxprune.pipeline.prepare import Prepared
from onnxprune.pipeline.rewrite import rewritten
from onnxprune.planning import Draft, make_plan
from onnxprune.progress import steps

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
    basis: str = ""  # how the plan was found, for people: "global ratio 0.293", "sensitivity allocation"

    def value(self, kind: str) -> float:
        found = {"params": self.params, "macs": self.macs, "latency": self.latency}[kind]
        return float(found if found is not None else math.nan)

    def to_dict(self, target: Target) -> dict[str, Any]:
        reached = self.value(target.kind)
        within = abs(reached / target.value - 1) <= TOLERANCE
        return {"kind": target.kind, "asked": target.value, "reached": reached, "ratio": self.ratio,
                "params": self.params, "macs": self.macs, "latency": self.latency,
                "within_tolerance": within, "steps": self.steps,
                "basis": self.basis or f"ratio {self.ratio:.3f}"}  # fmt: skip


def search(
    analysis: Analysis,
    options: PlanOptions,
    kind: str,
    value: float,
    estimate: Callable[[Plan], tuple[float, float]],
) -> tuple[Reached, Plan]:
    """The plan of ``analysis`` for the ratio whose estimated ``kind`` fraction is nearest ``value``.

    ``estimate(plan)`` gives (params, MACs) fractions of a plan.
    """
    cache: dict[float, tuple[Reached, Plan]] = {}

    def at(ratio: float) -> Reached:
        if ratio not in cache:
            plan = make_plan(analysis.groups, replace(options, ratio=ratio), analysis)
            params, macs = estimate(plan)
            cache[ratio] = (Reached(ratio, params, macs, steps=len(cache) + 1), plan)
        return cache[ratio][0]

    def settle(ratio: float) -> tuple[Reached, Plan]:
        at(ratio)
        reached, plan = cache[ratio]
        return replace(reached, steps=len(cache)), plan

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
    found, plan = settle(min((lo, hi), key=lambda r: abs(at(r).value(kind) - value)))
    if abs(found.value(kind) / value - 1) > TOLERANCE:
        found, plan = _refine(analysis, options, kind, value, estimate, found, plan)
    return found, plan


def _refine(
    analysis: Analysis,
    options: PlanOptions,
    kind: str,
    value: float,
    estimate: Callable[[Plan], tuple[float, float]],
    found: Reached,
    plan: Plan,
) -> tuple[Reached, Plan]:
    """Where one ratio for all cannot land near enough (few, small groups), move single groups by one
    --round-to step at a time, each time the one that brings the estimate nearest the target."""
    draft = Draft(analysis.groups, {gid: list(d) for gid, d in plan.declined.items()})
    draft.kept = dict(plan.kept)

    def current(kept: dict[int, np.ndarray]) -> float:
        return dict(zip(("params", "macs"), estimate(plan.with_kept(kept)), strict=True))[kind]

    groups = [g for g in analysis.groups if draft.prunable(g) and g.score is not None and g.tie < 0]
    now = current(draft.kept)
    for _ in range(sum(g.size for g in groups) // max(options.width_step, 1) + 1):
        if abs(now / value - 1) <= TOLERANCE:
            break
        best: tuple[float, int, np.ndarray] | None = None
        for group in groups:
            keep = _step(draft, group, options, up=now < value)
            if keep is None:
                continue
            moved = draft.top(group, keep)
            candidate = (current({**draft.kept, group.id: moved}), group.id, moved)
            if best is None or abs(candidate[0] - value) < abs(best[0] - value):
                best = candidate
        if best is None or abs(best[0] - value) >= abs(now - value):
            break
        now, draft.kept[best[1]] = best[0], best[2]
    refined = draft.freeze()
    params, macs = estimate(refined)
    return Reached(found.ratio, params, macs, steps=found.steps), refined


def _step(draft: Draft, group: ChannelGroup, options: PlanOptions, up: bool) -> int | None:
    """The kept count one --round-to step up or down from the group's, or None where it cannot move."""
    kept = draft.kept_count(group)
    floor = max(min(options.min_keep, group.size), draft.must_count(group), 1)
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
    plan_for_macs: Callable[[float], tuple[Reached, Plan]],
    value: float,
    measure: Callable[[Plan], float],
    progress: Callable[[str], None] | None = None,
) -> tuple[Reached, Plan]:
    """Plan for a latency fraction: ``plan_for_macs(fraction)`` plans for a MACs fraction, ``measure(plan)``
    times a plan (a fraction of the original's latency); ``progress(step)`` is told each timing round as it
    starts."""
    macs_goal = value
    best: tuple[Reached, Plan] | None = None
    for step in range(1, LATENCY_STEPS + 1):
        if progress is not None:
            progress(f"round {step} of at most {LATENCY_STEPS}, MACs {macs_goal:.3f}")
        found, plan = plan_for_macs(macs_goal)
        found.latency, found.steps = measure(plan), step
        if best is None or abs(found.latency - value) < abs(best[0].latency - value):  # type: ignore[operator]
            best = (found, plan)
        if abs(found.latency / value - 1) <= TOLERANCE or found.ratio >= MAX_RATIO:
            break
        macs_goal = min(1.0, macs_goal * value / max(found.latency, 1e-6))
    assert best is not None
    return best


def plan_to_target(
    prepared: Prepared,
    options: PlanOptions,
    target: Target,
    bench_options: BenchOptions | None = None,
    progress: bool = False,
) -> tuple[Reached, Plan]:
    """The plan nearest ``target`` by one ratio (global or per group, as ``options.scope`` says); a latency
    target times rewritten copies with ONNX Runtime."""
    estimate = prepared.estimator.fractions
    options = replace(options, ratio=0.0, threshold=None, replay=None)

    def plan_for(kind: str, value: float) -> tuple[Reached, Plan]:
        reached, plan = search(prepared.analysis, options, kind, value, estimate)
        scope = "one ratio per group" if options.scope == "layer" else "global ratio"
        return replace(reached, basis=f"{scope} {reached.ratio:.3f}"), plan

    return to_target(prepared, target, plan_for, bench_options, progress)


def to_target(
    prepared: Prepared,
    target: Target,
    plan_for: Callable[[str, float], tuple[Reached, Plan]],
    bench_options: BenchOptions | None = None,
    progress: bool = False,
) -> tuple[Reached, Plan]:
    """``plan_for(kind, fraction)`` for a MACs or params target; for latency, corrected by timing the
    plans it makes (rewritten copies, ONNX Runtime, interleaved with the original; ``progress``: with a
    progress line on stderr where it is a terminal)."""
    if target.kind != "latency":
        return plan_for(target.kind, target.value)
    timing = bench_options or BenchOptions(runs=20, warmup=3, shapes=prepared.before.inputs)

    def measure(plan: Plan) -> float:
        pruned = rewritten(prepared, plan)
        original, candidate = bench([prepared.model, pruned], timing)
        return candidate.median_ms / original.median_ms

    with steps(f"searching latency {target.value:g}", total=LATENCY_STEPS, enabled=progress) as say:
        return search_latency(lambda macs: plan_for("macs", macs), target.value, measure, say)


def target_record(reached: Reached, target: Target, before: Counts, after: Counts) -> dict[str, Any]:
    """The report's ``target``: asked, and reached as counted on the pruned model (latency: as timed).

    Every target must land within TOLERANCE, else TargetError: nothing is written.
    """
    reached.params = after.params / max(before.params, 1)
    reached.macs = after.macs / max(before.macs, 1)
    record = reached.to_dict(target)
    if target.kind == "latency" and not record["within_tolerance"]:
        raise TargetError(
            f"cannot land within {TOLERANCE:.0%} of latency {target.value:g}: the nearest plan timed "
            f"{record['reached']:.4g} of the original (MACs {reached.macs:.3f}); timings move on a busy "
            "machine: run again, or give --target-macs; nothing written"
        )
    if target.kind != "latency" and not record["within_tolerance"]:
        raise TargetError(
            f"cannot land within {TOLERANCE:.0%} of {target.kind} {target.value:g}: the nearest plan reaches "
            f"{record['reached']:.4g} (kept counts move in steps of --round-to; try --round-to 1 or "
            "--scope layer); nothing written"
        )
    return record
