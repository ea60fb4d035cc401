"""Resize, Upsample and Pad: spatial ops that leave each channel on its own.

Followed only when they do not scale or pad the channel axis (opset 18 ``axes`` may leave it out of the
scales, sizes or pads altogether). Nearest and linear resizing of a constant channel gives the same
constant; padding a constant c with the pad value v keeps it constant only where c == v (edge, reflect and
wrap padding always do). A Resize ``sizes`` input spells out the channel count: it follows the kept count.
"""

from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from onnxprune.channels.analysis import Analysis, TensorState
from onnxprune.channels.edit import Rewrite
from onnxprune.rules.base import ChannelwiseRule, const, decline_node, rank, rule


def _text(node: gs.Node, name: str, default: str) -> str:
    value = node.attrs.get(name, default)
    return value.decode() if isinstance(value, bytes) else str(value)


def _channel_entry(node: gs.Node, r: int) -> int | None:
    """Where the channel axis sits in a Resize's scales or sizes: 1, or its place in ``axes`` (opset 18);
    None if ``axes`` leaves it out."""
    axes = node.attrs.get("axes")
    if axes is None:
        return 1
    axes = [int(a) % r for a in np.asarray(axes).reshape(-1)]
    return axes.index(1) if 1 in axes else None


@rule("Resize", "Upsample")
class ResizeRule(ChannelwiseRule):
    def removed_value(self, node: gs.Node, ctx: Analysis, state: TensorState) -> np.ndarray | None:
        value = state.removed_value
        if not self._keeps_channels(node, len(value)):
            decline_node(node, ctx, f"{node.op} that scales the channel axis or has run-time scales")
            return None
        keeps = _text(node, "mode", "nearest") in ("nearest", "linear", "bilinear")
        keeps &= _text(node, "coordinate_transformation_mode", "") != "tf_crop_and_resize"
        return value if keeps else np.where(value == 0, 0.0, np.nan)

    def _keeps_channels(self, node: gs.Node, n: int) -> bool:
        if "scales" in node.attrs:  # Upsample-7
            return float(node.attrs["scales"][1]) == 1.0
        at = _channel_entry(node, rank(node.inputs[0]) or 4)
        scales_at = 1 if node.op == "Upsample" else 2
        for i in (scales_at, 3):
            if i < len(node.inputs) and not node.inputs[i].is_empty():
                values = const(node.inputs[i])
                if values is None or (at is not None and values.size <= at):
                    return False
                return at is None or float(values.reshape(-1)[at]) == (1.0 if i == scales_at else n)
        return False

    def apply(self, node: gs.Node, rw: Rewrite) -> None:
        keep = rw.kept(node.inputs[0])
        if keep is None or node.op != "Resize" or len(node.inputs) < 4 or node.inputs[3].is_empty():
            return
        at = _channel_entry(node, rank(node.inputs[0]) or 4)
        if at is not None:
            sizes = np.array(const(node.inputs[3]), dtype=np.int64).reshape(-1)
            sizes[at] = len(keep)
            rw.set_param(node, 3, sizes)


@rule("Pad")
class PadRule(ChannelwiseRule):
    def removed_value(self, node: gs.Node, ctx: Analysis, state: TensorState) -> np.ndarray | None:
        r = rank(node.inputs[0])
        pads = self._pads(node, r)
        if pads is None or r is None:
            decline_node(node, ctx, "Pad with run-time pads or axes")
            return None
        if pads[0] or pads[1] or pads[r] or pads[r + 1]:
            decline_node(node, ctx, "Pad of the batch or channel axis")
            return None
        value = state.removed_value
        if _text(node, "mode", "constant") == "constant" and (pads > 0).any():
            fill = self._fill(node)
            value = np.where(value == fill, value, np.nan)
        return value

    def _pads(self, node: gs.Node, r: int | None) -> np.ndarray | None:
        """Begin and end pads of every axis, [2 * rank]."""
        pads = node.attrs.get("pads") if "pads" in node.attrs else const(node.inputs[1])
        has_axes = len(node.inputs) > 3 and not node.inputs[3].is_empty()
        if pads is None or r is None or (has_axes and const(node.inputs[3]) is None):
            return None
        pads = np.asarray(pads, dtype=np.int64).reshape(-1)
        if not has_axes:
            return pads if len(pads) == 2 * r else None
        axes = [int(a) % r for a in np.asarray(const(node.inputs[3])).reshape(-1)]
        full = np.zeros(2 * r, dtype=np.int64)
        full[axes], full[[a + r for a in axes]] = pads[: len(axes)], pads[len(axes) :]
        return full

    def _fill(self, node: gs.Node) -> float:
        """The pad value; nan (matches nothing) where it is computed at run time."""
        if "value" in node.attrs:
            return float(node.attrs["value"])
        if len(node.inputs) < 3 or node.inputs[2].is_empty():
            return 0.0
        fill = const(node.inputs[2])
        return float(fill.reshape(-1)[0]) if fill is not None and fill.size else float("nan")
