"""Gemm and MatMul with a constant weight: input features are a reduction axis, output features are new.

For ``Y = alpha * A @ B + beta * C`` (B transposed when transB), a removed input feature k that carries a
constant v adds ``alpha * v * B[k, :]`` to every row: always exact to fold, into C (Gemm) or into an Add
that is inserted after a MatMul. After a Flatten each channel owns H*W consecutive features.
"""

from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from onnxprune.channels.analysis import Analysis
from onnxprune.channels.edit import Rewrite
from onnxprune.rules.base import Rule, const, decline_node, rank, rule
from onnxprune.rules.conv import filter_norms


def _weight_kn(node: gs.Node) -> np.ndarray | None:
    """The weight as [in_features, out_features]."""
    b = const(node.inputs[1])
    if b is None or b.ndim != 2:
        return None
    return b.T if node.op == "Gemm" and int(node.attrs.get("transB", 0)) else b


@rule("Gemm", "MatMul")
class GemmRule(Rule):
    def propagate(self, node: gs.Node, ctx: Analysis) -> None:
        state = ctx.state(node.inputs[0])
        weight = _weight_kn(node)
        if state is None:
            return
        bad_c = node.op == "Gemm" and len(node.inputs) > 2 and const(node.inputs[2]) is None
        if weight is None or rank(node.inputs[0]) != 2 or int(node.attrs.get("transA", 0)) or bad_c:
            decline_node(node, ctx, f"{node.op} with a run-time weight, a transposed or non-2-D input")
            return
        ctx.member(state.map, node.name)
        ctx.consume(node.inputs[0], node.name, foldable=True)
        out_map = ctx.new_group(weight.shape[1])
        ctx.member(out_map, node.name, producer=True)
        bias = self._bias(node)
        ctx.add_filter_norm(out_map, lambda: filter_norms(weight.T, bias))
        ctx.produce(node.outputs[0], out_map, lambda: weight.T, bias)

    def _bias(self, node: gs.Node) -> np.ndarray | None:
        if node.op != "Gemm" or len(node.inputs) < 3 or node.inputs[2].is_empty():
            return None
        c = const(node.inputs[2])
        return None if c is None else c.reshape(-1) if c.size > 1 else None

    def apply(self, node: gs.Node, rw: Rewrite) -> None:
        keep_in, keep_out = rw.kept(node.inputs[0]), rw.kept(node.outputs[0])
        if keep_in is None and keep_out is None:
            return
        weight = _weight_kn(node)
        if weight is None:
            return  # declined in analysis: its channels were never cut
        shift = self._folded(node, rw, weight) if keep_in is not None else None
        if keep_in is not None:
            rebuilt = rw.rebuild(node.inputs[0])
            kept = weight[keep_in]
            if rebuilt is not None:  # x_removed ~ x_kept @ linear.T: its rows moved onto the kept ones
                removed, linear = rebuilt
                moved = linear.T @ weight[removed].astype(np.float64)
                kept = (kept.astype(np.float64) + moved).astype(weight.dtype)
            weight = kept
        if keep_out is not None:
            weight = weight[:, keep_out]
            shift = shift[keep_out] if shift is not None else None
        transposed = node.op == "Gemm" and int(node.attrs.get("transB", 0))
        rw.set_param(node, 1, weight.T if transposed else weight)
        if node.op == "Gemm":
            self._gemm_bias(node, rw, keep_out, shift)
        elif shift is not None:
            self._matmul_bias(node, rw, shift)

    def _folded(self, node: gs.Node, rw: Rewrite, weight: np.ndarray) -> np.ndarray | None:
        gone, values = rw.removed_values(node.inputs[0])
        if not (values != 0).any():
            return None
        alpha = float(node.attrs.get("alpha", 1.0)) if node.op == "Gemm" else 1.0
        return alpha * values @ weight[gone].astype(np.float64)

    def _gemm_bias(self, node: gs.Node, rw: Rewrite, keep_out, shift) -> None:
        has_c = len(node.inputs) > 2 and not node.inputs[2].is_empty()
        c = np.asarray(const(node.inputs[2]), dtype=np.float64) if has_c else None
        if c is not None and c.size > 1 and keep_out is not None:
            c = np.take(c, keep_out, axis=-1)
        if shift is not None:
            beta = float(node.attrs.get("beta", 1.0)) or 1.0
            c = (c if c is not None else 0.0) + shift / beta
        if c is None:
            return
        dtype = node.outputs[0].dtype or np.float32
        if has_c:
            rw.set_param(node, 2, np.asarray(c, dtype=dtype))
        else:
            node.attrs["beta"] = 1.0
            rw.add_param(node, f"{node.name or 'gemm'}_bias", np.asarray(c, dtype=dtype))

    def _matmul_bias(self, node: gs.Node, rw: Rewrite, shift: np.ndarray) -> None:
        """MatMul has no bias input: the folded constant goes into an Add right after it."""
        out = node.outputs[0]
        inner = gs.Variable(rw.fresh_name(out.name + "_nobias"), dtype=out.dtype)
        bias = gs.Constant(rw.fresh_name(f"{node.name or 'matmul'}_bias"), shift.astype(np.float32))
        node.outputs[0] = inner
        add = gs.Node(
            "Add", rw.fresh_name(f"{node.name or 'matmul'}_fold"), inputs=[inner, bias], outputs=[out]
        )
        rw.add_node(add)
