"""Budget: the plan for a target (a fraction of the MACs, params or latency), allocated as ``--allocate``
says: by measured sensitivity where data is given, else by one data-free rule that does not compare
scores across layers where they mean different things.

- ``global``: one ranking of every group's scores (Network Slimming). Right for a model trained with an
  L1 penalty on gamma, whose near-zero gammas mark what it does not need; wrong elsewhere (a filter's norm,
  or a BN's gamma, is of a different size in every layer).
- ``layer``: every group keeps the same fraction.
- ``sensitivity``: every group cut alone to a few widths on the calibration data (or scored by the user's
  ``--eval-cmd``), then the widths that meet the budget at the least measured damage (allocate.py).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from onnxprune.channels import Plan
from onnxprune.compensate.rebuild import MOMENT_SAMPLES, Moments, channel_moments
from onnxprune.data import Samples, count, split_holdout, take
from onnxprune.errors import UsageError
from onnxprune.importance import trained_for_slimming
from onnxprune.options import Allocate, Compensate, PlanOptions, Scope
from onnxprune.pipeline import Prepared, rank_on_statistics
from onnxprune.progress import steps
from onnxprune.search.allocate import allocate
from onnxprune.search.evaluate import Evaluation
from onnxprune.search.proxy import proxy
from onnxprune.search.score import EvalCommand
from onnxprune.search.sensitivity import Sensitivity, SensitivityOptions, jobs, measure_sensitivity
from onnxprune.search.targets import Reached, Target, plan_to_target, to_target
from onnxprune.search.tasks import Evaluator
from onnxprune.search.workers import WorkerOptions, Workers


@dataclass(frozen=True)
class SearchData:
    """What a search may measure plans on: calibration samples (only the part calibration fits on; the
    held-out tail judges the result) and the user's score command; and where its evaluations run
    (``workers``; None: in this process)."""

    samples: Samples | None = None
    holdout: float = 0.1
    eval_cmd: EvalCommand | None = None
    sensitivity: SensitivityOptions = SensitivityOptions()
    progress: bool = False  # progress lines on stderr, where it is a terminal
    # Channel statistics for calibration's rebuild, measured once for the search and the prune.
    moments: Mapping[str, Moments] | None = None
    workers: Workers | None = None

    @property
    def given(self) -> bool:
        return self.samples is not None or self.eval_cmd is not None

    def fit_samples(self) -> Samples | None:
        """The first ``sensitivity.samples`` samples of the fitting part: what evaluations run on."""
        if self.samples is None:
            return None
        fit, _ = split_holdout(self.samples, self.holdout)
        return take(fit, min(self.sensitivity.samples, count(fit)))

    def moment_samples(self) -> Samples | None:
        """What the channel statistics of calibration's rebuild come from: up to ``MOMENT_SAMPLES`` of the
        fitting part after the evaluations' (all of the fitting part where too few are left), so that a
        rebuild estimated on samples is not judged on the same samples."""
        if self.samples is None:
            return None
        fit, _ = split_holdout(self.samples, self.holdout)
        rest = {name: array[self.sensitivity.samples :] for name, array in fit.items()}
        chosen = rest if count(rest) >= self.sensitivity.samples else fit
        return take(chosen, min(MOMENT_SAMPLES, count(chosen)))


@dataclass(frozen=True)
class SearchOptions:
    """How a target search may measure plans, beyond the calibration data: the user's score command
    (``--eval-cmd``), the sensitivity scan's widths and samples, whether to show progress on stderr
    (where it is a terminal), and where evaluations run: ``workers`` processes here (None: one per core;
    1: this process) or a Ray cluster (``ray``: ``local`` or an address; see workers.py)."""

    eval_cmd: str | None = None
    sensitivity: SensitivityOptions = SensitivityOptions()
    progress: bool = False
    workers: int | None = None
    ray: str | None = None

    def __post_init__(self) -> None:
        if self.eval_cmd is not None:
            EvalCommand(self.eval_cmd)  # a bad template is a usage error before any work
        self.worker_options()

    def worker_options(self) -> WorkerOptions:
        return WorkerOptions(self.workers, self.ray)

    def open_workers(self) -> Workers:
        """The workers, connected (a Ray address that cannot be reached is a WorkerError here, before
        any work); close them (``with``) when the command ends."""
        workers = Workers(self.worker_options())
        workers.open()
        return workers

    def data(
        self,
        samples: Samples | None,
        holdout: float,
        moments: Mapping[str, Moments] | None = None,
        workers: Workers | None = None,
    ) -> SearchData:
        command = EvalCommand(self.eval_cmd) if self.eval_cmd is not None else None
        return SearchData(samples, holdout, command, self.sensitivity, self.progress, moments, workers)


def resolve_allocation(prepared: Prepared, options: PlanOptions, data: SearchData) -> tuple[Allocate, str]:
    """The allocation ``auto`` stands for here, and why (for the report)."""
    if options.allocate == Allocate.SENSITIVITY and not data.given:
        raise UsageError("--allocate sensitivity measures on data: pass --calib DATA or --eval-cmd")
    if options.allocate != Allocate.AUTO:
        return options.allocate, "asked for"
    if options.scope == Scope.LAYER:
        return Allocate.LAYER, "--scope layer"
    if data.given:
        return Allocate.SENSITIVITY, "measured on the data given"
    if trained_for_slimming(prepared.groups):
        return Allocate.GLOBAL, "|gamma| is bimodal: trained for slimming, so gammas compare across layers"
    return Allocate.LAYER, (
        "no data: every group keeps the same fraction, since scores do not compare across layers of a model "
        "not trained for slimming; pass --calib DATA to allocate by measured sensitivity"
    )


class Budget:
    """Plans for targets of one prepared model, allocated one way; a sensitivity scan is measured once, at
    the first target that needs it, and serves every later one (a sweep's ladder)."""

    def __init__(self, prepared: Prepared, data: SearchData) -> None:
        self.prepared, self.options, self.data = prepared, prepared.options, data
        self.how, self.why = resolve_allocation(prepared, self.options, data)
        self._scan: tuple[Sensitivity, Evaluator] | None = None

    def plan(self, target: Target, measured: bool = True) -> tuple[Reached, Plan, dict[str, Any]]:
        """The plan nearest ``target``, and the report's ``allocation`` record (with the chosen plan's
        measured damage and fidelity, unless ``measured`` is false)."""
        record: dict[str, Any] = {"method": str(self.how), "why": self.why}
        if self.how != Allocate.SENSITIVITY:
            scope = Scope.LAYER if self.how == Allocate.LAYER else Scope.GLOBAL
            options = replace(self.options, scope=scope)
            reached, plan = plan_to_target(self.prepared, options, target, progress=self.data.progress)
            return reached, plan, record
        if self._scan is None:
            self._scan = measure(self.prepared, self.options, self.data)
        sensitivity, evaluate = self._scan
        reached, plan, chosen = _allocated(
            self.prepared, sensitivity, self.options, target, self.data.progress
        )
        record.update(chosen, sensitivity=sensitivity.to_dict())
        if measured:
            record["measured_damage"], record["measured_fidelity"] = evaluate(plan)
        return reached, plan, record


def measure(prepared: Prepared, options: PlanOptions, data: SearchData) -> tuple[Sensitivity, Evaluator]:
    """Every unit's sensitivity curve, and the evaluation it was measured with (plan -> damage, worst
    fidelity), on the search's workers. Channels are ranked first on the rebuild's statistics, where
    calibration rebuilds them (``rank_on_statistics``): each cut then removes what the rest rebuild best."""
    if data.moments is None:
        data = replace(data, moments=moments_for(prepared, options, data))
    rank_on_statistics(prepared, data.moments)
    evaluate, on = evaluation(prepared, data)
    total = len(jobs(prepared, options, data.sensitivity))
    description = f"measuring sensitivity on {evaluate.where}"
    with steps(description, total=total, enabled=data.progress) as say:
        found = measure_sensitivity(prepared, evaluate.many, options, data.sensitivity, on, say)
    return found, evaluate


def evaluation(prepared: Prepared, data: SearchData) -> tuple[Evaluator, str]:
    """plan -> (damage, worst output fidelity) on the search's workers, and what it measures on. With
    a score command: damage = the original's score minus the plan's. ``data.moments``: as ``measure``
    found them (None: nothing rebuilt)."""
    samples = data.fit_samples()
    moments = data.moments
    if data.eval_cmd is not None:
        command = data.eval_cmd
        original = command.score(prepared.model)
        found = Evaluation(samples or {}, moments, command, original)
        on = f"--eval-cmd {command.template!r} (original: {original:g})"
    else:
        assert samples is not None
        samples, what = proxy(samples, prepared.model, data.sensitivity.samples)
        found = Evaluation(samples, moments)
        on = f"{what} of the fitting part"
    return Evaluator(prepared, found, data.workers), on


def moments_for(
    prepared: Prepared, options: PlanOptions, data: SearchData, steps: tuple[str, ...] = ("rebuild",)
) -> dict[str, Moments] | None:
    """What a removed channel carries, in the search's evaluations and the prune alike: with calibration's
    rebuild, its estimate from the kept channels (channel statistics on the data); without, the
    analysis' data-free value (None)."""
    samples = data.moment_samples()
    if options.compensate != Compensate.CALIB or samples is None or "rebuild" not in steps:
        return None
    # Channel statistics are the same in a window as in the whole: a large input's crops cost less.
    samples, _ = proxy(samples, prepared.model, MOMENT_SAMPLES)
    return channel_moments(prepared.model, prepared.graph, prepared.analysis, samples)


def _allocated(
    prepared: Prepared, sensitivity: Sensitivity, options: PlanOptions, target: Target, progress: bool
) -> tuple[Reached, Plan, dict[str, Any]]:
    records: dict[int, dict[str, Any]] = {}  # by id of the plan each allocation made

    def plan_for(kind: str, value: float) -> tuple[Reached, Plan]:
        reached, plan, record = allocate(prepared, sensitivity, options, kind, value)
        records[id(plan)] = record
        return reached, plan

    reached, plan = to_target(prepared, target, plan_for, progress=progress)
    return reached, plan, records[id(plan)]
