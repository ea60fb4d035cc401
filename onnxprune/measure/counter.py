"""Count a model's parameters and multiply-accumulates at the input shapes it is actually fed.

Shapes come from onnx shape inference (with data propagation) on the model's skeleton, its graph inputs
bound to the fed shapes (``--shape`` or the defaults of ``inputs.py``), so a dynamic batch or image size
counts as what it is, never as 1. Where inference leaves a needed shape unknown (a Reshape target computed
from the data, a TF export's run-time shapes), one ONNX Runtime run on the fed shapes exposes exactly those
tensors. Nothing counts an unknown dim as 1: a node still unknown after that is listed in ``unknown``.

MACs per op (N: batch, every count from the weight and the tensor actually computed):
- Conv: ``N * prod(out spatial) * W.size`` (``W``: [C_out, C_in / group, k...]);
- ConvTranspose: ``N * prod(in spatial) * W.size``;
- Gemm and MatMul: ``prod(output dims) * K`` (``K``: the reduced dim), activations on both sides included.
Parameters: elements of every floating-point initializer (or ``Constant`` value) that a node reads.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx

from onnxprune.errors import CapabilityError
from onnxprune.files import without_weights
from onnxprune.graph import RANDOM_OPS
from onnxprune.inputs import make_inputs, resolve_shapes
from onnxprune.runtime import ort_session

Shape = tuple[int, ...]
COUNTED_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")
_FLOATS = {
    onnx.TensorProto.FLOAT,
    onnx.TensorProto.FLOAT16,
    onnx.TensorProto.BFLOAT16,
    onnx.TensorProto.DOUBLE,
}


@dataclass
class Counts:
    """What one model costs at the shapes in ``inputs``; ``nodes``: MACs per node, keyed by first output."""

    params: int
    macs: int
    inputs: dict[str, Shape]
    nodes: dict[str, int] = field(default_factory=dict)
    unknown: list[str] = field(default_factory=list)
    from_runtime: int = 0  # tensors whose shape came from the ONNX Runtime run

    def to_dict(self) -> dict[str, Any]:
        return {
            "params": self.params,
            "macs": self.macs,
            "inputs": {k: list(v) for k, v in self.inputs.items()},
            "unknown": self.unknown,
            "shapes_from_runtime": self.from_runtime,
        }


def count(model: onnx.ModelProto, shapes: Mapping[str, Shape] | None = None, runtime: bool = True) -> Counts:
    """Parameters and MACs of ``model`` fed ``shapes`` (full shapes by input name; defaults elsewhere).

    ``runtime``: run ONNX Runtime once for shapes inference cannot find (skipped without onnxruntime).
    """

    fed = resolve_shapes(model, shapes or {})
    known, constants = _inferred_shapes(model, fed)
    nodes = [n for n in model.graph.node if n.op_type in COUNTED_OPS and not _all_constant(n, constants)]
    missing = sorted({name for n in nodes for name in _needed(n) if not _static(known.get(name))})
    from_runtime = 0
    if missing and runtime:
        found = _runtime_shapes(model, fed, missing)
        from_runtime = len(found)
        known.update(found)
    per_node: dict[str, int] = {}
    unknown = []
    for node in nodes:
        macs = node_macs(node, known)
        if macs is None:
            unknown.append(node.name or node.output[0])
            continue
        per_node[node.output[0]] = macs
    params = sum(int(np.prod(dims, dtype=np.int64)) for dims in _float_params(model))
    return Counts(params, sum(per_node.values()), fed, per_node, unknown, from_runtime)


def node_macs(node: onnx.NodeProto, shapes: Mapping[str, Any]) -> int | None:
    """MACs of one Conv, ConvTranspose, Gemm or MatMul from its tensors' shapes; None where one is unknown."""
    found = [shapes.get(name) for name in _needed(node)]
    if not all(_static(s) for s in found):
        return None
    needed: list[tuple[int, ...]] = [tuple(s) for s in found if s is not None]
    if node.op_type == "Conv":
        weight, out = needed
        return int(out[0]) * _prod(out[2:]) * _prod(weight)
    if node.op_type == "ConvTranspose":
        weight, data = needed
        return int(data[0]) * _prod(data[2:]) * _prod(weight)
    a, b, out = needed
    if node.op_type == "Gemm":
        trans_a = _attr(node, "transA", 0)
        k = a[0] if trans_a else a[-1]
        return _prod(out) * int(k)
    k = a[-1] if len(a) > 0 else 1
    return _prod(out) * int(k)


def _needed(node: onnx.NodeProto) -> list[str]:
    """The tensors whose shapes a node's MACs need."""
    if node.op_type == "Conv":
        return [node.input[1], node.output[0]]
    if node.op_type == "ConvTranspose":
        return [node.input[1], node.input[0]]
    return [node.input[0], node.input[1], node.output[0]]


def _attr(node: onnx.NodeProto, name: str, default: int) -> int:
    return next((int(a.i) for a in node.attribute if a.name == name), default)


def _prod(dims: Iterable[int]) -> int:
    return int(np.prod(list(dims), dtype=np.int64))


def _static(shape: Any) -> bool:
    return shape is not None and all(isinstance(d, int) and d >= 0 for d in shape)


def _all_constant(node: onnx.NodeProto, constants: set[str]) -> bool:
    # A MatMul of two weights is folded by every runtime: it costs nothing per inference.
    return all(name in constants for name in node.input if name)


def _inferred_shapes(model: onnx.ModelProto, fed: Mapping[str, Shape]) -> tuple[dict[str, Any], set[str]]:
    """Shapes of every tensor onnx can infer with the inputs bound to ``fed``, and the constant names."""

    skeleton = without_weights(model)
    for value in skeleton.graph.input:
        if value.name in fed:
            dims = value.type.tensor_type.shape.dim
            del dims[:]
            for n in fed[value.name]:
                dims.add().dim_value = int(n)
    known: dict[str, Any] = {}
    constants = {t.name for t in model.graph.initializer}
    constants |= {o for n in model.graph.node if n.op_type == "Constant" for o in n.output}
    for node in model.graph.node:  # topological: what only constants compute is folded at load time
        if node.op_type not in RANDOM_OPS and node.input and all(i in constants for i in node.input if i):
            constants.update(node.output)
    for t in model.graph.initializer:
        known[t.name] = tuple(int(d) for d in t.dims)
    try:
        inferred = onnx.shape_inference.infer_shapes(skeleton, data_prop=True).graph
    except Exception:  # a model onnx cannot type still gets its shapes from the runtime
        inferred = skeleton.graph
    for value in [*inferred.input, *inferred.value_info, *inferred.output]:
        if value.type.HasField("tensor_type") and value.type.tensor_type.HasField("shape"):
            known.setdefault(value.name, tuple(_dim(d) for d in value.type.tensor_type.shape.dim))
    return known, constants


def _dim(dim: Any) -> int | None:
    return int(dim.dim_value) if dim.dim_value > 0 else None  # -1 or 0: a dynamic dim in older exports


def _runtime_shapes(model: onnx.ModelProto, fed: Mapping[str, Shape], names: list[str]) -> dict[str, Shape]:
    """Run the model once on seeded data of the fed shapes with ``names`` exposed; their shapes."""

    exposed = onnx.ModelProto()
    exposed.CopyFrom(model)
    outputs = {o.name for o in exposed.graph.output}
    exposed.graph.output.extend(onnx.ValueInfoProto(name=n) for n in names if n not in outputs)
    try:
        session = ort_session(exposed)
        feed = make_inputs(model, shapes=fed)[0]
        values = session.run(names, feed)
    except CapabilityError:
        return {}
    except Exception:  # the model does not run on random data: its shapes stay unknown (listed)
        return {}
    return {n: tuple(int(d) for d in v.shape) for n, v in zip(names, values, strict=True)}


def _float_params(model: onnx.ModelProto) -> Iterable[tuple[int, ...]]:
    used = {name for node in model.graph.node for name in node.input}
    for tensor in model.graph.initializer:
        if tensor.data_type in _FLOATS and tensor.name in used:
            yield tuple(tensor.dims)
    for node in model.graph.node:
        if node.op_type != "Constant" or not node.output or node.output[0] not in used:
            continue
        value = next((a.t for a in node.attribute if a.name == "value" and a.HasField("t")), None)
        if value is not None and value.data_type in _FLOATS:
            yield tuple(value.dims)
