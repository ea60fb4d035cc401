"""The Python API: inspect and prune, one call each, with everything the CLI prints in the result.

from onnxprune import api
result = api.prune("model.onnx", "model.pruned.onnx", api.PlanOptions(ratio=0.5))
print(result.report["macs"])
sparse = api.sparsify("model.onnx", "model.24.onnx", api.SparsifyOptions())   # 2:4 (onnxprune.sparsity)
"""

from __future__ import annotations

import dataclasses
import functools
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from onnxprune import files, verify
from onnxprune.activation import activation_scores
from onnxprune.align import seen_widths, unaligned
from onnxprune.analyse import analyse
from onnxprune.channels import Analysis, ChannelGroup
from onnxprune.compensate.calibrate import CalibOptions, calibrate
from onnxprune.compensate.layer_error import LayerErrors, layer_errors
from onnxprune.compensate.summary import compensation_report
from onnxprune.data import check_samples, load_calibration, split_holdout, static_batch, take
from onnxprune.data import count as count_samples
from onnxprune.errors import OriginalRunError, UsageError, ValidationError, VerificationError
from onnxprune.evidence import original_must_run, warnings_for
from onnxprune.graph import normalise, to_model
from onnxprune.importance import score_groups, slimming_warning
from onnxprune.inputs import prepare_feeds
from onnxprune.isolate import Trial, decline_breaking_groups
from onnxprune.measure.counter import Counts, count
from onnxprune.measure.estimate import Estimator
from onnxprune.measure.layout import prefetch as prefetch_channel_block
from onnxprune.measure.targets import Target, plan_to_target, target_options, target_record
from onnxprune.nothing import bn_hint, refuse_nothing_to_prune
from onnxprune.options import AUTO, Compensate, Criterion, PlanOptions, Scope, VerifyOptions, choice
from onnxprune.plan import make_plan, unmatched_excludes
from onnxprune.rewrite import (
    apply_plan,
    kept_positions,
    masked_reference,
    uncompensated_reference,
    validate,
)
from onnxprune.runtime import PendingCheck, check_runs
from onnxprune.sparsity import SparsifyOptions, SparsifyResult, sparsify, sparsify_model

__all__ = [
    "Criterion",
    "Inspection",
    "PlanOptions",
    "PruneResult",
    "Scope",
    "SparsifyOptions",
    "SparsifyResult",
    "Target",
    "VerifyOptions",
    "inspect",
    "prune",
    "prune_model",
    "sparsify",
]


# Held-out calibration samples that measure the per-layer error of data-free compensation.
ERROR_SAMPLES = 16


@dataclass
class Inspection:
    """Every channel group of a model, scored, with the reason for each decline."""

    model: onnx.ModelProto
    analysis: Analysis
    groups: list[ChannelGroup]
    params: int
    macs: int
    pairs: list[dict[str, str]] = field(default_factory=list)
    counted_at: dict[str, tuple[int, ...]] = field(default_factory=dict)  # the input shapes counted at
    counts: Counts | None = None
    estimator: Estimator | None = None  # a plan's MACs and params from the analysis (targets, plots)
    group_macs: dict[int, int] = field(default_factory=dict)  # group id -> MACs of the layers it sets
    warnings: list[str] = field(default_factory=list)
    hints: list[str] = field(default_factory=list)  # e.g. how to export with BN kept


def conv_bn_pairs(graph: gs.Graph) -> list[dict[str, str]]:
    """Every BatchNormalization with the node that feeds it: a Conv for the classic pair, else what it is."""
    pairs = []
    for node in graph.nodes:
        if node.op == "BatchNormalization" and node.inputs and node.inputs[0].inputs:
            producer = node.inputs[0].inputs[0]
            pairs.append({"bn": node.name, "producer": producer.name, "producer_op": producer.op})
    return pairs


@dataclass
class PruneResult:
    original: onnx.ModelProto
    pruned: onnx.ModelProto
    groups: list[ChannelGroup]
    report: dict[str, Any]
    make_masked: Callable[[], onnx.ModelProto]
    output: Path | None = None
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


def inspect(
    source: str | Path | onnx.ModelProto,
    criterion: Criterion | str = Criterion.AUTO,
    compensate: Compensate | str = Compensate.BN,
    shapes: dict[str, tuple[int, ...]] | None = None,
) -> Inspection:
    """Groups, scores and declines; params and MACs counted at ``shapes`` (or the default input shapes).

    ``compensate``: the mode whose must-keep channels to show (what ``prune`` would keep with it).
    """
    criterion = choice(Criterion, criterion, "--criterion")  # a usage error even for an unreadable model
    compensate = choice(Compensate, compensate, "--compensate")
    model = files.read_model(source) if not isinstance(source, onnx.ModelProto) else source
    graph = normalise(model)
    analysis = analyse(graph, compensate="none" if compensate == Compensate.NONE else "bn")
    score_groups(analysis.groups, criterion)
    counts = count(model, shapes)
    found = Inspection(model, analysis, analysis.groups, counts.params, counts.macs, conv_bn_pairs(graph))
    found.hints = [hint] if (hint := bn_hint(graph)) else []
    found.counted_at, found.counts = counts.inputs, counts
    found.estimator = Estimator(graph, analysis, counts)
    found.group_macs = found.estimator.group_macs()
    warning = slimming_warning(analysis.groups)
    found.warnings.extend([warning] if warning else [])
    return found


@dataclass
class CalibRequest:
    """Calibration data for ``prune`` (a file or folder, see data.load_calibration, or samples already
    loaded) and how to use it. ``limit``: use only the first N samples. It is fitted on with
    ``PlanOptions(compensate="calib")``; ``criterion="activation"`` ranks channels on it in any mode."""

    source: str | Path | None = None
    samples: dict[str, np.ndarray] | None = None
    size: tuple[int, int] | None = None
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    limit: int | None = None
    options: Any = None  # compensate.calibrate.CalibOptions; None: its defaults

    def load(self, model: onnx.ModelProto) -> dict[str, np.ndarray]:
        if self.samples is None and self.source is None:
            raise UsageError("calibration needs data: --calib FILE or DIR")
        if self.samples is not None:
            return take(check_samples(self.samples, model), self.limit)
        assert self.source is not None
        samples = load_calibration(self.source, model, size=self.size, mean=self.mean, std=self.std)
        return take(samples, self.limit)

    def calib_options(self) -> Any:
        options = self.options or CalibOptions()
        options.check()
        return options


def prune_model(
    model: onnx.ModelProto,
    options: PlanOptions,
    verify: VerifyOptions | None = None,
    calib: CalibRequest | None = None,
    *,
    sparsify: SparsifyOptions | None = None,
    target: Target | None = None,
    defer_check: bool = False,
) -> PruneResult:
    """Prune an in-memory model; the result's ``pruned`` has passed onnx.checker, shape inference and an
    ONNX Runtime run with the original's output shapes.

    ``defer_check`` (without verification, calibration or 2:4 only, which need the check's answer first):
    the ONNX Runtime run goes on in a thread; ``result.confirm()`` waits for it and raises its
    ValidationError (the groups to blame are then not isolated: prune again without deferring).

    With ``verify`` enabled the pruned model must match its masked reference (else VerificationError), and
    the report gains how far pruning moved each output from the original. ``sparsify``: then make the
    pruned model's eligible layers 2:4 (``report["sparsity"]``; nothing eligible is reported, not an error),
    by SparseGPT on ``calib``'s samples when given (see ``_sparsify_options``).
    With a ``target`` (a fraction of the original's MACs, params or latency) the plan is searched for
    (``options.ratio`` is where the search starts, not a plan); the report says what was asked and what was
    reached. MACs and parameters are counted before and after at the verification's shapes.
    A group whose pruning breaks those checks is found and declined with the reason (see
    :mod:`onnxprune.isolate`); the rest is pruned. A model with no prunable group is a
    ``NothingToPruneError``.
    """
    samples = _calibration_samples(model, options, calib)
    # Calibration starts from the data-free folding: it refits what that leaves.
    mode = "bn" if options.compensate == Compensate.CALIB else options.compensate
    if target is not None:
        options = target_options(options, target)
    shapes = verify.shapes if verify is not None else {}
    graph = normalise(model)
    before = count(model, shapes)
    # Compensation always runs the original-values pass: the report says which folds are exact.
    # A threshold promises exactness where it can: no estimate that is wrong even for gamma = 0.
    walk = functools.partial(
        analyse,
        exactness=options.threshold is not None or mode == "bn",
        compensate=mode,
        allow_approximate=options.threshold is None,
    )
    analysis = walk(graph)
    activation = options.criterion == "activation"
    score_groups(analysis.groups, "auto" if activation else options.criterion)
    if activation and samples is not None:
        _activation_scores(model, graph, analysis, samples, calib)
    if target is None:
        make_plan(analysis.groups, options, analysis)
    else:
        shown = verify is not None and verify.progress
        reached = plan_to_target(graph, analysis, options, target, before, model, progress=shown)
    refuse_nothing_to_prune(analysis.groups, graph, options.criterion)
    feeds = _feeds(model, verify or VerifyOptions())
    defer_check = defer_check and not (verify is not None and verify.enabled) and sparsify is None
    defer_check = defer_check and not (options.compensate == Compensate.CALIB and samples is not None)
    trial = _attempt(model, graph, analysis, feeds, defer=defer_check)
    # The graph's arrays are a second copy of the weights, and the pruned model has its own now.
    del graph
    if trial.error is not None:
        retry = functools.partial(_fresh_attempt, model, analysis.groups, walk, feeds)
        trial = decline_breaking_groups(analysis.groups, retry)
    analysis, pruned = trial.analysis, trial.pruned
    if pruned is None:
        raise AssertionError("the bisection over groups ended without a model")
    after = count(pruned, shapes)
    report = build_report(before, after, analysis.groups, options)
    report["warnings"] = [
        f"--exclude {p!r} matches no node of any channel group; nothing was excluded by it"
        for p in unmatched_excludes(analysis.groups, options.exclude)
    ]
    report["unaligned"] = unaligned(analysis, seen_widths(analysis), options.aligned_to)
    if target is not None:
        report["target"] = target_record(reached, target, before, after)
    report["compensation"] = compensation_report(analysis, options.compensate)
    # Built on demand from the input, normalised again (same names): a copy of the graph kept just in case
    # would hold a second copy of every weight.
    masked = functools.partial(_masked, model, analysis)
    # The input itself is the original to compare with: the normalised graph computes the same.
    result = PruneResult(
        model, pruned, analysis.groups, report, masked, serialized=trial.serialized, pending=trial.pending
    )
    if verify is not None and verify.enabled:
        errors = _layer_errors(result, analysis, feeds, samples, calib)
        report["verify"] = verify_pruning(
            model, result.masked, pruned, verify, fed=feeds, serialized=result.serialized, error_run=errors
        )
        if errors is not None:
            _record_layer_errors(result, analysis, errors)
    elif analysis.compensating:
        skipped = "--no-verify: per-layer errors are measured with verification"
        report["compensation"]["error_skipped"] = skipped
    if options.compensate == Compensate.CALIB and calib is not None and samples is not None:
        result.serialized = None
        _calibrate(result, analysis, samples, calib, verify)
    if sparsify is not None:
        result.serialized = None  # the 2:4 model is not the bytes ONNX Runtime checked
        _sparsify(result, _sparsify_options(sparsify, samples, calib), verify)
    return result


def _sparsify_options(
    options: SparsifyOptions, samples: dict[str, np.ndarray] | None, calib: CalibRequest | None
) -> SparsifyOptions:
    """prune's 2:4 is calibrated on prune's own calibration samples (loaded once), unless it was given its
    own; it never fits on the tail that calibration held out (the same tail, at least as long)."""
    if samples is None or calib is None or options.calib is not None:
        return options
    holdout = max(options.holdout, calib.calib_options().holdout)
    return dataclasses.replace(options, calib=samples, holdout=holdout)


def _sparsify(result: PruneResult, options: SparsifyOptions, checks: VerifyOptions | None) -> None:
    """2:4 on the pruned model (its own activations); the original-to-final change is measured again."""
    sparse = sparsify_model(result.pruned, options)
    result.pruned = sparse.model
    result.report["sparsity"] = sparse.report
    if sparse.report["sparsified"] and "verify" in result.report and checks is not None:
        feeds = _feeds(result.original, checks).feeds
        change = verify.compare(result.original, result.pruned, feeds=feeds, progress=checks.progress)
        result.report["verify"]["change_before_sparsity"] = result.report["verify"]["change"]
        result.report["verify"]["change"] = change.to_dict()


def _calibration_samples(
    model: onnx.ModelProto, options: PlanOptions, calib: CalibRequest | None
) -> dict[str, np.ndarray] | None:
    if options.criterion == "activation" and calib is None:
        raise UsageError("--criterion activation ranks channels on calibration data: pass --calib")
    if options.compensate == "calib" and calib is None:
        raise UsageError("--compensate calib needs calibration data (--calib)")
    if calib is None:
        return None
    calib.calib_options()
    return calib.load(model)


@dataclass
class _LayerErrorRun:
    """The per-layer error measurement of data-free compensation (compensate/layer_error): in
    verification's runs (``errors`` set, with the uncompensated reference to run beside them), or after
    verification in runs of its own on held-out calibration samples (``feeds``)."""

    on: str
    errors: LayerErrors | None = None
    uncompensated: onnx.ModelProto | None = None
    feeds: list[dict[str, np.ndarray]] | None = None

    def take_uncompensated(self) -> onnx.ModelProto:
        """The uncompensated reference, no longer held here: its session is all verification keeps."""
        model, self.uncompensated = self.uncompensated, None
        assert model is not None
        return model


def _layer_errors(
    result: PruneResult,
    analysis: Analysis,
    fed: Any,
    samples: dict[str, np.ndarray] | None,
    calib: CalibRequest | None,
) -> _LayerErrorRun | None:
    """What to measure per consumer: the output error of the pruned model without and with the data-free
    compensation; None (and the report says why where it is not obvious) when there is nothing to measure."""
    section = result.report["compensation"]
    if not analysis.compensating or not section["layers"]:
        return None
    if files.needs_external_data(result.original):
        # Three more runnable copies of the weights (and sessions) would be too much for such a model.
        section["error_skipped"] = "the model is over 2 GB: per-layer errors are not measured"
        return None
    if samples is not None:
        _, held = split_holdout(samples, calib.calib_options().holdout if calib else 0.1)
        feeds = [take(held, ERROR_SAMPLES)]
        return _LayerErrorRun(f"{count_samples(feeds[0])} held-out calibration samples", feeds=feeds)
    uncompensated = uncompensated_reference(normalise(result.original), analysis)
    nodes = _consumers(result)
    errors = LayerErrors(result.original, result.masked, uncompensated, nodes, kept_positions(analysis))
    return _LayerErrorRun(f"the verification inputs ({fed.description})", errors, uncompensated)


def _consumers(result: PruneResult) -> list[str]:
    return list(dict.fromkeys(layer["node"] for layer in result.report["compensation"]["layers"]))


def _record_layer_errors(result: PruneResult, analysis: Analysis, run: _LayerErrorRun) -> None:
    """The errors into the report's layers; measured now, after verification, on held-out samples."""
    if run.errors is not None:
        errors = run.errors.result()
    else:
        assert run.feeds is not None
        uncompensated = uncompensated_reference(normalise(result.original), analysis)
        errors = layer_errors(
            result.original, result.masked, uncompensated, _consumers(result), kept_positions(analysis),
            run.feeds, static_batch(result.original),
        )  # fmt: skip
    section = result.report["compensation"]
    section["error_on"] = run.on
    for layer in section["layers"]:
        layer.update(errors.get(layer["node"], {"rel_mse_before": None, "rel_mse_after": None}))


def _activation_scores(
    model: onnx.ModelProto,
    graph: gs.Graph,
    analysis: Analysis,
    samples: dict[str, np.ndarray],
    calib: CalibRequest | None,
) -> None:
    # Ranked on the fitting part only: the held-out samples judge the result.
    fit, _ = split_holdout(samples, calib.calib_options().holdout if calib else 0.1)
    activation_scores(model, graph, analysis, fit, static_batch(model))


def _calibrate(
    result: PruneResult,
    analysis: Analysis,
    samples: dict[str, np.ndarray],
    calib: CalibRequest,
    checks: VerifyOptions | None,
) -> None:
    """Fit the (verified exact) pruned model back to the original; question 2 is then asked again."""
    done = calibrate(
        result.original,
        result.pruned,
        kept_positions(analysis),
        samples,
        calib.calib_options(),
        static_batch=static_batch(result.original),
    )
    result.pruned = validate(done.model)
    result.report["calibration"] = done.report
    after = count(result.pruned, checks.shapes if checks is not None else {})
    result.report["params"]["after"], result.report["macs"]["after"] = after.params, after.macs
    if "verify" in result.report and checks is not None:
        feeds = _feeds(result.original, checks).feeds
        change = verify.compare(result.original, result.pruned, feeds=feeds, progress=checks.progress)
        result.report["verify"]["change_before_calibration"] = result.report["verify"]["change"]
        result.report["verify"]["change"] = change.to_dict()
    else:
        check_runs(result.original, result.pruned)


def _attempt(
    model: onnx.ModelProto, graph: gs.Graph, analysis: Analysis, feeds: Any, defer: bool = False
) -> Trial:
    """Rewrite, validate, run: the pruned model, or the ValidationError a group's pruning caused.
    ``defer``: the run goes on in a thread (``Trial.pending``)."""
    try:
        pruned = validate(to_model(apply_plan(graph, analysis), model))
        # Serialised once: ONNX Runtime checks these bytes, and they are what is saved.
        data = None if files.needs_external_data(pruned) else pruned.SerializeToString()
        if defer:
            return Trial(
                analysis, pruned, None, data, PendingCheck(model, pruned, feeds=feeds, serialized=data)
            )
        check_runs(model, pruned, feeds=feeds, serialized=data)
    except OriginalRunError:
        raise  # the original fails on these inputs: no group is to blame
    except ValidationError as err:
        return Trial(analysis, None, err)
    return Trial(analysis, pruned, None, data)


def _fresh_attempt(
    model: onnx.ModelProto,
    planned: list[ChannelGroup],
    walk: Callable[[gs.Graph], Analysis],
    feeds: Any,
    plan: dict[int, np.ndarray],
) -> Trial:
    """One trial of :func:`isolate.decline_breaking_groups`: a fresh copy pruned as ``plan`` says."""
    graph = normalise(model)
    analysis = walk(graph)
    if len(analysis.groups) != len(planned):
        raise AssertionError("a second analysis of the same model found other groups")
    for group, old in zip(analysis.groups, planned, strict=True):
        group.declines, group.criterion, group.score = list(old.declines), old.criterion, old.score
        group.keep = plan.get(group.id)
    return _attempt(model, graph, analysis, feeds)


def _masked(model: onnx.ModelProto, analysis: Analysis) -> onnx.ModelProto:
    return masked_reference(normalise(model), analysis)


def verify_pruning(
    original: onnx.ModelProto,
    masked: onnx.ModelProto,
    pruned: onnx.ModelProto,
    options: VerifyOptions,
    fed: Any = None,
    serialized: bytes | None = None,
    error_run: _LayerErrorRun | None = None,
) -> dict[str, Any]:
    """Question 1: is the surgery exact (pruned vs masked reference)? Question 2: how far did it move?

    The result also says what was fed (``inputs``: shapes, random or the user's data) and ``warnings``:
    outputs that barely depend on the inputs, random data only. ``fed``: the ``inputs.Feeds`` already
    made from ``options``; ``serialized``: ``pruned``'s bytes, where made already. ``error_run``: its
    consumers' outputs are read from the same runs (the original's, the masked reference's noise-floor
    run) and one run of the uncompensated reference, which it then drops.
    """

    fed = fed or _feeds(original, options)
    taps: dict[str, list[str]] = {}
    observers: dict[str, Callable[[], onnx.ModelProto]] = {}
    visit = None
    errors = error_run.errors if error_run is not None else None
    if error_run is not None and errors is not None and errors.found:
        roles = {"original": "target", "masked": "after", "uncompensated": "before"}
        taps = {role: errors.wanted(key) for role, key in roles.items()}
        observers["uncompensated"] = error_run.take_uncompensated

        def visit(tapped: dict[str, dict[str, np.ndarray]]) -> None:
            errors.add({key: tapped[role] for role, key in roles.items()})

    with original_must_run(original, fed):
        exact, change = verify.exact_and_change(
            masked, serialized if serialized is not None else pruned, original, feeds=fed.feeds,
            progress=options.progress, taps=taps, observers=observers, visit=visit,
        )  # fmt: skip
    if not exact.passed:
        raise _not_exact(exact, fed)
    assert change is not None
    warnings = fed.notes + warnings_for(exact, fed)
    report = {"inputs": fed.to_dict(), "exact": exact.to_dict(), "change": change.to_dict()}
    return {**report, "warnings": warnings}


def _feeds(original: onnx.ModelProto, options: VerifyOptions) -> Any:
    return prepare_feeds(
        original,
        iterations=options.iterations,
        seed=options.seed,
        shapes=options.shapes,
        inputs_path=options.inputs,
    )


def _not_exact(exact: Any, fed: Any) -> Exception:
    worst = next(o for o in exact.outputs if not o.passed)
    detail = worst.reason or f"relative error {worst.max_rel_err:.3g} > {exact.rtol:g}"
    return VerificationError(
        "pruned model does not match its masked reference (the original with the removed channels set to "
        f"what the pruned model folds for them) "
        f"on output {worst.name!r}: {detail}; compared on {fed.description} ({fed.shapes_line()}); "
        "nothing written (--no-verify skips this check)"
    )


def prune(
    source: str | Path,
    output: str | Path,
    options: PlanOptions,
    *,
    verify: VerifyOptions | None = None,
    external_data: bool | None = None,
    target: Target | None = None,
    sparsify: SparsifyOptions | None = None,
    calib: CalibRequest | None = None,
    before_save: Callable[[Path], object] | None = None,
    on_pruned: Callable[[PruneResult], object] | None = None,
) -> PruneResult:
    """Prune a file into another; nothing is written unless the pruned model validates (and verifies).

    ``external_data``: weights in a side file; ``None`` keeps the input's layout (and is forced past 2 GB).
    ``before_save(path)`` runs on a temporary copy of the pruned model before ``output`` is written (e.g.
    building a TensorRT plan): if it raises, nothing is written. ``on_pruned(result)`` runs once the result
    is known (its report final), before it is saved and while the deferred ONNX Runtime check still runs
    (the CLI renders its tables then); again for the new result where a failed check prunes again.
    """
    verify = verify if verify is not None else VerifyOptions()
    if target is not None:
        target_options(options, target)  # a bad target is a usage error even for an unreadable model
    if sparsify is not None:
        sparsify.check()  # bad options are a usage error even when the model is unreadable too
    if calib is not None:
        calib.calib_options()
        _not_evaluation_data(calib.source, verify.inputs)
    output = files.check_output_path(output, [source] + ([calib.source] if calib and calib.source else []))
    if options.round_to == AUTO:
        prefetch_channel_block()  # answered while the model is read
    model = files.read_model(source)
    run = functools.partial(prune_model, model, options, verify, calib, sparsify=sparsify, target=target)
    result = run(defer_check=before_save is None)
    if external_data is None and files.uses_external_data(source):
        external_data = True  # keep the input's layout; past 2 GB save_model picks external data anyway
    if on_pruned is not None:
        on_pruned(result)
    if result.pending is not None:
        if _saved_when_checked(result, output, external_data):
            result.output = output
            return result
        # A group broke the ONNX Runtime run: prune again checking each trial, which declines that group.
        result = run()
        if on_pruned is not None:
            on_pruned(result)
    if before_save is not None:
        with tempfile.TemporaryDirectory(prefix="onnxprune-") as folder:
            before_save(
                files.save_model(
                    result.pruned,
                    Path(folder) / output.name,
                    external_data=external_data,
                    serialized=result.serialized,
                )  # fmt: skip
            )
    files.save_model(result.pruned, output, external_data=external_data, serialized=result.serialized)
    result.output = output
    return result


def _saved_when_checked(result: PruneResult, output: Path, external_data: bool | None) -> bool:
    """Write the file while the deferred ONNX Runtime check runs (ResNet-50: 0.1 s of a 1.2 s prune); it
    replaces ``output`` only once the check passed. False (nothing written) where a group broke the run."""
    try:
        files.save_model(
            result.pruned, output, external_data=external_data, serialized=result.serialized,
            confirm=result.confirm,
        )  # fmt: skip
    except OriginalRunError:
        raise  # the original fails on these inputs: no group is to blame
    except ValidationError:
        return False
    return True


def _not_evaluation_data(calib: str | Path | None, inputs: str | Path | None) -> None:
    """Never calibrate on what the user named as evaluation data: the fidelity would be fitted, not
    measured."""
    if calib is None or inputs is None:
        return
    if files.same_file(calib, inputs):
        raise UsageError(
            f"--calib and --inputs are the same file ({inputs}): never calibrate on evaluation data"
        )


def build_report(
    before: Counts, after: Counts, groups: list[ChannelGroup], options: PlanOptions
) -> dict[str, Any]:
    """The JSON report; params and MACs before and after are counted the same way, at the same shapes."""
    return {
        "options": options.to_dict(),
        "params": {"before": before.params, "after": after.params},
        "macs": {"before": before.macs, "after": after.macs},
        "counted_at": {name: list(dims) for name, dims in before.inputs.items()},
        "uncounted_nodes": sorted(set(before.unknown) | set(after.unknown)),
        "groups": [group_record(g) for g in groups if g.prunable and g.keep is not None],
        "declined": [
            {
                "group": g.id,
                "nodes": g.nodes,
                "channels": g.size,
                "reason": g.declines[0].reason,
                "node": g.declines[0].node,
                "all_reasons": sorted({str(d) for d in g.declines}),
            }
            for g in groups
            if not g.prunable and g.nodes
        ],
    }


def group_record(group: ChannelGroup) -> dict[str, Any]:
    keep = group.keep if group.keep is not None else np.arange(group.size)
    return {
        "id": group.id,
        "nodes": group.nodes,
        "producers": group.producers,
        "criterion": group.criterion,
        "channels_before": group.size,
        "channels_after": int(len(keep)),
        "kept": [int(i) for i in keep],
    }
