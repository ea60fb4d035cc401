"""Analyse: walk the graph in topological order, run each node's rule, and group the channels they tie.

This is the driver above the rules; the context the rules write into is ``channels.analysis.Analysis``.
"""

from __future__ import annotations

import onnx_graphsurgeon as gs

from onnxprune.channels.analysis import Analysis
from onnxprune.rules import rule_for
from onnxprune.rules.base import channels

__all__ = ["analyse"]


def analyse(graph: gs.Graph, exactness: bool = False) -> Analysis:
    """Run every node's rule in topological order and group the channels they tie together.

    ``exactness`` adds a second pass over the original model's values, which marks the channels whose
    removal would change the outputs even with gamma 0 (``ChannelGroup.inexact``).
    """
    first = _walk(graph, None)
    if exactness:
        original = _walk(graph, first)
        if len(original.groups) != len(first.groups):
            raise AssertionError("the two analysis passes disagree on the groups")
        for mine, theirs in zip(first.groups, original.groups, strict=True):
            mine.inexact = theirs.inexact
    return first


def _walk(graph: gs.Graph, first_pass: Analysis | None) -> Analysis:
    graph.toposort()
    ctx = Analysis(int(graph.opset), [t.name for t in graph.outputs], first_pass)
    for tensor in graph.inputs:
        size = channels(tensor)
        if size:
            ctx.set_state(tensor, ctx.fixed_map(size, f"channels of graph input {tensor.name!r}"))
    for node in graph.nodes:
        rule_for(node).propagate(node, ctx)
    for tensor in graph.outputs:
        state = ctx.state(tensor)
        if state is not None:
            producer = tensor.inputs[0].name if tensor.inputs else ""
            ctx.decline(state.map, f"reaches graph output {tensor.name!r}", producer)
    ctx.finish()
    return ctx
