"""Resize, Upsample and Pad: spatial ops that leave each channel on its own.

Followed only when they do not scale or pad the channel axis. Nearest and linear resizing of a constant
channel gives the same constant; padding a non-zero constant with zeros does not.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import onnx_graphsurgeon as gs

from onnxprune.rules.base import Rule, const, decline_node, rule

if TYPE_CHECKING:
    from onnxprune.channels.analysis import Analysis
    from onnxprune.rewrite import Rewrite


def _mode(node: gs.Node) -> str:
    mode = node.attrs.get("mode", "constant" if node.op == "Pad" else "nearest")
    return mode.decode() if isinstance(mode, bytes) else str(mode)


@rule("Resize", "Upsample")
class ResizeRule(Rule):
    def propagate(self, node: gs.Node, ctx: Analysis) -> None:
        state = ctx.state(node.inputs[0])
        if state is None:
            return
        if not self._keeps_channels(node, len(state.value)):
            decline_node(node, ctx, f"{node.op} that scales the channel axis or has run-time scales")
            return
        value = (
            state.value
            if _mode(node) in ("nearest", "linear", "bilinear")
            else np.where(state.value == 0, 0, np.nan)
        )
        ctx.member(state.map, node.name)
        ctx.set_state(node.outputs[0], state.map, value, state.fresh & (value == 0))

    def _keeps_channels(self, node: gs.Node, n: int) -> bool:
        if "scales" in node.attrs:
            return float(node.attrs["scales"][1]) == 1.0
        scales_at = 1 if node.op == "Upsample" else 2
        for i in (scales_at, 3):
            if i < len(node.inputs) and not node.inputs[i].is_empty():
                values = const(node.inputs[i])
                if values is None or values.size < 2:
                    return False
                return float(values.reshape(-1)[1]) == (1.0 if i == scales_at else n)
        return False

    def apply(self, node: gs.Node, rw: Rewrite) -> None:
        keep = rw.kept(node.inputs[0])
        if keep is None or node.op != "Resize" or len(node.inputs) < 4 or node.inputs[3].is_empty():
            return
        sizes = np.array(const(node.inputs[3]), dtype=np.int64).reshape(-1)
        sizes[1] = len(keep)
        rw.set_param(node, 3, sizes)


@rule("Pad")
class PadRule(Rule):
    def propagate(self, node: gs.Node, ctx: Analysis) -> None:
        state = ctx.state(node.inputs[0])
        if state is None:
            return
        pads = node.attrs.get("pads") if "pads" in node.attrs else const(node.inputs[1])
        axes = const(node.inputs[3]) if len(node.inputs) > 3 and not node.inputs[3].is_empty() else None
        if pads is None or axes is not None or len(node.inputs) > 3 and axes is None:
            decline_node(node, ctx, "Pad with run-time pads or explicit axes")
            return
        pads = np.asarray(pads).reshape(-1)
        half = len(pads) // 2
        if pads[1] != 0 or pads[half + 1] != 0 or pads[0] != 0 or pads[half] != 0:
            decline_node(node, ctx, "Pad of the batch or channel axis")
            return
        constant = _mode(node) == "constant" and bool(pads.any())
        value = np.where(state.value == 0, 0.0, np.nan) if constant else state.value
        ctx.member(state.map, node.name)
        ctx.set_state(node.outputs[0], state.map, value, state.fresh & (value == 0))
