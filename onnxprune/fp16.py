"""FP16: an ONNX model whose weights and arithmetic are float16, for TensorRT's strongly typed builds.

TensorRT 11 builds strongly typed networks only (there is no FP16 builder flag): a tensor's ONNX type is the
precision it runs in, so an FP16 engine needs an FP16 ONNX. :func:`convert_to_fp16` writes one:

- every float32 tensor becomes float16, except the graph's inputs and outputs, which stay float32 behind
  ``Cast`` nodes, so that callers feed and read the same arrays as before;
- ops in ``keep_fp32_ops`` (:data:`FP32_OP_REASONS` says why each default is there) run in float32 with
  ``Cast`` nodes around them;
- float tensors computed from ``Shape``/``Size`` (sizes, scales) stay float32: float16 holds integers exactly
  only up to 2048;
- inputs whose schema takes float32 only (Resize's ``scales``), and Resize's ``roi`` (a crop box), stay
  float32. Integer tensors (shapes, Split sizes, Slice starts, Resize sizes) are never touched.

Weights are converted offline; a weight that float32 ops read too is kept twice rather than cast at run time.
Float ``Constant`` nodes become initializers. Subgraphs (If, Loop, Scan) stay float32, as do the outer tensors
they read. :func:`verify_fp16` runs both models on ONNX Runtime and fails unless
every output agrees (a cosine similarity of at least 0.999, and a guard on the scale-relative error:
``tolerances.REDUCED_PRECISION``, which says why). On the CPU, ONNX Runtime computes most
float16 ops in float32 behind casts of its own, so that check covers the graph and the rounding of weights
and activations, not float16 accumulation: the engine build's own comparison (``engine.build_engine``)
covers that.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

import numpy as np
import onnx
from onnx import external_data_helper, helper, numpy_helper

from onnxprune import verify
from onnxprune.errors import ValidationError, VerificationError, first_line
from onnxprune.inputs import make_inputs
from onnxprune.names import FreshNames
from onnxprune.runtime import require_onnxruntime
from onnxprune.tolerances import REDUCED_PRECISION
from onnxprune.verify import Comparison

log = logging.getLogger(__name__)

FLOAT = 1  # onnx.TensorProto.FLOAT, spelled out so that importing this module does not import onnx
FLOAT16 = 10  # onnx.TensorProto.FLOAT16
_FP16_MAX = float(np.finfo(np.float16).max)

FP32_OP_REASONS: Mapping[str, str] = MappingProxyType(
    {
        # float16 tops out at 65504: exp(11.1) overflows, squares overflow past 256, log(0) of a flushed
        # subnormal is -inf.
        "Exp": "overflows past exp(11.1)",
        "Pow": "squares and cubes overflow for modest inputs",
        "Log": "inputs below 6e-8 flush to zero, and log(0) is -inf",
        # Sums of many terms: with an 11-bit mantissa, once the running sum is large the small terms vanish.
        "ReduceSum": "long sums lose their small terms",
        "ReduceSumSquare": "long sums of squares overflow",
        "ReduceMean": "long sums lose their small terms",
        "ReduceL1": "long sums lose their small terms",
        "ReduceL2": "long sums of squares overflow",
        "ReduceLogSum": "long sums lose their small terms",
        "ReduceLogSumExp": "exponentials overflow",
        "ReduceProd": "products overflow or underflow",
        "CumSum": "running sums lose their small terms",
        # Normalisations compute a variance, a mean of squares, over a whole feature map or embedding;
        # TensorRT itself warns that LayerNormalization in FP16 may overflow.
        "LayerNormalization": "mean of squares over the embedding overflows",
        "GroupNormalization": "mean of squares over the group overflows",
        "InstanceNormalization": "mean of squares over the feature map overflows",
        "LpNormalization": "sum of squares overflows",
        "MeanVarianceNormalization": "mean of squares overflows",
        # Sums of exponentials: a half-precision sum drops the small probabilities.
        "Softmax": "sums exponentials",
        "LogSoftmax": "sums exponentials, then takes a log",
        # Indices and boxes: rounding to float16 creates ties (a different index wins) and moves
        # coordinates past 2048 by whole pixels.
        "TopK": "rounding creates ties, which change the indices",
        "ArgMax": "rounding creates ties, which change the index",
        "ArgMin": "rounding creates ties, which change the index",
        "NonMaxSuppression": "box coordinates and IoU thresholds lose precision",
        "RoiAlign": "box coordinates lose precision",
        "Range": "integers above 2048 are not all representable",
        # Sampling in half precision biases the distribution.
        "RandomNormal": "sampling in float16 biases the distribution",
        "RandomUniform": "sampling in float16 biases the distribution",
        "RandomNormalLike": "sampling in float16 biases the distribution",
        "RandomUniformLike": "sampling in float16 biases the distribution",
        "Multinomial": "probabilities lose precision",
    }
)
DEFAULT_FP32_OPS: frozenset[str] = frozenset(FP32_OP_REASONS)

# Inputs that carry coordinates, not data: Resize's roi is a crop box. (Its scales are float32 by schema: in
# float16, 4/3 would round and change the output size.)
_FP32_INPUTS = {("Resize", 1)}
_SHAPE_SOURCES = {"Shape", "Size"}


@dataclass
class _Plan:
    """What the conversion decided, before the graph is touched."""

    fp32_nodes: set[int]
    types: dict[str, int]  # every tensor's original element type, where known
    constants: set[str]
    produced: dict[str, int] = field(default_factory=dict)  # float tensor -> type its producer writes
    wanted: dict[tuple[int, int], int] = field(default_factory=dict)  # (node, input slot) -> type it reads
    const_wants: dict[str, set[int]] = field(default_factory=dict)  # constant -> types its readers want


def convert_to_fp16(
    model: onnx.ModelProto, keep_fp32_ops: Iterable[str] = DEFAULT_FP32_OPS
) -> onnx.ModelProto:
    """Returns a float16 copy of ``model`` with float32 inputs and outputs (see the module docstring).

    Args:
        model: a float32 model with its weights loaded (not weight-stripped, not external-data references).
        keep_fp32_ops: op types that run in float32, with ``Cast`` nodes around them.

    Raises:
        ValidationError: a weight has no data, or the result fails ``onnx.checker``.
    """
    converted = onnx.ModelProto()
    converted.CopyFrom(model)
    graph = converted.graph
    _constant_nodes_to_initializers(graph)
    plan = _plan(converted, frozenset(keep_fp32_ops))
    _rewrite(graph, plan)
    try:
        onnx.checker.check_model(converted, full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as err:
        raise ValidationError(f"the FP16 model fails onnx.checker: {first_line(err)}") from err
    return converted


def verify_fp16(
    fp32_model: onnx.ModelProto | str | Path,
    fp16_model: onnx.ModelProto | str | Path,
    *,
    shapes: Mapping[str, tuple[int, ...]] | None = None,
    seed: int = 0,
    iterations: int = 1,
    min_cosine: float | None = REDUCED_PRECISION.min_cosine,
    rtol: float = REDUCED_PRECISION.rtol,
    atol: float = REDUCED_PRECISION.atol,
) -> Comparison:
    """Runs both models on seeded random feeds (ONNX Runtime, CPU) and compares outputs.

    An output passes if its cosine similarity is at least ``min_cosine`` (the fidelity criterion) and
    ``max|a - b| <= atol + rtol * max|a|`` (``a`` the float32 output; by default 10 % of its scale: a guard
    against a local fault, since FP16 rounding alone reaches 4.5 % on deep nets). The top-1 agreement of
    class-score outputs is reported, not required: a near-tie of random inputs may flip. ``shapes`` sizes
    dynamic inputs (``input: (1, 3, 224, 224)``).

    Returns:
        The per-output metrics (max abs error, max relative error, cosine), all passed.

    Raises:
        VerificationError: an output disagrees; the message names the first one and why.
        CapabilityError: ONNX Runtime is not installed.
    """
    require_onnxruntime()  # onnxprune checks FP16 models with it

    header = verify.load_model_header(fp32_model) if isinstance(fp32_model, str | Path) else fp32_model
    feeds = make_inputs(header, iterations=iterations, seed=seed, shapes=shapes)
    comparison = verify.exactness(fp32_model, fp16_model, feeds=feeds, rtol=rtol, atol=atol)
    comparison.outputs = [verify.cosine_floor(output, min_cosine) for output in comparison.outputs]
    failed = next((output for output in comparison.outputs if not output.passed), None)
    if failed is not None:
        raise VerificationError(
            f"the FP16 model disagrees with the float32 one on output {failed.name!r}: {failed.reason}"
        )
    return comparison


# ---- deciding ----------------------------------------------------------------------------------------------


def _plan(model: onnx.ModelProto, keep: frozenset[str]) -> _Plan:
    graph = model.graph
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    plan = _Plan(
        fp32_nodes=set(),
        types=_element_types(model),
        # An initializer that is also a graph input is an overridable default: an input, not a weight.
        constants={init.name for init in graph.initializer} - {i.name for i in graph.input},
    )
    plan.fp32_nodes = _fp32_nodes(graph, keep, opset, plan)
    for index, node in enumerate(graph.node):
        _plan_node(index, node, opset, plan)
    for name in (o.name for o in graph.output):
        if name in plan.constants:
            plan.const_wants.setdefault(name, set()).add(FLOAT)
    for name in _subgraph_reads(graph) & plan.constants:
        plan.const_wants.setdefault(name, set()).add(FLOAT)
    return plan


def _fp32_nodes(graph: onnx.GraphProto, keep: frozenset[str], opset: int, plan: _Plan) -> set[int]:
    """Nodes that stay float32: listed ops, unknown ops, subgraph owners, shape arithmetic."""
    producers = {out: i for i, node in enumerate(graph.node) for out in node.output}
    fp32 = {producers[name] for name in _subgraph_reads(graph) if name in producers}
    shape_derived: set[str] = set()
    for index, node in enumerate(graph.node):
        inputs = [name for name in node.input if name]
        computed = [name for name in inputs if name not in plan.constants]
        if node.op_type in _SHAPE_SOURCES:
            shape_derived.update(node.output)
        elif computed and all(name in shape_derived for name in computed):
            # Sizes and scales computed in float: float16 would round 2049 to 2048.
            shape_derived.update(node.output)
            fp32.add(index)
        if (
            node.op_type in keep
            or _schema(node, opset) is None
            or any(attr.type in (5, 10) for attr in node.attribute)  # GRAPH, GRAPHS
            or any(name not in plan.types for name in inputs)  # unknown type: it may be float32
        ):
            fp32.add(index)
    return fp32


def _plan_node(index: int, node: onnx.NodeProto, opset: int, plan: _Plan) -> None:
    """Decides which type each float input of ``node`` reads and each float output is written in."""
    schema = None if index in plan.fp32_nodes else _schema(node, opset)
    fp16_vars: set[str] = set()
    for slot, name in enumerate(node.input):
        if not name or plan.types.get(name) != FLOAT:
            continue
        want = FLOAT
        if schema is not None and _slot_takes_fp16(schema, node.op_type, slot):
            fp16_vars.add(_formal(schema.inputs, slot).type_str)
            want = FLOAT16
        plan.wanted[index, slot] = want
        if name in plan.constants:
            plan.const_wants.setdefault(name, set()).add(want)
    for slot, name in enumerate(node.output):
        if name and plan.types.get(name) == FLOAT:
            fp16 = schema is not None and _output_follows_fp16(node, schema, slot, fp16_vars)
            plan.produced[name] = FLOAT16 if fp16 else FLOAT


def _slot_takes_fp16(schema: onnx.defs.OpSchema, op_type: str, slot: int) -> bool:
    if (op_type, slot) in _FP32_INPUTS:
        return False
    type_str = _formal(schema.inputs, slot).type_str
    allowed = {c.type_param_str: c.allowed_type_strs for c in schema.type_constraints}
    return "tensor(float16)" in allowed.get(type_str, [type_str])


def _output_follows_fp16(
    node: onnx.NodeProto, schema: onnx.defs.OpSchema, slot: int, fp16_vars: set[str]
) -> bool:
    # A Cast to float32 in a float16 graph casts to float16 instead (rewritten in _rewrite_cast).
    if node.op_type == "Cast":
        return any(a.name == "to" and a.i == FLOAT for a in node.attribute)
    # An output is float16 when its type variable is bound by a float16 input; otherwise an attribute
    # (ConstantOfShape's value, EyeLike's dtype) decides it, and it stays as it was.
    return _formal(schema.outputs, slot).type_str in fp16_vars


def _formal(
    params: Sequence[onnx.defs.OpSchema.FormalParameter], slot: int
) -> onnx.defs.OpSchema.FormalParameter:
    # A variadic parameter is the last one and takes every remaining slot.
    return params[min(slot, len(params) - 1)]


def _schema(node: onnx.NodeProto, opset: int) -> onnx.defs.OpSchema | None:
    if node.domain not in ("", "ai.onnx"):
        return None  # custom ops: their float16 support is unknown
    try:
        return onnx.defs.get_schema(node.op_type, opset, "")
    except onnx.defs.SchemaError:
        return None


def _element_types(model: onnx.ModelProto) -> dict[str, int]:
    try:
        inferred = onnx.shape_inference.infer_shapes(model)
    except onnx.shape_inference.InferenceError as err:
        raise ValidationError(f"shape inference fails on the model: {first_line(err)}") from err
    graph = inferred.graph
    types = {init.name: init.data_type for init in graph.initializer}
    for value in (*graph.input, *graph.value_info, *graph.output):
        if value.type.HasField("tensor_type") and value.type.tensor_type.elem_type:
            types[value.name] = value.type.tensor_type.elem_type
    return types


def _subgraph_reads(graph: onnx.GraphProto) -> set[str]:
    """Every name read inside the subgraphs of ``graph``'s nodes (their outer-scope reads among them)."""
    reads: set[str] = set()
    for node in graph.node:
        for attr in node.attribute:
            for sub in [attr.g] if attr.type == 5 else list(attr.graphs) if attr.type == 10 else []:
                reads.update(name for inner in sub.node for name in inner.input)
                reads |= _subgraph_reads(sub)
    return reads


# ---- rewriting ---------------------------------------------------------------------------------------------


def _rewrite(graph: onnx.GraphProto, plan: _Plan) -> None:
    names = _names_in(graph)
    const_names = _convert_initializers(graph, plan, names)
    # Graph outputs computed in float16 get an internal name; a Cast then writes the float32 output.
    outputs = {o.name for o in graph.output}
    internal = {
        name: names.make(f"{name}_fp16")
        for name, t in plan.produced.items()
        if t == FLOAT16 and name in outputs
    }
    casts = _casts(graph, plan, internal, names)
    nodes = [
        _cast(src, out, to)
        for src, pending in casts.items()
        if src not in plan.produced
        for to, out in pending
    ]
    for index, node in enumerate(graph.node):
        for slot, name in enumerate(node.input):
            want = plan.wanted.get((index, slot))
            if want is not None:
                node.input[slot] = _source(name, want, plan, const_names, casts, internal)
        if node.op_type == "Cast" and plan.produced.get(node.output[0]) == FLOAT16:
            _set_cast_to(node, FLOAT16)
        written = list(node.output)
        node.output[:] = [internal.get(name, name) for name in written]
        nodes.append(node)
        for name in written:
            nodes.extend(_cast(internal.get(name, name), out, to) for to, out in casts.get(name, []))
            if name in internal:
                nodes.append(_cast(internal[name], name, FLOAT))
    del graph.node[:]
    graph.node.extend(nodes)
    _retype_value_info(graph, plan, internal)


def _casts(
    graph: onnx.GraphProto, plan: _Plan, internal: dict[str, str], names: FreshNames
) -> dict[str, list[tuple[int, str]]]:
    """Run-time casts: computed tensor -> [(type, name of the cast copy)], one per type some reader wants."""
    casts: dict[str, list[tuple[int, str]]] = {}
    for (index, slot), want in plan.wanted.items():
        name = graph.node[index].input[slot]
        if name in plan.constants or _produced_type(name, plan) == want:
            continue
        if name in internal and want == FLOAT:
            continue  # the graph output's own Cast already makes the float32 copy
        pending = casts.setdefault(name, [])
        if all(to != want for to, _ in pending):
            pending.append((want, names.make(f"{name}_{'fp16' if want == FLOAT16 else 'fp32'}")))
    return casts


def _source(
    name: str,
    want: int,
    plan: _Plan,
    const_names: dict[tuple[str, int], str],
    casts: dict[str, list[tuple[int, str]]],
    internal: dict[str, str],
) -> str:
    """The tensor a reader that wants ``want`` reads instead of ``name``."""
    if name in plan.constants:
        return const_names[name, want]
    if _produced_type(name, plan) == want:
        return internal.get(name, name)
    if name in internal:
        return name
    return next(out for to, out in casts[name] if to == want)


def _produced_type(name: str, plan: _Plan) -> int:
    # Graph inputs are not produced by any node: they stay float32.
    return plan.produced.get(name, plan.types.get(name, FLOAT))


def _convert_initializers(
    graph: onnx.GraphProto, plan: _Plan, names: FreshNames
) -> dict[tuple[str, int], str]:
    """Converts weights offline; one read in both types is kept twice. Returns (name, type) -> name."""
    sources: dict[tuple[str, int], str] = {}
    for init in list(graph.initializer):
        wants = plan.const_wants.get(init.name, set())
        if init.data_type != FLOAT or not wants:
            continue
        sources[init.name, FLOAT] = init.name
        if FLOAT16 not in wants:
            continue
        half = _to_fp16(init)
        if FLOAT in wants:
            half.name = names.make(f"{init.name}_fp16")
            graph.initializer.append(half)
        else:
            init.CopyFrom(half)
        sources[init.name, FLOAT16] = half.name
    return sources


def _to_fp16(init: onnx.TensorProto) -> onnx.TensorProto:
    if external_data_helper.uses_external_data(init):
        raise ValidationError(f"weight {init.name!r} is in an external file that was not loaded")
    if not (init.raw_data or init.float_data) and int(np.prod(init.dims)) > 0:
        raise ValidationError(f"weight {init.name!r} has no data (a weight-stripped model?)")
    values = numpy_helper.to_array(init)
    overflow = int(np.count_nonzero(np.abs(values) > _FP16_MAX))
    if overflow:
        log.warning("%s: %d values beyond float16's range clipped to +-%g", init.name, overflow, _FP16_MAX)
    half = numpy_helper.from_array(np.clip(values, -_FP16_MAX, _FP16_MAX).astype(np.float16), init.name)
    half.doc_string = init.doc_string
    return half


def _cast(source: str, output: str, to: int) -> onnx.NodeProto:
    return helper.make_node("Cast", [source], [output], name=f"{output}/Cast", to=to)


def _set_cast_to(node: onnx.NodeProto, to: int) -> None:
    for attr in node.attribute:
        if attr.name == "to":
            attr.i = to


def _retype_value_info(graph: onnx.GraphProto, plan: _Plan, internal: dict[str, str]) -> None:
    # Stale float32 annotations would contradict the new types (onnx.checker's full check compares them).
    weights = {init.name: init.data_type for init in graph.initializer}
    for value in graph.value_info:
        now = weights.get(value.name, plan.produced.get(value.name))
        if now == FLOAT16 and value.name not in internal:
            value.type.tensor_type.elem_type = FLOAT16


def _constant_nodes_to_initializers(graph: onnx.GraphProto) -> None:
    """Float ``Constant`` nodes become initializers, so that weights are converted in one place."""
    kept = []
    for node in graph.node:
        value = _float_constant(node)
        if value is None:
            kept.append(node)
        else:
            graph.initializer.append(value)
    del graph.node[:]
    graph.node.extend(kept)


def _float_constant(node: onnx.NodeProto) -> onnx.TensorProto | None:
    if node.op_type != "Constant" or node.domain not in ("", "ai.onnx") or len(node.attribute) != 1:
        return None
    attr = node.attribute[0]
    if attr.name == "value" and attr.t.data_type == FLOAT:
        tensor = type(attr.t)()
        tensor.CopyFrom(attr.t)
        tensor.name = node.output[0]
        return tensor
    if attr.name in ("value_float", "value_floats"):
        values = attr.f if attr.name == "value_float" else list(attr.floats)
        return numpy_helper.from_array(np.array(values, dtype=np.float32), node.output[0])
    return None


def _names_in(graph: onnx.GraphProto) -> FreshNames:
    used = {init.name for init in graph.initializer}
    used.update(v.name for v in (*graph.input, *graph.output, *graph.value_info))
    used.update(name for node in graph.node for name in (*node.input, *node.output))
    return FreshNames(used)
