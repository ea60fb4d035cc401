"""Ops that read a tracked tensor without carrying its channels on: Shape and Size read only its extent,
Softmax-like ops over a non-channel axis keep channels apart.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import onnx_graphsurgeon as gs

from onnxprune.rules.base import Rule, decline_node, rank, rule

if TYPE_CHECKING:
    from onnxprune.channels.analysis import Analysis


@rule("Shape", "Size")
class ShapeRule(Rule):
    """A shape read at run time follows pruning by itself; only its consumers could hard-code C."""

    def propagate(self, node: gs.Node, ctx: Analysis) -> None:
        state = ctx.state(node.inputs[0])
        if state is not None:
            ctx.member(state.map, node.name)


@rule("Softmax", "LogSoftmax", "Hardmax")
class SoftmaxRule(Rule):
    def propagate(self, node: gs.Node, ctx: Analysis) -> None:
        state = ctx.state(node.inputs[0])
        r = rank(node.inputs[0])
        if state is None:
            return
        if r is None or int(node.attrs.get("axis", -1)) % r in (0, 1):
            decline_node(node, ctx, f"{node.op} over the channel axis mixes channels")
            return
        ctx.member(state.map, node.name)
        ctx.set_state(node.outputs[0], state.map, np.full(len(state.value), np.nan))
