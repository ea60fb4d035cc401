"""Sensitivity: how much the model's outputs degrade when one group alone is cut to each of a few widths.

A *unit* is what is cut as one: a channel group, or the tied chunks of one grouped Conv. Each unit is cut
alone to each width of ``SensitivityOptions.fractions`` of its channels (rounded as the plan options say:
aligned, never below ``--min-keep``), with the channels its score ranks lowest going, and the plan is
evaluated end to end on samples (evaluate.PlanEvaluator: the compensation the prune would use, no
rewrite). The result is a curve per unit, kept channels -> damage (verify.fidelity: mean KL divergence for
class scores and sequences, relative squared error for maps), which the allocation trades against MACs.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from onnxprune.channels import ChannelGroup, Plan
from onnxprune.errors import UsageError
from onnxprune.options import PlanOptions
from onnxprune.pipeline import Prepared
from onnxprune.planning import make_plan
from onnxprune.planning.make import exclude_declines

FRACTIONS = (0.875, 0.75, 0.5, 0.25)
SAMPLES = 32


@dataclass(frozen=True)
class SensitivityOptions:
    """``fractions``: of each unit's channels kept, one evaluation each; ``samples``: how many calibration
    samples each evaluation runs (the first ones of the fitting part)."""

    fractions: Sequence[float] = FRACTIONS
    samples: int = SAMPLES

    def __post_init__(self) -> None:
        if not self.fractions or not all(0.0 < f < 1.0 for f in self.fractions):
            raise UsageError(f"sensitivity fractions must be in (0, 1), got {list(self.fractions)}")
        if self.samples < 1:
            raise UsageError(f"--sensitivity-samples must be at least 1, got {self.samples}")


@dataclass(frozen=True)
class Unit:
    """Groups cut as one (a group, or a grouped Conv's tied chunks), each keeping the same count."""

    groups: tuple[int, ...]
    size: int  # channels of each member
    nodes: tuple[str, ...]
    producers: tuple[str, ...]

    @property
    def label(self) -> str:
        names = self.producers or self.nodes
        return names[0] + (f" (+{len(names) - 1})" if len(names) > 1 else "")

    def counts(self, kept: int) -> dict[int, int]:
        return {gid: kept for gid in self.groups}


@dataclass
class Curve:
    """A unit's measured damage at each kept count (``size`` -> 0, the unpruned model)."""

    unit: Unit
    points: dict[int, float] = field(default_factory=dict)
    fidelity: dict[int, float] = field(default_factory=dict)  # the worst output's, at each kept count

    def to_dict(self) -> dict[str, Any]:
        return {
            "groups": list(self.unit.groups),
            "label": self.unit.label,
            "nodes": list(self.unit.nodes),
            "channels": self.unit.size,
            "points": [
                {"kept": k, "damage": self.points[k], "fidelity": self.fidelity.get(k)}
                for k in sorted(self.points, reverse=True)
            ],
        }


@dataclass
class Sensitivity:
    """Every unit's curve, and what they were measured on."""

    curves: list[Curve]
    on: str
    mode: str
    seconds: float = 0.0
    evaluations: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {"on": self.on, "compensate": self.mode, "seconds": round(self.seconds, 2),
                "evaluations": self.evaluations, "units": [c.to_dict() for c in self.curves]}  # fmt: skip


def units(prepared: Prepared, options: PlanOptions) -> list[Unit]:
    """The prunable units of the prepared model (what ``--exclude`` names left out)."""
    excluded = exclude_declines(prepared.groups, options.exclude)
    free = [g for g in prepared.groups if g.prunable and g.score is not None and g.id not in excluded]
    found: list[Unit] = []
    ties: dict[int, list[ChannelGroup]] = {}
    for group in free:
        if group.tie >= 0:
            ties.setdefault(group.tie, []).append(group)
        else:
            found.append(_unit([group]))
    found += [_unit(members) for members in ties.values() if len({g.size for g in members}) == 1]
    return sorted(found, key=lambda u: u.groups[0])


def _unit(members: list[ChannelGroup]) -> Unit:
    return Unit(
        tuple(g.id for g in members),
        members[0].size,
        tuple(n for g in members for n in g.nodes),
        tuple(p for g in members for p in g.producers),
    )


def widths(unit: Unit, options: PlanOptions, fractions: Sequence[float]) -> list[int]:
    """The kept counts to measure: each fraction of the unit's channels rounded up to the width step (a
    tie's total to the promised alignment), at least ``--min-keep``, fewer than it has; largest first."""
    step = options.width_step
    if len(unit.groups) > 1:
        step = options.aligned_to // math.gcd(options.aligned_to, len(unit.groups))
    floor = max(1, math.ceil(min(options.min_keep, unit.size * len(unit.groups)) / len(unit.groups)))
    found = set()
    for fraction in fractions:
        kept = max(floor, math.ceil(unit.size * fraction / step) * step)
        if kept < unit.size:
            found.add(kept)
    return sorted(found, reverse=True)


def plan_for(prepared: Prepared, options: PlanOptions, counts: dict[int, int]) -> Plan:
    """The plan keeping ``counts`` channels (group id -> count; others whole), aligned as any plan is."""
    return make_plan(prepared.groups, options, prepared.analysis, counts=counts)


def measure_sensitivity(
    prepared: Prepared,
    evaluate: Callable[[Sequence[Plan], Callable[[int], Any]], list[tuple[float, float]]],
    options: PlanOptions,
    sensitivity: SensitivityOptions,
    on: str,
    progress: Callable[[str], None] | None = None,
) -> Sensitivity:
    """Every unit cut alone to each of its widths. ``evaluate(plans, done)`` -> (damage, worst output
    fidelity) of each plan, in order, calling ``done(index)`` as each finishes (on workers, in any order);
    ``progress(what)`` is told once before the first and then as each evaluation finishes."""
    began = time.perf_counter()
    curves = {unit: Curve(unit, {unit.size: 0.0}, {unit.size: 1.0}) for unit in units(prepared, options)}
    todo = jobs(prepared, options, sensitivity)
    say = progress if progress is not None else (lambda _what: None)
    say("")

    def done(index: int) -> None:
        unit, kept = todo[index]
        say(f"{unit.label} at {kept} of {unit.size}")

    plans = [plan_for(prepared, options, unit.counts(kept)) for unit, kept in todo]
    for (unit, kept), (found, worst) in zip(todo, evaluate(plans, done), strict=True):
        curves[unit].points[kept], curves[unit].fidelity[kept] = found, worst
    seconds = time.perf_counter() - began
    return Sensitivity(list(curves.values()), on, str(options.compensate), seconds, len(todo))


def jobs(prepared: Prepared, options: PlanOptions, sensitivity: SensitivityOptions) -> list[tuple[Unit, int]]:
    """Every (unit, kept count) a scan evaluates."""
    return [(u, kept) for u in units(prepared, options) for kept in widths(u, options, sensitivity.fractions)]
