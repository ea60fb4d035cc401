"""The Python API: inspect and prune, one call each, with everything the CLI prints in the result.

from onnxprune import api
result = api.prune("model.onnx", "model.pruned.onnx", api.PlanOptions(ratio=0.5))
print(result.report["macs"])
sparse = api.sparsify("model.onnx", "model.24.onnx", api.SparsifyOptions())   # 2:4 (onnxprune.sparsity)
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from onnxprune import files, verify
from onnxprune.activation import activation_scores
from onnxprune.analyse import analyse
from onnxprune.channels import Analysis, ChannelGroup
from onnxprune.channels.span import width
from onnxprune.compensate.calibrate import CalibOptions, calibrate
from onnxprune.compensate.summary import compensation_report
from onnxprune.data import load_calibration, split_holdout, static_batch, take
from onnxprune.errors import UsageError, VerificationError
from onnxprune.graph import normalise, to_model
from onnxprune.importance import score_groups, slimming_warning
from onnxprune.inputs import make_inputs
from onnxprune.options import Compensate, Criterion, PlanOptions, Scope, VerifyOptions, choice
from onnxprune.plan import make_plan
from onnxprune.rewrite import apply_plan, masked_reference, validate
from onnxprune.runtime import check_runs
from onnxprune.sparsity import SparsifyOptions, SparsifyResult, sparsify, sparsify_model
from onnxprune.stats import graph_stats, model_stats

__all__ = [
    "Criterion",
    "Inspection",
    "PlanOptions",
    "PruneResult",
    "Scope",
    "SparsifyOptions",
    "SparsifyResult",
    "VerifyOptions",
    "inspect",
    "prune",
    "prune_model",
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
    warnings: list[str] = field(default_factory=list)


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

    @functools.cached_property
    def masked(self) -> onnx.ModelProto:
        """The original with exactly the removed channels zeroed (see rewrite.masked_reference)."""
        return self.make_masked()


def inspect(
    source: str | Path | onnx.ModelProto,
    criterion: Criterion | str = Criterion.AUTO,
    compensate: Compensate | str = Compensate.BN,
) -> Inspection:
    """``compensate``: the mode whose must-keep channels to show (what ``prune`` would keep with it)."""
    criterion = choice(Criterion, criterion, "--criterion")  # a usage error even for an unreadable model
    compensate = choice(Compensate, compensate, "--compensate")
    model = files.read_model(source) if not isinstance(source, onnx.ModelProto) else source
    graph = normalise(model)
    analysis = analyse(graph, compensate="none" if compensate == Compensate.NONE else "bn")
    score_groups(analysis.groups, criterion)
    params, macs = graph_stats(graph)
    found = Inspection(model, analysis, analysis.groups, params, macs, conv_bn_pairs(graph))
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
        samples = self.samples
        if samples is None:
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
) -> PruneResult:
    """Prune an in-memory model; the result's ``pruned`` has passed onnx.checker and shape inference.

    With ``verify`` enabled the pruned model must match its masked reference (else VerificationError), and
    the report gains how far pruning moved each output from the original. ``sparsify``: then make the
    pruned model's eligible layers 2:4 (``report["sparsity"]``; nothing eligible is reported, not an error).
    """
    samples = _calibration_samples(model, options, calib)
    # Calibration starts from the data-free folding: it refits what that leaves.
    mode = "bn" if options.compensate == Compensate.CALIB else options.compensate
    graph = normalise(model)
    before = graph_stats(graph)
    # Compensation always runs the original-values pass: the report says which folds are exact.
    exactness = options.threshold is not None or mode == "bn"
    # A threshold promises exactness where it can: no estimate that is wrong even for gamma = 0.
    analysis = analyse(graph, exactness, mode, allow_approximate=options.threshold is None)
    activation = options.criterion == "activation"
    score_groups(analysis.groups, "auto" if activation else options.criterion)
    if activation and samples is not None:
        _activation_scores(model, graph, analysis, samples, calib)
    make_plan(analysis.groups, options, analysis)
    pruned = validate(to_model(apply_plan(graph, analysis), model))
    # The graph's arrays are a second copy of the weights, and the pruned model has its own now.
    del graph
    report = build_report(before, pruned, analysis.groups, options)
    report["compensation"] = compensation_report(analysis, options.compensate)
    # Built on demand from the input, normalised again (same names): a copy of the graph kept just in case
    # would hold a second copy of every weight.
    masked = functools.partial(_masked, model, analysis)
    # The input itself is the original to compare with: the normalised graph computes the same.
    result = PruneResult(model, pruned, analysis.groups, report, masked)
    if verify is not None and verify.enabled:
        report["verify"] = verify_pruning(model, result.masked, pruned, verify)
    else:
        check_runs(model, pruned)
    if options.compensate == Compensate.CALIB and calib is not None and samples is not None:
        _calibrate(result, analysis, samples, calib, verify)
    if sparsify is not None:
        sparse = sparsify_model(result.pruned, sparsify)
        result.pruned = sparse.model
        report["sparsity"] = sparse.report
    return result


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
    result.report["params"]["after"], result.report["macs"]["after"] = model_stats(result.pruned)
    if "verify" in result.report and checks is not None:
        feeds = make_inputs(
            result.original, iterations=checks.iterations, seed=checks.seed, shapes=checks.shapes,
            inputs_path=checks.inputs,
        )  # fmt: skip
        change = verify.compare(result.original, result.pruned, feeds=feeds, progress=checks.progress)
        result.report["verify"]["change_before_calibration"] = result.report["verify"]["change"]
        result.report["verify"]["change"] = change.to_dict()
    else:
        check_runs(result.original, result.pruned)


def kept_positions(analysis: Analysis) -> dict[str, np.ndarray]:
    """Tensor name -> kept positions of its channel axis, for every tensor that loses channels."""
    kept = {}
    for name, state in analysis.states.items():
        positions = analysis.kept_positions(state.map)
        if len(positions) < width(state.map):
            kept[name] = positions
    return kept


def _masked(model: onnx.ModelProto, analysis: Analysis) -> onnx.ModelProto:
    return masked_reference(normalise(model), analysis)


def verify_pruning(
    original: onnx.ModelProto, masked: onnx.ModelProto, pruned: onnx.ModelProto, options: VerifyOptions
) -> dict[str, Any]:
    """Question 1: is the surgery exact (pruned vs masked reference)? Question 2: how far did it move?"""
    feeds = make_inputs(
        original,
        iterations=options.iterations,
        seed=options.seed,
        shapes=options.shapes,
        inputs_path=options.inputs,
    )
    exact = verify.exactness(masked, pruned, feeds=feeds, progress=options.progress)
    if not exact.passed:
        worst = next(o for o in exact.outputs if not o.passed)
        detail = worst.reason or f"relative error {worst.max_rel_err:.3g} > {exact.rtol:g}"
        raise VerificationError(
            f"pruned model does not match its masked reference on output {worst.name!r}: {detail}"
        )
    change = verify.compare(original, pruned, feeds=feeds, progress=options.progress)
    return {"exact": exact.to_dict(), "change": change.to_dict()}


def prune(
    source: str | Path,
    output: str | Path,
    options: PlanOptions,
    *,
    verify: VerifyOptions | None = None,
    external_data: bool | None = None,
    sparsify: SparsifyOptions | None = None,
    calib: CalibRequest | None = None,
) -> PruneResult:
    """Prune a file into another; nothing is written unless the pruned model validates (and verifies).

    ``external_data``: weights in a side file; ``None`` keeps the input's layout (and is forced past 2 GB).
    """
    verify = verify if verify is not None else VerifyOptions()
    if sparsify is not None:
        sparsify.check()  # bad options are a usage error even when the model is unreadable too
    if calib is not None:
        calib.calib_options()
        _not_evaluation_data(calib.source, verify.inputs)
    output = files.check_output_path(output, [source] + ([calib.source] if calib and calib.source else []))
    result = prune_model(files.read_model(source), options, verify, calib, sparsify=sparsify)
    if external_data is None and files.uses_external_data(source):
        external_data = True  # keep the input's layout; past 2 GB save_model picks external data anyway
    files.save_model(result.pruned, output, external_data=external_data)
    result.output = output
    return result


def _not_evaluation_data(calib: str | Path | None, inputs: str | Path | None) -> None:
    """Never calibrate on what the user named as evaluation data: the fidelity would be fitted, not
    measured."""
    if calib is None or inputs is None:
        return
    a, b = Path(calib), Path(inputs)
    same = a.samefile(b) if a.exists() and b.exists() else a.resolve() == b.resolve()
    if same:
        raise UsageError(f"--calib and --inputs are the same file ({b}): never calibrate on evaluation data")


def build_report(
    before: tuple[int, int], pruned: onnx.ModelProto, groups: list[ChannelGroup], options: PlanOptions
) -> dict[str, Any]:
    after = model_stats(pruned)
    return {
        "options": options.to_dict(),
        "params": {"before": before[0], "after": after[0]},
        "macs": {"before": before[1], "after": after[1]},
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
