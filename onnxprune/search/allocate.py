"""Allocation: every unit's width chosen to meet a MACs or parameter budget at the least measured damage.

A multiple-choice knapsack over the sensitivity curves. Each unit's damage between its measured widths is
interpolated (and never taken to fall as channels go); what cutting it saves is its share of the budget
when it alone is cut (the estimator's count, linear in its kept channels). Every unit's steps of one
``--round-to`` are ordered by damage per saving, on the lower convex hull of its curve (so a unit's steps
come in order and a cheap step behind a costly one is not skipped), all units merged. A prefix of that
order is an allocation; the shortest prefix whose plan (rounded and aligned as any plan, counted exactly)
meets the target is chosen by bisection. Units the chosen prefix never touches are kept whole: the report
names them.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from onnxprune.channels import Plan
from onnxprune.options import PlanOptions
from onnxprune.pipeline import Prepared
from onnxprune.search.sensitivity import Curve, Sensitivity, Unit, plan_for
from onnxprune.search.targets import TOLERANCE, Reached, TargetError


@dataclass(frozen=True)
class Step:
    """One unit from ``kept + step`` channels down to ``kept``, at ``rate`` damage per unit of saving."""

    unit: int  # index into the curves
    kept: int
    rate: float
    damage: float  # the unit's damage at ``kept`` (interpolated)


def allocate(
    prepared: Prepared, sensitivity: Sensitivity, options: PlanOptions, kind: str, value: float
) -> tuple[Reached, Plan, dict[str, Any]]:
    """The plan nearest ``value`` (a fraction of the original's MACs or params) at the least damage."""
    estimate = prepared.estimator.fractions
    curves = sensitivity.curves
    savings = [_saving(prepared, options, c.unit, kind) for c in curves]
    steps = sorted(
        (s for i, c in enumerate(curves) for s in _steps(i, c, options, savings[i])),
        key=lambda s: (s.rate, s.unit, -s.kept),
    )

    def counted(kept: dict[int, int]) -> tuple[float, Plan]:
        counts = {gid: kept[i] for i, c in enumerate(curves) for gid in c.unit.groups}
        plan = plan_for(prepared, options, counts)
        params, macs = estimate(plan)
        return (macs if kind == "macs" else params), plan

    def at(prefix: int) -> tuple[float, Plan, dict[int, int]]:
        kept = {i: c.unit.size for i, c in enumerate(curves)}
        for step in steps[:prefix]:
            kept[step.unit] = step.kept
        return (*counted(kept), kept)

    lo, hi = 0, len(steps)
    floor = at(hi)[0]
    if floor > value * (1 + TOLERANCE):
        raise TargetError(_unreachable(kind, value, floor, len(curves)))
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if at(mid)[0] > value:
            lo = mid
        else:
            hi = mid
    best = min((lo, hi), key=lambda p: abs(at(p)[0] - value))
    reached_value, plan, kept = at(best)
    if abs(reached_value / value - 1) > TOLERANCE:
        reached_value, plan, kept = _refine(curves, options, kept, reached_value, value, counted)
    params, macs = estimate(plan)
    record = _record(curves, kept, steps[:best], kind, value)
    return Reached(float(best), params, macs, steps=best, basis="sensitivity allocation"), plan, record


def _refine(
    curves: list[Curve],
    options: PlanOptions,
    kept: dict[int, int],
    now: float,
    value: float,
    counted: Any,
) -> tuple[float, Plan, dict[int, int]]:
    """Where a prefix of steps cannot land near enough (few, small groups), move one unit by one step at a
    time toward the target: of the moves that bring it nearer, the one that adds least damage (or, going
    back up, gives most back)."""
    damage = [_damage_at(c) for c in curves]
    plan = counted(kept)[1]
    for _ in range(sum(c.unit.size for c in curves)):
        if abs(now / value - 1) <= TOLERANCE:
            break
        down = now > value
        best: tuple[float, int, int, float, Plan] | None = None
        for i, curve in enumerate(curves):
            step = _unit_step(curve.unit, options)
            moved = max(kept[i] - step, min(curve.points)) if down else min(kept[i] + step, curve.unit.size)
            if moved == kept[i]:
                continue
            found, candidate = counted({**kept, i: moved})
            if abs(found - value) >= abs(now - value):
                continue
            cost = damage[i](moved) - damage[i](kept[i])
            if best is None or cost < best[0]:
                best = (cost, i, moved, found, candidate)
        if best is None:
            break
        _, i, moved, now, plan = best
        kept = {**kept, i: moved}
    return now, plan, kept


def _unit_step(unit: Unit, options: PlanOptions) -> int:
    """A unit's kept count moves by the width step (a tie's chunks so that their total stays aligned)."""
    if len(unit.groups) > 1:
        return options.aligned_to // math.gcd(options.aligned_to, len(unit.groups))
    return options.width_step


def _saving(prepared: Prepared, options: PlanOptions, unit: Unit, kind: str) -> float:
    """What cutting the unit alone to one channel saves, as a fraction of the original's MACs or params."""
    plan = plan_for(prepared, options, unit.counts(1))
    params, macs = prepared.estimator.fractions(plan)
    return max(1.0 - (macs if kind == "macs" else params), 0.0)


def _damage_at(curve: Curve) -> Any:
    """Damage as a function of kept channels: measured points interpolated, never falling as more go."""
    kept = np.array(sorted(curve.points), dtype=np.float64)  # ascending
    damage = np.array([curve.points[int(k)] for k in kept], dtype=np.float64)
    # Walking from the full unit down, damage only grows: a running max from the top.
    damage = np.maximum.accumulate(damage[::-1])[::-1]
    return lambda k: float(np.interp(k, kept, damage))


def _steps(index: int, curve: Curve, options: PlanOptions, saving: float) -> list[Step]:
    """The unit's steps down its grid of kept counts, each with the slope of its convex-hull segment."""
    unit = curve.unit
    step = _unit_step(unit, options)
    lowest = min(curve.points)
    grid = list(range(unit.size, lowest - 1, -step))
    if grid[-1] != lowest:
        grid.append(lowest)
    damage = _damage_at(curve)
    per_channel = saving / max(unit.size - 1, 1)
    points = [((unit.size - k) * per_channel, damage(k), k) for k in grid]
    found = []
    for (c0, d0, k0), (c1, d1, k1) in itertools.pairwise(_lower_hull(points)):
        rate = (d1 - d0) / max(c1 - c0, 1e-15)
        found += [Step(index, k, rate, damage(k)) for _, _, k in points if k1 <= k < k0]
    return found


def _lower_hull(points: list[tuple[float, float, int]]) -> list[tuple[float, float, int]]:
    """The lower convex hull of (saving, damage, kept) points sorted by saving (Andrew's monotone chain)."""
    hull: list[tuple[float, float, int]] = []
    for p in points:
        while len(hull) >= 2 and _cross(hull[-2], hull[-1], p) <= 0:
            hull.pop()
        hull.append(p)
    return hull


def _cross(o: tuple, a: tuple, b: tuple) -> float:
    return (a[0] - o[0]) * (b[1] - o[1]) - (a[1] - o[1]) * (b[0] - o[0])


def _record(curves: list[Curve], kept: dict[int, int], taken: list[Step], kind: str, value: float) -> dict:
    damage = _damage_at
    per_unit = [
        {
            "groups": list(c.unit.groups),
            "label": c.unit.label,
            "channels": c.unit.size,
            "kept": kept[i],
            "predicted_damage": damage(c)(kept[i]),
        }  # fmt: skip
        for i, c in enumerate(curves)
    ]
    whole = [u["label"] for u in per_unit if u["kept"] == u["channels"]]
    return {
        "method": "sensitivity",
        "kind": kind,
        "asked": value,
        "units": per_unit,
        "kept_whole": whole,
        "predicted_damage": float(sum(u["predicted_damage"] for u in per_unit)),
        "steps_taken": len(taken),
    }


def _unreachable(kind: str, value: float, floor: float, units: int) -> str:
    return (
        f"cannot reach {kind} {value:g} of the original: at most down to {floor:.4g} with every one of the "
        f"{units} prunable units at its smallest measured width; nothing written"
    )
