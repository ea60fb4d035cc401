"""Parameter and MAC counts over a graphsurgeon graph from its own shapes (unknown dims count as 1): kept for
onnxprune.sparsity; the report, inspect, targets and sweep count with onnxprune.measure.counter instead."""

from __future__ import annotations

import numpy as np
import onnx
import onnx_graphsurgeon as gs


def model_stats(model: onnx.ModelProto) -> tuple[int, int]:
    """(params, MACs) of a model, shapes from its value_info; graphsurgeon imports weights lazily."""
    return graph_stats(gs.import_onnx(model))


def graph_stats(graph: gs.Graph) -> tuple[int, int]:
    """(params, MACs) of a graph: elements of every float parameter, and the multiply-accumulates of Conv,
    ConvTranspose, Gemm and MatMul from the tensors' shapes (unknown dims count as 1)."""
    params = sum(
        int(np.prod(t.shape, dtype=np.int64))  # shape, not values: reading values would load every weight
        for t in graph.tensors().values()
        if isinstance(t, gs.Constant) and np.dtype(t.dtype).kind == "f" and t.outputs
    )
    return params, sum(_node_macs(node) for node in graph.nodes)


def _node_macs(node: gs.Node) -> int:
    if len(node.inputs) < 2 or not isinstance(node.inputs[1], gs.Constant) or not node.outputs:
        return 0
    weight = tuple(node.inputs[1].shape)
    if node.op in ("Conv", "ConvTranspose"):
        source = node.outputs[0] if node.op == "Conv" else node.inputs[0]
        shape = [d if isinstance(d, int) and d > 0 else 1 for d in (source.shape or [])]
        spatial = int(np.prod(shape[2:], dtype=np.int64)) if shape else 1
        return int(np.prod(weight, dtype=np.int64)) * spatial * (shape[0] if shape else 1)
    if node.op in ("Gemm", "MatMul"):
        a = [d if isinstance(d, int) and d > 0 else 1 for d in (node.inputs[0].shape or [])]
        if not a:
            return 0
        trans_b = node.op == "Gemm" and int(node.attrs.get("transB", 0))
        n = weight[0] if trans_b else weight[-1]
        return int(np.prod(a, dtype=np.int64)) * int(n)
    return 0
