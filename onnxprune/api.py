"""The Python API: inspect and prune, one call each, with everything the CLI prints in the result.

from onnxprune import api
result = api.prune("model.onnx", "model.pruned.onnx", api.PlanOptions(ratio=0.5))
print(result.report["macs"])
sparse = api.sparsify("model.onnx", "model.24.onnx", api.SparsifyOptions())   # 2:4 (onnxprune.sparsity)

Each call validates its own options and then drives the one pipeline (onnxprune.pipeline): prepare the
model, choose a plan (a ratio, threshold or replay by onnxprune.planning; a target by onnxprune.search),
execute it.
"""

from __future__ import annotations

import contextlib
import functools
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from onnxprune import files
from onnxprune.analyse import analyse
from onnxprune.channels import Analysis, ChannelGroup, Plan
from onnxprune.compensate.calibrate import CalibOptions
from onnxprune.data import check_samples, load_calibration, take
from onnxprune.errors import OriginalRunError, UsageError, ValidationError
from onnxprune.graph import normalise
from onnxprune.importance import score_groups, slimming_warning
from onnxprune.inputs import shapes_from_data
from onnxprune.measure.counter import Counts, count
from onnxprune.measure.estimate import Estimator
from onnxprune.measure.layout import prefetch as prefetch_channel_block
from onnxprune.nothing import bn_hint, refuse_nothing_to_prune
from onnxprune.options import (
    AUTO,
    ON_DATA,
    Allocate,
    Compensate,
    Criterion,
    Device,
    PlanOptions,
    Scope,
    VerifyOptions,
    choice,
)
from onnxprune.pipeline import Execution, Prepared, PruneResult, execute, prepare
from onnxprune.pipeline.verification import feeds_for
from onnxprune.planning import make_plan
from onnxprune.search.budget import Budget, SearchData, SearchOptions, measure, moments_for
from onnxprune.search.sensitivity import Sensitivity, SensitivityOptions
from onnxprune.search.targets import Target, target_options, target_record
from onnxprune.search.workers import Workers
from onnxprune.sparsity import SparsifyOptions, SparsifyResult, sparsify

__all__ = [
    "Allocate",
    "CalibRequest",
    "Criterion",
    "Inspection",
    "Plan",
    "PlanOptions",
    "PruneResult",
    "Scope",
    "SearchOptions",
    "Sensitivity",
    "SensitivityOptions",
    "SparsifyOptions",
    "SparsifyResult",
    "Target",
    "VerifyOptions",
    "inspect",
    "prune",
    "prune_model",
    "sensitivity",
    "sparsify",
]


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
    compensate: str = "bn"  # the mode whose must-keep channels the groups hold


def conv_bn_pairs(graph: gs.Graph) -> list[dict[str, str]]:
    """Every BatchNormalization with the node that feeds it: a Conv for the classic pair, else what it is."""
    pairs = []
    for node in graph.nodes:
        if node.op == "BatchNormalization" and node.inputs and node.inputs[0].inputs:
            producer = node.inputs[0].inputs[0]
            pairs.append({"bn": node.name, "producer": producer.name, "producer_op": producer.op})
    return pairs


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
    mode = PlanOptions(ratio=0.0, compensate=compensate).resolved(calibrating=False).analysis_mode
    analysis = analyse(graph, compensate=mode)
    score_groups(analysis.groups, criterion)
    counts = count(model, shapes)
    found = Inspection(model, analysis, analysis.groups, counts.params, counts.macs, conv_bn_pairs(graph))
    found.compensate = str(compensate.value)
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
    search: SearchOptions | None = None,
    finetune_minutes: float | None = None,
    workers: Workers | None = None,
) -> PruneResult:
    """Prune an in-memory model; the result's ``pruned`` has passed onnx.checker, shape inference and an
    ONNX Runtime run with the original's output shapes.

    ``finetune_minutes``: then distil the pruned model from the original on ``calib``'s samples for at
    most that long (the ``train`` extra; the held-out tail judges the result, never trained on).

    ``defer_check`` (without verification, calibration or 2:4 only, which need the check's answer first):
    the ONNX Runtime run goes on in a thread; ``result.confirm()`` waits for it and raises its
    ValidationError (the groups to blame are then not isolated: prune again without deferring).

    With ``verify`` enabled the pruned model must match its masked reference (else VerificationError), and
    the report gains how far pruning moved each output from the original. ``sparsify``: then make the
    pruned model's eligible layers 2:4 (``report["sparsity"]``; nothing eligible is reported, not an error),
    by SparseGPT on ``calib``'s samples when given. With a ``target`` (a fraction of the original's MACs,
    params or latency) the plan is searched for, its budget allocated as ``options.allocate`` says (by
    measured sensitivity where data is given: ``calib``'s samples or ``search.eval_cmd``); the report says
    what was asked, what was reached and how it was allocated. MACs and parameters are counted before and
    after at the verification's shapes. A group whose pruning breaks those checks is found and declined
    with the reason (see :mod:`onnxprune.pipeline.isolate`); the rest is pruned. A model with no prunable
    group is a ``NothingToPruneError``; one whose outputs lose the original's behaviour on the user's data
    (the verdict, ``verify.min_fidelity``) a ``FidelityError``. A target's sensitivity scan runs on
    ``workers`` (open ones; None: those ``search`` asks for, opened here for the call).
    """
    search = search or SearchOptions(progress=verify is not None and verify.progress)
    if workers is not None or not _searching(target, calib, search):
        return _prune_model(model, options, verify, calib, sparsify, target, defer_check, search, workers,
                            finetune_minutes)  # fmt: skip
    with search.open_workers() as opened:
        return _prune_model(model, options, verify, calib, sparsify, target, defer_check, search, opened,
                            finetune_minutes)  # fmt: skip


def _searching(target: Target | None, calib: CalibRequest | None, search: SearchOptions) -> bool:
    """Whether a prune may measure sensitivity (a target, and data to measure on): it then needs workers."""
    return target is not None and (calib is not None or search.eval_cmd is not None)


def _prune_model(
    model: onnx.ModelProto,
    options: PlanOptions,
    verify: VerifyOptions | None,
    calib: CalibRequest | None,
    sparsify: SparsifyOptions | None,
    target: Target | None,
    defer_check: bool,
    search: SearchOptions,
    workers: Workers | None,
    finetune_minutes: float | None,
) -> PruneResult:
    options = options.resolved(calibrating=calib is not None)
    samples = _calibration_samples(model, options, calib)
    if target is not None:
        options = target_options(options, target)
    elif options.allocate == Allocate.SENSITIVITY:
        raise UsageError("--allocate sensitivity shares a target's budget: give a --target-*")
    calib_options = calib.calib_options() if calib is not None else None
    holdout = (calib_options or CalibOptions()).holdout
    verify, taken = _shapes_of_the_data(model, verify, samples)
    prepared = prepare(model, options, verify.shapes if verify is not None else {}, samples, holdout)
    steps = (calib_options or CalibOptions()).steps
    moments = moments_for(prepared, options, search.data(samples, holdout), steps)
    data = search.data(samples, holdout, moments, workers)
    plan, record, allocation = choose_plan(prepared, target, data)
    refuse_nothing_to_prune(prepared.groups, plan, prepared.graph, options.criterion)
    _check_finetune(finetune_minutes, samples)
    run = Execution(verify, samples, calib_options, sparsify, defer_check, record, moments, finetune_minutes)
    result = execute(prepared, plan, run)
    if allocation is not None:
        result.report["allocation"] = allocation
    if taken:
        result.report["warnings"].append(f"dynamic dims taken from the data given ({', '.join(taken)})")
    if data.eval_cmd is not None:
        command = data.eval_cmd
        scores = {"original": command.score(model), "pruned": command.score(result.pruned)}
        result.report["score"] = {"command": command.template, **scores}
    return result


def _shapes_of_the_data(
    model: onnx.ModelProto, verify: VerifyOptions | None, samples: dict[str, np.ndarray] | None
) -> tuple[VerifyOptions | None, list[str]]:
    """Dynamic dims with no ``--shape`` are taken from the user's data (calibration samples, else the
    ``--inputs`` file): MACs are counted, and random feeds made, at the size the model really runs at."""
    given = verify.shapes if verify is not None else {}
    data = samples
    if data is None and verify is not None and verify.inputs is not None:
        data = feeds_for(model, verify).feeds[0]
    shapes, taken = shapes_from_data(model, given, data)
    if not taken:
        return verify, []
    return replace(verify or VerifyOptions(enabled=False), shapes=shapes), taken


def _check_finetune(minutes: float | None, samples: dict[str, np.ndarray] | None) -> None:
    """Fine-tuning distils on the calibration data and needs PyTorch: both before any training."""
    if minutes is None:
        return
    if not (minutes > 0):
        raise UsageError(f"--finetune-minutes must be above 0, got {minutes}")
    if samples is None:
        raise UsageError("--finetune-minutes distils on calibration data: pass --calib DATA")
    from onnxprune.train.run import require_torch

    require_torch()


def choose_plan(
    prepared: Prepared, target: Target | None, data: SearchData
) -> tuple[Plan, Callable[[Counts, Counts], dict[str, Any]] | None, dict[str, Any] | None]:
    """The plan of the prepared model's options, or the one a target's budget allocates (with the record
    of what it reached, and how it was allocated, for the report)."""
    if target is None:
        return make_plan(prepared.groups, prepared.options, prepared.analysis), None, None
    reached, plan, allocation = Budget(prepared, data).plan(target)
    return plan, functools.partial(target_record, reached, target), allocation


def sensitivity(
    source: str | Path | onnx.ModelProto,
    options: PlanOptions,
    calib: CalibRequest | None = None,
    search: SearchOptions | None = None,
    shapes: dict[str, tuple[int, ...]] | None = None,
) -> Sensitivity:
    """How much each prunable group alone degrades the outputs when cut to a few widths, measured on the
    calibration data's fitting part (or scored by ``search.eval_cmd``), with the compensation a prune with
    these options would use (calib: the mean and a linear rebuild of removed channels, what the refit
    recovers). The curves a ``--target-*`` prune allocates its budget by."""
    search = search or SearchOptions()
    if calib is None and search.eval_cmd is None:
        raise UsageError("sensitivity measures on data: pass --calib DATA or --eval-cmd")
    with search.open_workers() as workers:  # a cluster that cannot be reached: before any work
        model = files.read_model(source) if not isinstance(source, onnx.ModelProto) else source
        options = replace(
            options.resolved(calibrating=calib is not None), ratio=0.0, threshold=None, replay=None
        )
        samples = _calibration_samples(model, options, calib)
        holdout = (calib.calib_options() if calib is not None else CalibOptions()).holdout
        prepared = prepare(model, options, shapes or {}, samples, holdout)
        found, _ = measure(prepared, options, search.data(samples, holdout, workers=workers))
    return found


def _calibration_samples(
    model: onnx.ModelProto, options: PlanOptions, calib: CalibRequest | None
) -> dict[str, np.ndarray] | None:
    if options.criterion in ON_DATA and calib is None:
        raise UsageError(f"--criterion {options.criterion} ranks channels on calibration data: pass --calib")
    if options.compensate == "calib" and calib is None:
        raise UsageError("--compensate calib needs calibration data (--calib)")
    if calib is None:
        return None
    calib.calib_options()
    return calib.load(model)


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
    search: SearchOptions | None = None,
    finetune_minutes: float | None = None,
) -> PruneResult:
    """Prune a file into another; nothing is written unless the pruned model validates (and verifies).

    ``external_data``: weights in a side file; ``None`` keeps the input's layout (and is forced past 2 GB).
    ``before_save(path)`` runs on a temporary copy of the pruned model before ``output`` is written (e.g.
    building a TensorRT plan): if it raises, nothing is written. ``on_pruned(result)`` runs once the result
    is known (its report final), before it is saved and while the deferred ONNX Runtime check still runs
    (the CLI renders its tables then); again for the new result where a failed check prunes again.
    """
    verify = verify if verify is not None else VerifyOptions()
    _check_request(options, verify, target, sparsify, calib)
    _check_finetune(finetune_minutes, {} if calib is not None else None)
    output = files.check_output_path(output, [source] + ([calib.source] if calib and calib.source else []))
    search = search or SearchOptions(progress=verify.progress)
    with contextlib.ExitStack() as stack:
        # A cluster that cannot be reached: one line before the model is read.
        workers = stack.enter_context(search.open_workers()) if _searching(target, calib, search) else None
        return _prune_file(source, output, options, verify, external_data, target, sparsify, calib,
                           before_save, on_pruned, search, workers, finetune_minutes)  # fmt: skip


def _prune_file(
    source: str | Path,
    output: Path,
    options: PlanOptions,
    verify: VerifyOptions,
    external_data: bool | None,
    target: Target | None,
    sparsify: SparsifyOptions | None,
    calib: CalibRequest | None,
    before_save: Callable[[Path], object] | None,
    on_pruned: Callable[[PruneResult], object] | None,
    search: SearchOptions,
    workers: Workers | None,
    finetune_minutes: float | None,
) -> PruneResult:
    if options.round_to == AUTO and options.device == Device.CPU:
        prefetch_channel_block()  # answered while the model is read
    model = files.read_model(source)
    run = functools.partial(
        prune_model, model, options, verify, calib, sparsify=sparsify, target=target, search=search,
        finetune_minutes=finetune_minutes, workers=workers,
    )  # fmt: skip
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
        _staged(result, output, external_data, before_save)
    files.save_model(result.pruned, output, external_data=external_data, serialized=result.serialized)
    result.output = output
    return result


def _check_request(
    options: PlanOptions,
    verify: VerifyOptions,
    target: Target | None,
    sparsify: SparsifyOptions | None,
    calib: CalibRequest | None,
) -> None:
    """Bad options are usage errors before the model is read, even for an unreadable model."""
    if target is not None:
        target_options(options, target)
    if sparsify is not None:
        sparsify.check()
    if calib is not None:
        calib.calib_options()
        _not_evaluation_data(calib.source, verify.inputs)


def _staged(
    result: PruneResult, output: Path, external_data: bool | None, before_save: Callable[[Path], object]
) -> None:
    """``before_save`` on a temporary copy of the pruned model (a TensorRT plan built from it, say)."""
    with tempfile.TemporaryDirectory(prefix="onnxprune-") as folder:
        staged = Path(folder) / output.name
        before_save(
            files.save_model(result.pruned, staged, external_data=external_data, serialized=result.serialized)
        )


def _saved_when_checked(result: PruneResult, output: Path, external_data: bool | None) -> bool:
    """Write the file while the deferred ONNX Runtime check runs (the write hides behind the check); it
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
