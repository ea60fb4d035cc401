"""Parameter and MAC counts of a model, for the report's before/after columns."""

from __future__ import annotations

import numpy as np
import onnx
import onnx_graphsurgeon as gs


def count_params(model: onnx.ModelProto) -> int:
    """Elements of every float initializer (weights, biases, BN vectors)."""
    total = 0
    for tensor in model.graph.initializer:
        if tensor.data_type in (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.DOUBLE):
            total += int(np.prod(tensor.dims, dtype=np.int64))
    return total


def count_macs(model: onnx.ModelProto) -> int:
    """Multiply-accumulates of Conv, ConvTranspose, Gemm and MatMul, from the model's inferred shapes."""
    shapes = _shapes(model)
    weights = {t.name: tuple(t.dims) for t in model.graph.initializer}
    total = 0
    for node in model.graph.node:
        if node.op_type in ("Conv", "ConvTranspose") and node.input[1] in weights:
            out = shapes.get(node.output[0])
            if out is not None:
                w = weights[node.input[1]]
                spatial_src = out if node.op_type == "Conv" else shapes.get(node.input[0])
                spatial = int(np.prod(spatial_src[2:], dtype=np.int64)) if spatial_src else 1
                total += int(np.prod(w, dtype=np.int64)) * spatial * max(int(out[0]), 1)
        elif node.op_type in ("Gemm", "MatMul") and len(node.input) > 1:
            a, b = shapes.get(node.input[0]) or (), weights.get(node.input[1]) or shapes.get(node.input[1])
            if a and b:
                total += int(np.prod(a, dtype=np.int64)) * int(
                    b[-1] if node.op_type == "MatMul" else _gemm_n(node, b)
                )
    return total


def _gemm_n(node: onnx.NodeProto, b: tuple) -> int:
    trans_b = next((a.i for a in node.attribute if a.name == "transB"), 0)
    return int(b[0] if trans_b else b[-1])


def _shapes(model: onnx.ModelProto) -> dict[str, tuple[int, ...]]:
    out = {}
    values = list(model.graph.value_info) + list(model.graph.input) + list(model.graph.output)
    for value in values:
        dims = value.type.tensor_type.shape.dim
        if dims and all(d.HasField("dim_value") for d in dims):
            out[value.name] = tuple(max(d.dim_value, 1) for d in dims)
        elif dims:
            out[value.name] = tuple(d.dim_value if d.HasField("dim_value") else 1 for d in dims)
    return out


def graph_stats(graph: gs.Graph) -> tuple[int, int]:
    """(params, MACs) of a normalised graph, counted as ``count_params`` / ``count_macs`` count a model:
    it saves exporting a copy of every weight just to count them."""
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
