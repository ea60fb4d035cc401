"""Concat. On the channel axis the output's map is the inputs' maps laid end to end, so each input keeps
its own groups at an offset. On any other axis every input carries the same channels: they are unified, and
a constant channel stays constant only where all inputs agree on its value.
"""

from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from onnxprune.channels.analysis import Analysis, TensorState
from onnxprune.rules.base import Rule, channels, decline_node, rank, rule


@rule("Concat")
class ConcatRule(Rule):
    def propagate(self, node: gs.Node, ctx: Analysis) -> None:
        r = rank(node.outputs[0])
        states = [self._state(t, node, ctx) for t in node.inputs]
        if all(s is None for s in states[: len(node.inputs)]):
            return
        if r is None or r < 2 or any(s is None for s in states):
            decline_node(node, ctx, "Concat of tensors whose channels are unknown")
            return
        axis = int(node.attrs.get("axis", 1)) % r
        known = [s for s in states if s is not None]
        if axis == 1:
            cmap = tuple(span for s in known for span in s.map)
            value = np.concatenate([s.removed_value for s in known])
            before = np.concatenate([s.before_first_bn for s in known])
        elif axis == 0 or any(s.map and s.map[0].repeat > 1 for s in known):
            decline_node(node, ctx, f"Concat on axis {axis} of flattened channels")
            return
        else:
            if not ctx.unify(node.name, [s.map for s in known]):
                return
            cmap = known[0].map
            stacked = np.stack([s.removed_value for s in known])
            value = np.where((stacked == stacked[0]).all(0), stacked[0], np.nan)
            before = np.logical_and.reduce([s.before_first_bn for s in known]) & (value == 0)
        ctx.member(cmap, node.name)
        ctx.set_state(node.outputs[0], cmap, value, before)

    def _state(self, tensor: gs.Tensor, node: gs.Node, ctx: Analysis) -> TensorState | None:
        """A constant input joins as channels nobody may remove."""
        state = ctx.state(tensor)
        if state is None and isinstance(tensor, gs.Constant) and channels(tensor):
            n = channels(tensor) or 0
            ctx.set_state(tensor, ctx.fixed_map(n, "Concat with a constant tensor", node.name))
            state = ctx.state(tensor)
        return state
