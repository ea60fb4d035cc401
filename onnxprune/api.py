"""The Python API: inspect and prune, one call each, with everything the CLI prints in the result.

from onnxprune import api
result = api.prune("model.onnx", "model.pruned.onnx", api.PlanOptions(ratio=0.5))
print(result.report["macs"])
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
from onnxprune.analyse import analyse
from onnxprune.channels import Analysis, ChannelGroup
from onnxprune.errors import VerificationError
from onnxprune.graph import normalise, to_model
from onnxprune.importance import score_groups
from onnxprune.inputs import make_inputs
from onnxprune.options import Criterion, PlanOptions, Scope, VerifyOptions, choice
from onnxprune.plan import make_plan
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
    return Inspection(model, analysis, analysis.groups, params, macs, conv_bn_pairs(graph))


def prune_model(
    model: onnx.ModelProto, options: PlanOptions, verify: VerifyOptions | None = None
) -> PruneResult:
    """Prune an in-memory model; the result's ``pruned`` has passed onnx.checker and shape inference.

    With ``verify`` enabled the pruned model must match its masked reference (else VerificationError), and
    the report gains how far pruning moved each output from the original.
    """
    graph = normalise(model)
    before = graph_stats(graph)
    analysis = analyse(graph, exactness=options.threshold is not None)
    score_groups(analysis.groups, options.criterion)
    make_plan(analysis.groups, options, analysis)
    pruned = validate(to_model(apply_plan(graph, analysis), model))
    # The graph's arrays are a second copy of the weights, and the pruned model has its own now.
    del graph
    report = build_report(before, pruned, analysis.groups, options)
    # Built on demand from the input, normalised again (same names): a copy of the graph kept just in case
    # would hold a second copy of every weight.
    masked = functools.partial(_masked, model, analysis)
    # The input itself is the original to compare with: the normalised graph computes the same.
    result = PruneResult(model, pruned, analysis.groups, report, masked)
    if verify is not None and verify.enabled:
        report["verify"] = verify_pruning(model, result.masked, pruned, verify)
    else:
        check_runs(model, pruned)
    return result


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
) -> PruneResult:
    """Prune a file into another; nothing is written unless the pruned model validates (and verifies).

    ``external_data``: weights in a side file; ``None`` keeps the input's layout (and is forced past 2 GB).
    """
    output = files.check_output_path(output, [source])
    result = prune_model(files.read_model(source), options, verify if verify is not None else VerifyOptions())
    if external_data is None and files.uses_external_data(source):
        external_data = True  # keep the input's layout; past 2 GB save_model picks external data anyway
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
