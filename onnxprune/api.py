"""The Python API: inspect and prune, one call each, with everything the CLI prints in the result.

from onnxprune import api
result = api.prune("model.onnx", "model.pruned.onnx", api.PlanOptions(ratio=0.5))
print(result.report["macs"])
"""

from __future__ import annotations

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
from onnxprune.analyse import analyse
from onnxprune.channels import Analysis, ChannelGroup
from onnxprune.errors import OriginalRunError, ValidationError, VerificationError
from onnxprune.evidence import original_must_run, warnings_for
from onnxprune.graph import normalise, to_model
from onnxprune.importance import score_groups
from onnxprune.inputs import prepare_feeds
from onnxprune.isolate import Trial, decline_breaking_groups
from onnxprune.nothing import BN_HINT, folded_bn, refuse_nothing_to_prune
from onnxprune.options import Criterion, PlanOptions, Scope, VerifyOptions, choice
from onnxprune.plan import make_plan, unmatched_excludes
from onnxprune.rewrite import apply_plan, masked_reference, validate
from onnxprune.runtime import check_runs
from onnxprune.stats import graph_stats, model_stats

__all__ = [
    "Criterion",
    "Inspection",
    "PlanOptions",
    "PruneResult",
    "Scope",
    "VerifyOptions",
    "inspect",
    "prune",
    "prune_model",
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

    @functools.cached_property
    def masked(self) -> onnx.ModelProto:
        """The original with exactly the removed channels zeroed (see rewrite.masked_reference)."""
        return self.make_masked()


def inspect(source: str | Path | onnx.ModelProto, criterion: Criterion | str = Criterion.AUTO) -> Inspection:
    criterion = choice(Criterion, criterion, "--criterion")  # a usage error even for an unreadable model
    model = files.read_model(source) if not isinstance(source, onnx.ModelProto) else source
    graph = normalise(model)
    analysis = analyse(graph)
    score_groups(analysis.groups, criterion)
    params, macs = graph_stats(graph)
    hints = [BN_HINT] if folded_bn(graph) else []
    return Inspection(model, analysis, analysis.groups, params, macs, conv_bn_pairs(graph), hints)


def prune_model(
    model: onnx.ModelProto, options: PlanOptions, verify: VerifyOptions | None = None
) -> PruneResult:
    """Prune an in-memory model; the result's ``pruned`` has passed onnx.checker, shape inference and an
    ONNX Runtime run with the original's output shapes.

    A group whose pruning breaks those checks is found and declined with the reason (see
    :mod:`onnxprune.isolate`); the rest is pruned. With ``verify`` enabled the pruned model must match its
    masked reference (else VerificationError), and the report gains how far pruning moved each output from
    the original. A model with no prunable group is a ``NothingToPruneError``.
    """
    graph = normalise(model)
    before = graph_stats(graph)
    analysis = analyse(graph, exactness=options.threshold is not None)
    score_groups(analysis.groups, options.criterion)
    make_plan(analysis.groups, options, analysis)
    refuse_nothing_to_prune(analysis.groups, graph, options.criterion)
    feeds = _feeds(model, verify or VerifyOptions())
    trial = _attempt(model, graph, analysis, feeds)
    # The graph's arrays are a second copy of the weights, and the pruned model has its own now.
    del graph
    if trial.error is not None:
        retry = functools.partial(_fresh_attempt, model, analysis.groups, options, feeds)
        trial = decline_breaking_groups(analysis.groups, retry)
    analysis, pruned = trial.analysis, trial.pruned
    assert pruned is not None
    report = build_report(before, pruned, analysis.groups, options)
    report["warnings"] = [
        f"--exclude {p!r} matches no node of any channel group; nothing was excluded by it"
        for p in unmatched_excludes(analysis.groups, options.exclude)
    ]
    # Built on demand from the input, normalised again (same names): a copy of the graph kept just in case
    # would hold a second copy of every weight.
    masked = functools.partial(_masked, model, analysis)
    # The input itself is the original to compare with: the normalised graph computes the same.
    result = PruneResult(model, pruned, analysis.groups, report, masked)
    if verify is not None and verify.enabled:
        report["verify"] = verify_pruning(model, result.masked, pruned, verify, fed=feeds)
    return result


def _attempt(model: onnx.ModelProto, graph: gs.Graph, analysis: Analysis, feeds: Any) -> Trial:
    """Rewrite, validate, run: the pruned model, or the ValidationError a group's pruning caused."""
    try:
        pruned = validate(to_model(apply_plan(graph, analysis), model))
        check_runs(model, pruned, feeds=feeds)
    except OriginalRunError:
        raise  # the original fails on these inputs: no group is to blame
    except ValidationError as err:
        return Trial(analysis, None, err)
    return Trial(analysis, pruned, None)


def _fresh_attempt(
    model: onnx.ModelProto,
    planned: list[ChannelGroup],
    options: PlanOptions,
    feeds: Any,
    plan: dict[int, np.ndarray],
) -> Trial:
    """One trial of :func:`isolate.decline_breaking_groups`: a fresh copy pruned as ``plan`` says."""
    graph = normalise(model)
    analysis = analyse(graph, exactness=options.threshold is not None)
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
) -> dict[str, Any]:
    """Question 1: is the surgery exact (pruned vs masked reference)? Question 2: how far did it move?

    The result also says what was fed (``inputs``: shapes, random or the user's data) and ``warnings``:
    outputs that barely depend on the inputs, random data only. ``fed``: the ``inputs.Feeds`` already
    made from ``options``.
    """

    fed = fed or _feeds(original, options)
    with original_must_run(original, fed):
        candidate = verify.model_session(pruned, "candidate")  # one session of the pruned model for both
        exact = verify.exactness(masked, candidate, feeds=fed.feeds, progress=options.progress)
    if not exact.passed:
        raise _not_exact(exact, fed)
    change = verify.compare(original, candidate, feeds=fed.feeds, progress=options.progress)
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
        f"pruned model does not match its masked reference (the original with the removed channels zeroed) "
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
    before_save: Callable[[Path], object] | None = None,
) -> PruneResult:
    """Prune a file into another; nothing is written unless the pruned model validates (and verifies).

    ``external_data``: weights in a side file; ``None`` keeps the input's layout (and is forced past 2 GB).
    ``before_save(path)`` runs on a temporary copy of the pruned model before ``output`` is written (e.g.
    building a TensorRT plan): if it raises, nothing is written.
    """
    output = files.check_output_path(output, [source])
    result = prune_model(files.read_model(source), options, verify if verify is not None else VerifyOptions())
    if external_data is None and files.uses_external_data(source):
        external_data = True  # keep the input's layout; past 2 GB save_model picks external data anyway
    if before_save is not None:
        with tempfile.TemporaryDirectory(prefix="onnxprune-") as folder:
            before_save(
                files.save_model(result.pruned, Path(folder) / output.name, external_data=external_data)
            )
    files.save_model(result.pruned, output, external_data=external_data)
    result.output = output
    return result


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
