"""Layers to calibrate: each Conv/Gemm/MatMul of the pruned model whose input lost channels, matched by node
name with the original layer, with what its weights and geometry are (or why it cannot be refitted)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import numpy_helper

CONSUMERS = ("Conv", "Gemm", "MatMul")


@dataclass
class Layer:
    """One consumer: the pruned node, the original's output it must reproduce, and its parameters."""

    name: str
    op: str
    input: str  # data input in the pruned model
    output: str  # the pruned node's output (after ``offset`` where there is one)
    target: str  # the original node's output
    kept_out: np.ndarray | None  # positions of the original output that the pruned layer keeps; None: all
    weight: np.ndarray  # as the refit sees it: [K, C/group, *kernel] (Conv), [K, C] (Gemm, MatMul)
    bias: np.ndarray | None
    group: int = 1
    kernel: tuple[int, ...] = ()
    strides: tuple[int, ...] = ()
    dilations: tuple[int, ...] = ()
    pads: tuple[int, ...] = ()  # begin..., end...
    bias_name: str | None = None  # an Add's constant after a MatMul that serves as its bias
    offset: np.ndarray | None = None  # a constant [K, H, W] map added after the node (data-free folding)
    decline: str | None = None  # why it cannot be refitted (its bias can still be corrected)
    notes: list[str] = field(default_factory=list)


def find_layers(
    original: onnx.ModelProto, pruned: onnx.ModelProto, kept: dict[str, np.ndarray]
) -> list[Layer]:
    """Consumers whose input lost channels (``kept``: tensor name -> kept positions, for cut tensors only)."""
    originals = {n.name: n for n in original.graph.node if n.name}
    inits = {t.name: t for t in pruned.graph.initializer}
    users = _users(pruned.graph)
    producers = {name: n for n in pruned.graph.node for name in n.output}
    earlier = (
        {t.name: t for t in original.graph.initializer},
        {name: n for n in original.graph.node for name in n.output},
    )
    layers = []
    for node in pruned.graph.node:
        if node.op_type not in CONSUMERS or not node.input or node.input[0] not in kept:
            continue
        source = originals.get(node.name)
        if source is None or source.op_type != node.op_type:
            continue  # renamed or new: nothing in the original to reproduce
        layers.append(_layer(node, source, inits, users, kept, originals, producers, earlier))
    return layers


def _users(graph: onnx.GraphProto) -> dict[str, list[onnx.NodeProto]]:
    users: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        for name in node.input:
            users.setdefault(name, []).append(node)
    return users


def _layer(
    node: onnx.NodeProto,
    source: onnx.NodeProto,
    inits: dict[str, onnx.TensorProto],
    users: dict[str, list[onnx.NodeProto]],
    kept: dict[str, np.ndarray],
    originals: dict[str, onnx.NodeProto],
    producers: dict[str, onnx.NodeProto],
    earlier: tuple[dict[str, onnx.TensorProto], dict[str, onnx.NodeProto]],
) -> Layer:
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
    weight = _const(inits, node.input[1]) if len(node.input) > 1 else None
    bias = _const(inits, node.input[2]) if len(node.input) > 2 and node.input[2] else None
    out = node.output[0]
    layer = Layer(
        node.name, node.op_type, node.input[0], out, source.output[0], kept.get(out),
        weight if weight is not None else np.zeros((0, 0)), bias,
    )  # fmt: skip
    if weight is None:
        layer.decline = "its weight is computed at run time, not a constant"
    elif node.op_type == "Conv":
        _conv_geometry(layer, attrs, weight)
    elif node.op_type == "Gemm":
        _gemm(layer, attrs, weight, bias)
    else:
        _matmul(layer, weight, inits, users, originals)
    if layer.decline is None:
        _offset(layer, inits, users, originals, producers, earlier)
    if layer.kept_out is None:
        # A folded bias map took over the Conv's output name: the analysis knows the channels by it.
        layer.kept_out = kept.get(layer.output)
    return layer


def _const(inits: dict[str, onnx.TensorProto], name: str) -> np.ndarray | None:
    return numpy_helper.to_array(inits[name]).astype(np.float64) if name in inits else None


def _conv_geometry(layer: Layer, attrs: dict, weight: np.ndarray) -> None:
    spatial = weight.ndim - 2
    if spatial != 2:
        layer.decline = f"{spatial}-d Conv (the refit samples 2-d positions only)"
        return
    layer.kernel = tuple(weight.shape[2:])
    layer.group = int(attrs.get("group", 1))
    layer.strides = tuple(attrs.get("strides", [1, 1]))
    layer.dilations = tuple(attrs.get("dilations", [1, 1]))
    layer.pads = tuple(attrs.get("pads", [0, 0, 0, 0]))
    auto_pad = attrs.get("auto_pad", b"NOTSET")
    auto_pad = auto_pad.decode() if isinstance(auto_pad, bytes) else auto_pad
    if auto_pad not in ("NOTSET", "VALID"):
        layer.decline = f"auto_pad {auto_pad} (give explicit pads)"
    elif auto_pad == "VALID":
        layer.pads = (0, 0, 0, 0)


def _gemm(layer: Layer, attrs: dict, weight: np.ndarray, bias: np.ndarray | None) -> None:
    if attrs.get("transA", 0):
        layer.decline = "Gemm with transA"
        return
    alpha, beta = float(attrs.get("alpha", 1.0)), float(attrs.get("beta", 1.0))
    layer.weight = alpha * (weight if attrs.get("transB", 0) else weight.T)
    if bias is not None:
        k = layer.weight.shape[0]
        if bias.size not in (1, k):
            layer.decline = f"Gemm bias of shape {bias.shape} (not per output)"
            return
        layer.bias = np.broadcast_to(beta * bias.reshape(-1), (k,)).copy()


def _matmul(
    layer: Layer,
    weight: np.ndarray,
    inits: dict[str, onnx.TensorProto],
    users: dict[str, list],
    originals: dict[str, onnx.NodeProto],
) -> None:
    if weight.ndim != 2:
        layer.decline = f"MatMul with a {weight.ndim}-d weight"
        return
    layer.weight = weight.T
    after = users.get(layer.output, [])
    # MatMul + Add(constant [K]) is how exporters write a Linear: that Add's constant is its bias.
    if len(after) == 1 and after[0].op_type == "Add":
        other = [n for n in after[0].input if n != layer.output]
        bias = _const(inits, other[0]) if len(other) == 1 else None
        source = originals.get(after[0].name)
        if bias is not None and bias.size == weight.shape[1] and bias.ndim <= 2 and source is not None:
            layer.bias, layer.bias_name = bias.reshape(-1), other[0]
            layer.output, layer.target = after[0].output[0], source.output[0]


def _offset(
    layer: Layer,
    inits: dict[str, onnx.TensorProto],
    users: dict[str, list],
    originals: dict[str, onnx.NodeProto],
    producers: dict[str, onnx.NodeProto],
    earlier: tuple[dict[str, onnx.TensorProto], dict[str, onnx.NodeProto]],
) -> None:
    """A constant map that pruning added right after a Conv (data-free folding of a padded constant): kept
    as is, and the refit fits what is left, so the map's exact border values survive. Where the Add is an
    earlier prune's (in the original too), this prune's offset is only what it summed into that map
    (rules/padmap.py): the original's Conv output, the target, comes before the earlier map."""
    if layer.op != "Conv":
        return
    after = users.get(layer.output, [])
    if len(after) != 1 or after[0].op_type != "Add":
        return
    other = [n for n in after[0].input if n != layer.output]
    value = _folded(other[0], inits, producers) if len(other) == 1 else None
    if value is None or value.ndim < 3 or value.shape[-3] != layer.weight.shape[0]:
        return
    value = value.reshape(value.shape[-3:])
    if after[0].name not in originals:
        layer.offset, layer.output = value, after[0].output[0]
        return
    old = _folded(other[0], *earlier)
    if old is None or old.ndim < 3:
        return
    old = old.reshape(old.shape[-3:])
    old = old[layer.kept_out] if layer.kept_out is not None else old
    if old.shape == value.shape and not np.array_equal(old, value):
        layer.offset = value - old


def _folded(
    name: str, inits: dict[str, onnx.TensorProto], producers: dict[str, onnx.NodeProto], depth: int = 0
) -> np.ndarray | None:
    """A constant, or a MatMul of constants: a bias map stored as its factors (rules/padmap.py) is
    ``rows @ taps @ cols``, which ONNX Runtime folds at load and the refit must see as the map it is."""
    if name in inits:
        return _const(inits, name)
    node = producers.get(name)
    if node is None or node.op_type != "MatMul" or depth > 4:
        return None
    a, b = (_folded(n, inits, producers, depth + 1) for n in node.input)
    return None if a is None or b is None else np.matmul(a, b)
