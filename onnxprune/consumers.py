"""The weights of a channel's consumers, read by input channel: what the ranking criteria that weigh a
channel by who reads it (``activation.py``, ``redundancy.py``) share."""

from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

CONSUMERS = ("Conv", "Gemm", "MatMul")  # the ops whose constant weight reads the channels


def rows_by_input(node: gs.Node) -> np.ndarray | None:
    """The consumer's constant weight as ``[groups, input channels per group, the rest]`` in float64: for a
    Conv the rest is the group's output channels times the kernel taps; a Gemm or MatMul is one group whose
    rest is its outputs. None where the weight is not a constant or not laid out that way."""
    if len(node.inputs) < 2 or not isinstance(node.inputs[1], gs.Constant):
        return None
    w = np.asarray(node.inputs[1].values, dtype=np.float64)
    if node.op == "Conv":
        groups = int(node.attrs.get("group", 1))
        out, per = w.shape[0] // groups, w.shape[1]
        return w.reshape(groups, out, per, -1).transpose(0, 2, 1, 3).reshape(groups, per, -1)
    if w.ndim != 2 or (node.op == "Gemm" and node.attrs.get("transA", 0)):
        return None
    return (w.T if node.op == "Gemm" and node.attrs.get("transB", 0) else w)[None]


def input_norms(node: gs.Node) -> np.ndarray | None:
    """``||W[:, c]||`` per input position ``c`` of the consumer."""
    rows = rows_by_input(node)
    return None if rows is None else np.sqrt((rows**2).sum(axis=-1)).reshape(-1)


def input_gram(node: gs.Node) -> np.ndarray | None:
    """``W^T W`` over the consumer's input positions (summed over a kernel's taps; block-diagonal for a
    grouped Conv)."""
    rows = rows_by_input(node)
    if rows is None:
        return None
    groups, per = rows.shape[0], rows.shape[1]
    gram = np.zeros((groups * per, groups * per))
    for g in range(groups):
        gram[g * per : (g + 1) * per, g * per : (g + 1) * per] = rows[g] @ rows[g].T
    return gram
