"""Analyse: walk the graph in topological order, run each node's rule, and group the channels they tie.

This is the driver above the rules; the context the rules write into is ``channels.analysis.Analysis``.
"""

from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from onnxprune.channels.analysis import WIDTH_CONSUMERS, Analysis
from onnxprune.rules import rule_for
from onnxprune.rules.base import channels

__all__ = ["analyse"]


def analyse(
    graph: gs.Graph, exactness: bool = False, compensate: str = "none", allow_approximate: bool = True
) -> Analysis:
    """Run every node's rule in topological order and group the channels they tie together.

    ``exactness`` adds a second pass over the original model's values, which marks the channels whose
    removal would change the outputs even with gamma 0 (``ChannelGroup.inexact``). ``compensate="bn"``:
    removed channels carry their BN's expected output, or where no BN scores them (folded into the
    producer) the producer's bias: a second walk, once the first has found the scoring BNs. Where a
    consumer cannot fold that, the channel is cut to 0 instead and the walk runs again (each run only adds
    such cuts, so this ends).
    ``allow_approximate=False`` (``--threshold``) also refuses estimates that are wrong even for gamma = 0.
    """
    disabled: dict[str, np.ndarray] = {}
    first = _walk(graph, None, compensate, disabled, allow_approximate)
    biased = first.unscored_biases() if first.compensating else {}
    if biased:
        first = _walk(graph, None, compensate, disabled, allow_approximate, biased)
    for _ in range(16):
        more = first.fallback_cuts() if first.compensating else {}
        if not more:
            break
        for name, cut in more.items():
            disabled[name] = disabled.get(name, np.zeros(len(cut), dtype=bool)) | cut
        first = _walk(graph, None, compensate, disabled, allow_approximate, biased)
    if exactness:
        original = _walk(graph, first)
        if len(original.groups) != len(first.groups):
            raise AssertionError("the two analysis passes disagree on the groups")
        for mine, theirs in zip(first.groups, original.groups, strict=True):
            mine.inexact = theirs.inexact
        first.exactness_known = True
    return first


def _channels_on_axis_1(node: gs.Node, ctx: Analysis) -> None:
    """Before an op that needs channels on axis 1: an input whose channels a Transpose moved elsewhere (NHWC)
    is declined there, and the op sees its axis 1 as fixed channels (a Conv still makes new ones)."""
    for tensor in node.inputs:
        state = ctx.state(tensor)
        if state is None or state.axis == 1:
            continue
        reason = f"{node.op} of a tensor whose channels are on axis {state.axis}, not 1"
        ctx.decline(state.map, reason, node.name)
        size = channels(tensor)
        if size:
            ctx.set_state(tensor, ctx.fixed_map(size, reason, node.name))
        else:
            del ctx.states[tensor.name]


def _walk(
    graph: gs.Graph,
    first_pass: Analysis | None,
    compensate: str = "none",
    disabled: dict[str, np.ndarray] | None = None,
    allow_approximate: bool = True,
    biased: dict[str, np.ndarray] | None = None,
) -> Analysis:
    graph.toposort()
    outputs = [t.name for t in graph.outputs]
    ctx = Analysis(int(graph.opset), outputs, first_pass, compensate, disabled, allow_approximate, biased)
    for tensor in graph.inputs:
        size = channels(tensor)
        if size:
            ctx.set_state(tensor, ctx.fixed_map(size, f"channels of graph input {tensor.name!r}"))
    for node in graph.nodes:
        rule = rule_for(node)
        if not rule.any_axis:
            _channels_on_axis_1(node, ctx)
        rule.propagate(node, ctx)
        if node.op in WIDTH_CONSUMERS and node.inputs and node.outputs:
            # The widths these ops compute with: the planner aligns them (align.py) after the graph is gone.
            ctx.consumer_widths.extend((node.name, t.name) for t in (node.inputs[0], node.outputs[0]))
    for tensor in graph.outputs:
        state = ctx.state(tensor)
        if state is not None:
            producer = tensor.inputs[0].name if tensor.inputs else ""
            ctx.decline(state.map, f"reaches graph output {tensor.name!r}", producer)
    ctx.finish()
    return ctx
