"""The pipeline after planning: (prepared, plan) -> rewrite (isolating groups that break the model) ->
report -> verify -> compensate with data (calibration) -> 2:4. Every driver that writes or measures a
pruned model goes through ``execute``; drivers differ only in how they choose the plan.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import onnx

from onnxprune import verify
from onnxprune.channels import Analysis, ChannelGroup, Plan
from onnxprune.channels.rebuild import Rebuilt
from onnxprune.compensate.calibrate import CalibOptions, calibrate
from onnxprune.compensate.rebuild import MOMENT_SAMPLES, Moments, channel_moments, rebuild
from onnxprune.compensate.summary import compensation_report
from onnxprune.data import Samples, split_holdout, static_batch, take
from onnxprune.data import count as count_samples
from onnxprune.evidence import RANDOM_ONLY
from onnxprune.graph import normalise
from onnxprune.measure.counter import Counts, count
from onnxprune.options import Compensate, VerifyOptions
from onnxprune.pipeline.layer_errors import held_out_part, plan_layer_errors, record_layer_errors
from onnxprune.pipeline.prepare import Prepared
from onnxprune.pipeline.report import build_report
from onnxprune.pipeline.rewrite import Rebuild, rewrite
from onnxprune.pipeline.verdict import judge
from onnxprune.pipeline.verification import feeds_for, verify_pruning
from onnxprune.planning import unmatched_excludes
from onnxprune.planning.align import seen_widths, unaligned
from onnxprune.rewrite import (
    cut_feeds,
    kept_positions,
    masked_reference,
    reference_with_cut_inputs,
    validate,
    with_cuts,
)
from onnxprune.runtime import PendingCheck, check_runs
from onnxprune.sparsity import SparsifyOptions, sparsify_model


@dataclass
class PruneResult:
    original: onnx.ModelProto
    pruned: onnx.ModelProto
    groups: list[ChannelGroup]
    report: dict[str, Any]
    make_masked: Callable[[], onnx.ModelProto]
    plan: Plan = dataclasses.field(default_factory=Plan)
    analysis: Analysis | None = None
    output: Any = None  # the path written, once written
    # ``pruned`` serialised for its ONNX Runtime check; None once anything changes it (calibration, 2:4).
    serialized: bytes | None = None
    pending: PendingCheck | None = None  # that check, still running (``defer_check``): see ``confirm``

    def confirm(self) -> None:
        """Wait for a deferred ONNX Runtime check; raises the ValidationError it found."""
        pending, self.pending = self.pending, None
        if pending is not None:
            pending.wait()

    @functools.cached_property
    def masked(self) -> onnx.ModelProto:
        """The original with exactly the removed channels zeroed (see rewrite.masked_reference)."""
        return self.make_masked()


@dataclass(frozen=True)
class Execution:
    """How the pipeline runs after planning. ``samples``: calibration data (fitted on with compensate
    calib, the held-out tail judging); ``sparsify``: then 2:4; ``defer_check``: see ``execute``."""

    verify: VerifyOptions | None = None
    samples: Samples | None = None
    calib: CalibOptions | None = None
    sparsify: SparsifyOptions | None = None
    defer_check: bool = False
    # A target search's record of what it reached, from the counts before and after (it raises where the
    # pruned model misses the target): checked before anything is verified.
    target_record: Callable[[Counts, Counts], dict[str, Any]] | None = None
    # Channel statistics for calibration's rebuild (compensate/rebuild.py), where measured already.
    moments: Mapping[str, Moments] | None = None
    # Then distil from the original on the calibration samples for this long (onnxprune.train.finetune).
    finetune_minutes: float | None = None

    @property
    def verifying(self) -> bool:
        return self.verify is not None and self.verify.enabled

    @property
    def holdout(self) -> float:
        return (self.calib or CalibOptions()).holdout


def execute(prepared: Prepared, plan: Plan, run: Execution) -> PruneResult:
    """The pruned model of ``plan``, its report, verified and compensated as ``run`` says.

    The result's ``pruned`` has passed onnx.checker, shape inference and an ONNX Runtime run with the
    original's output shapes. ``run.defer_check`` (without verification, calibration or 2:4, which need the
    check's answer first): the run goes on in a thread; ``result.confirm()`` waits for it and raises its
    ValidationError (the groups to blame are then not isolated: execute again without deferring).
    """
    options, model = prepared.options, prepared.model
    calibrating = options.compensate == Compensate.CALIB and run.samples is not None
    # The deferred check answers after the save began: only where nothing else needs the model run first.
    defer = run.defer_check and not run.verifying and run.sparsify is None and run.samples is None
    feeds = feeds_for(model, run.verify or VerifyOptions())
    rebuild_for = _rebuild_for(prepared, run) if calibrating else None
    trial = rewrite(prepared, plan, feeds, defer=defer, rebuild=rebuild_for)
    plan, pruned = trial.plan, trial.pruned
    if pruned is None:
        raise AssertionError("the bisection over groups ended without a model")
    analysis, groups = prepared.analysis, prepared.groups
    report = _report(prepared, plan, pruned, run)
    if rebuild_for is not None:
        report["compensation"]["rebuilt"] = _rebuilt_record(rebuild_for(plan))
        masked = functools.partial(_rebuilt_reference, prepared, plan, rebuild_for)
    else:
        masked = functools.partial(_masked, model, analysis, plan)
    result = PruneResult(model, pruned, groups, report, masked, plan, analysis, None, trial.serialized,
                         trial.pending)  # fmt: skip
    if run.verifying:
        _verify(result, analysis, feeds, run)
    elif analysis.compensating:
        report["compensation"]["error_skipped"] = (
            "--no-verify: per-layer errors are measured with verification"
        )
    if calibrating:
        assert run.samples is not None
        result.serialized = None
        _calibrate(result, analysis, run.samples, run)
    unfinetuned = None
    if run.finetune_minutes and run.samples is not None:
        result.serialized = None
        unfinetuned = result.pruned
        _finetune(result, analysis, run.samples, run)
    if run.sparsify is not None:
        result.serialized = None  # the 2:4 model is not the bytes ONNX Runtime checked
        _sparsify(result, _sparsify_options(run.sparsify, run), run.verify)
    # Judged on the user's data only: random feeds say nothing about a task (verification's change
    # table already shows them, labelled a smoke test).
    if run.samples is not None or (run.verifying and feeds.source == "file"):
        held = held_out_part(run.samples, run.holdout)
        checks = run.verify or VerifyOptions()
        report["verdict"] = judge(model, result.pruned, held, feeds, checks.min_fidelity, unfinetuned)
        if unfinetuned is not None:
            _warn_where_finetune_lowered(report)
        if report["verdict"]["users_data"] and "verify" in report:
            # The verdict judged the task on the user's data: random feeds only checked the surgery.
            warnings = report["verify"]["warnings"]
            report["verify"]["warnings"] = [w for w in warnings if RANDOM_ONLY not in w]
    return result


def _report(prepared: Prepared, plan: Plan, pruned: onnx.ModelProto, run: Execution) -> dict[str, Any]:
    options, analysis = prepared.options, prepared.analysis
    after = count(pruned, run.verify.shapes if run.verify is not None else {})
    report = build_report(prepared.before, after, prepared.groups, plan, options)
    if run.target_record is not None:
        report["target"] = run.target_record(prepared.before, after)
    report["warnings"] = [
        f"--exclude {p!r} matches no node of any channel group; nothing was excluded by it"
        for p in unmatched_excludes(prepared.groups, options.exclude)
    ]
    report["unaligned"] = unaligned(analysis, seen_widths(analysis), options.aligned_to, plan.kept)
    report["compensation"] = compensation_report(analysis, plan, options.compensate)
    return report


def _verify(result: PruneResult, analysis: Analysis, feeds: Any, run: Execution) -> None:
    assert run.verify is not None
    section = result.report["compensation"]
    held = held_out_part(run.samples, run.holdout)
    errors = plan_layer_errors(result.original, result.masked, analysis, result.plan, section, feeds, held)
    result.report["verify"] = verify_pruning(
        result.original, result.masked, result.pruned, run.verify, fed=feeds, serialized=result.serialized,
        error_run=errors,
    )  # fmt: skip
    if errors is not None:
        record_layer_errors(result.original, result.masked, analysis, result.plan, section, errors)


def _rebuild_for(prepared: Prepared, run: Execution) -> Rebuild:
    """With calibration data and its rebuild step: removed channels rebuilt from the kept ones, from the
    channel statistics of the fitting part (compensate/rebuild.py)."""
    options = run.calib or CalibOptions()
    if "rebuild" not in options.steps or run.samples is None:
        return None
    moments = run.moments
    if moments is None:
        fit, _ = split_holdout(run.samples, options.holdout)
        fit = take(fit, min(MOMENT_SAMPLES, count_samples(fit)))
        moments = channel_moments(prepared.model, prepared.graph, prepared.analysis, fit)
    return functools.partial(rebuild, prepared.analysis, moments=moments)


def _rebuilt_record(rebuilt: Mapping[str, Rebuilt]) -> dict[str, Any]:
    linear = [name for name, found in rebuilt.items() if found.linear is not None]
    return {
        "tensors": len(rebuilt),
        "linear": len(linear),
        "channels": int(sum(len(r.removed) for r in rebuilt.values())),
    }


def _rebuilt_reference(prepared: Prepared, plan: Plan, rebuild_for: Callable) -> onnx.ModelProto:
    """What the rebuilt pruned model must compute: the original with each consumer's input cut by the
    plan and its removed channels rebuilt (the search's cut-input model, its inputs as constants)."""
    model, points = reference_with_cut_inputs(prepared.graph.copy(), prepared.analysis, linear=True)
    return with_cuts(model, cut_feeds(prepared.analysis, plan, points, rebuild_for(plan)))


def _masked(model: onnx.ModelProto, analysis: Analysis, plan: Plan) -> onnx.ModelProto:
    # Built on demand from the input, normalised again (same names): a copy of the graph kept just in case
    # would hold a second copy of every weight.
    return masked_reference(normalise(model), analysis, plan)


def _calibrate(result: PruneResult, analysis: Analysis, samples: Samples, run: Execution) -> None:
    """Fit the (verified exact) pruned model back to the original; question 2 is then asked again."""
    done = calibrate(
        result.original,
        result.pruned,
        kept_positions(analysis, result.plan),
        samples,
        run.calib or CalibOptions(),
        static_batch=static_batch(result.original),
    )
    result.pruned = validate(done.model)
    result.report["calibration"] = done.report
    after = count(result.pruned, run.verify.shapes if run.verify is not None else {})
    result.report["params"]["after"], result.report["macs"]["after"] = after.params, after.macs
    _measure_change_again(result, run.verify, "change_before_calibration")
    if "verify" not in result.report:
        check_runs(result.original, result.pruned)


def _finetune(result: PruneResult, analysis: Analysis, samples: Samples, run: Execution) -> None:
    """Distil the pruned model from the original on the calibration samples it may fit on (the held-out
    tail stays unseen: the verdict is measured on it); the report keeps what training did."""
    from onnxprune.train.finetune import finetune

    fit, _ = split_holdout(samples, run.holdout)
    assert run.finetune_minutes is not None
    kept = kept_positions(analysis, result.plan)
    tuned, record = finetune(result.original, result.pruned, fit, run.finetune_minutes, kept=kept)
    result.pruned = validate(tuned)
    result.report["finetune"] = record
    _measure_change_again(result, run.verify, "change_before_finetune")


def _warn_where_finetune_lowered(report: dict[str, Any]) -> None:
    """The epoch training keeps is chosen on a tenth of the fitting samples, which on a few hundred samples
    can pick one that is worse on the held-out tail (the PP-OCRv5 recogniser, when the epoch was chosen by
    the loss alone: 89% exact match without, 62% after 5 minutes). The tuned model is written either way;
    the user decides."""
    verdict = report["verdict"]
    before, after = verdict["before_finetune"], verdict["fidelity"]
    if verdict["users_data"] and after < before:
        report["warnings"].append(
            f"fine-tuning lowered the fidelity on {verdict['on']} ({before:.3f} -> {after:.3f}): more "
            "calibration samples help it; without --finetune-minutes the calibrated model is written"
        )


def _sparsify_options(options: SparsifyOptions, run: Execution) -> SparsifyOptions:
    """prune's 2:4 is calibrated on prune's own calibration samples (loaded once), unless it was given its
    own; it never fits on the tail that calibration held out (the same tail, at least as long)."""
    if run.samples is None or options.calib is not None:
        return options
    return dataclasses.replace(options, calib=run.samples, holdout=max(options.holdout, run.holdout))


def _sparsify(result: PruneResult, options: SparsifyOptions, checks: VerifyOptions | None) -> None:
    """2:4 on the pruned model (its own activations); the original-to-final change is measured again."""
    sparse = sparsify_model(result.pruned, options)
    result.pruned = sparse.model
    result.report["sparsity"] = sparse.report
    if sparse.report["sparsified"]:
        _measure_change_again(result, checks, "change_before_sparsity")


def _measure_change_again(result: PruneResult, checks: VerifyOptions | None, keep_as: str) -> None:
    """Question 2 asked again of a model changed after verification; the earlier answer kept aside."""
    if "verify" not in result.report or checks is None:
        return
    feeds = feeds_for(result.original, checks).feeds
    change = verify.compare(result.original, result.pruned, feeds=feeds, progress=checks.progress)
    result.report["verify"][keep_as] = result.report["verify"]["change"]
    result.report["verify"]["change"] = change.to_dict()
