"""Rewrite: apply a plan by calling each rule's ``apply``, then clean up, re-infer shapes and validate.

The context the rules work through (copy-on-write parameters, fresh names) is ``channels.edit.Rewrite``;
this module is the driver above the rules.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import onnx
import onnx_graphsurgeon as gs
from onnx import numpy_helper

from onnxprune.channels.analysis import Analysis
from onnxprune.channels.edit import Rewrite
from onnxprune.channels.plan import Plan
from onnxprune.channels.rebuild import Rebuilt
from onnxprune.channels.span import width
from onnxprune.errors import ValidationError, first_line
from onnxprune.files import checkable, without_weights
from onnxprune.rules import rule_for

__all__ = [
    "Rewrite",
    "apply_plan",
    "kept_positions",
    "masked_reference",
    "uncompensated_reference",
    "validate",
]


def apply_plan(
    graph: gs.Graph, analysis: Analysis, plan: Plan, rebuilt: Mapping[str, Rebuilt] | None = None
) -> gs.Graph:
    """Slice every node to ``plan``, in place; ``rebuilt``: per cut tensor, what its consumers fold for
    the removed channels instead of the analysis' constants (channels/rebuild.py)."""
    rw = Rewrite(graph, analysis, plan, rebuilt)
    for node in list(graph.nodes):
        rule_for(node).apply(node, rw)
    io = {id(t) for t in graph.inputs + graph.outputs}
    for tensor in graph.tensors().values():
        if isinstance(tensor, gs.Variable) and id(tensor) not in io:
            tensor.shape = None  # stale after slicing; shape inference fills them in again
    graph.cleanup().toposort()
    return graph


def kept_positions(analysis: Analysis, plan: Plan) -> dict[str, np.ndarray]:
    """Tensor name -> kept positions of its channel axis, for every tensor that loses channels."""
    kept = {}
    for name, state in analysis.states.items():
        positions = analysis.kept_positions(state.map, plan)
        if len(positions) < width(state.map):
            kept[name] = positions
    return kept


def validate(model: onnx.ModelProto) -> onnx.ModelProto:
    """The checker's full check: strict shape inference, then the checker on the inferred model. Both run on
    the model's skeleton (weights stubbed out, see files.without_weights): only the weights' types and dims
    matter to them, and serialising a copy of every weight would double the memory. The inferred types are
    then set on the model, which is what gets written."""
    try:
        inferred = onnx.shape_inference.infer_shapes(
            without_weights(model), check_type=True, strict_mode=True
        )
        inferred_info = list(inferred.graph.value_info)
        onnx.checker.check_model(checkable(inferred))
    except Exception as exc:
        raise ValidationError(f"pruned model fails validation: {first_line(exc)}") from None
    del model.graph.value_info[:]
    model.graph.value_info.extend(inferred_info)
    return model


def masked_reference(graph: gs.Graph, analysis: Analysis, plan: Plan) -> onnx.ModelProto:
    """The original model with exactly the removed channels zeroed where they are cut, shapes unchanged.

    A Mul by a 0/1 mask goes after every source (a producer's output, a scoring BN's output). Downstream,
    the masked model computes what the removed channels become on their own (a BN's constant, a
    Sigmoid's 0.5), which is what the pruned model folds into its consumers' biases. So a correct surgery
    matches this model to float rounding, whatever was pruned.

    With data-free compensation the constants are estimates that the original ops would not compute from
    a point value, so the reference sets them where they are used instead (see _compensated_reference).
    """
    if analysis.compensating:
        return _compensated_reference(graph, analysis, plan)
    tensors = graph.tensors()
    for name, positions in analysis.sources:
        state = analysis.states[name]
        removed = positions.copy()
        removed[analysis.kept_positions(state.map, plan)] = False
        tensor = tensors.get(name)
        if not removed.any() or not isinstance(tensor, gs.Variable) or not tensor.inputs:
            continue
        rank = len(tensor.shape) if tensor.shape is not None else 4
        mask = (~removed).astype(np.float32).reshape((-1,) + (1,) * max(rank - 2, 0))
        producer = tensor.inputs[0]
        before = gs.Variable(f"{name}__unmasked", dtype=tensor.dtype)
        producer.outputs[producer.outputs.index(tensor)] = before
        mask_const = gs.Constant(f"{name}__mask", mask.astype(tensor.dtype or np.float32))
        graph.nodes.append(gs.Node("Mul", f"{name}__mask_mul", inputs=[before, mask_const], outputs=[tensor]))
    graph.cleanup().toposort()
    return gs.export_onnx(graph, do_type_check=False)


def uncompensated_reference(graph: gs.Graph, analysis: Analysis, plan: Plan) -> onnx.ModelProto:
    """The compensated reference with 0 in place of every folded constant: what the same plan computes
    without compensation (removed channels leave only through consumers, where plain removal means 0)."""
    return _compensated_reference(graph, analysis, plan, zero=True)


def _compensated_reference(
    graph: gs.Graph, analysis: Analysis, plan: Plan, zero: bool = False
) -> onnx.ModelProto:
    """The original model in which every consumer (a Conv, Gemm, MatMul reducing over channels) sees each
    removed channel replaced by exactly the constant the pruned model folds for it: ``x * mask + c``.

    Removed channels leave the pruned model only through such consumers (a channel that reaches a graph
    output is never removed), so a correct surgery matches this model to float rounding; how far the
    constants are from what the channels really carried is compensation's error, not the surgery's.
    """
    tensors = graph.tensors()
    for name, node_names in _readers(analysis).items():
        state, tensor = analysis.states[name], tensors.get(name)
        removed = np.ones(len(state.removed_value), dtype=bool)
        removed[analysis.kept_positions(state.map, plan)] = False
        if not removed.any() or not isinstance(tensor, gs.Variable):
            continue
        users = [n for n in tensor.outputs if n.name in node_names and n.inputs and n.inputs[0] is tensor]
        value = np.zeros_like(state.removed_value) if zero else state.removed_value
        filled = _filled(graph, tensor, removed, value)
        for node in users:
            node.inputs[0] = filled
    graph.cleanup().toposort()
    return gs.export_onnx(graph, do_type_check=False)


@dataclass(frozen=True)
class CutPoint:
    """Where a plan's removed channels leave the model: a consumer's channel input, replaced by
    ``x * mask + fill`` with ``mask`` and ``fill`` (graph inputs of ``shape``) set per plan; with a
    ``weight`` input too, ``x * mask + W (x * mask) + fill``: removed channels rebuilt from the kept ones
    by a linear map (a 1x1 convolution over the channel axis, ``weight_shape``)."""

    tensor: str
    mask: str
    fill: str
    shape: tuple[int, ...]
    weight: str | None = None
    weight_shape: tuple[int, ...] = ()


# Channel axes wider than this get no linear rebuild (a Flatten before a Gemm: C*H*W positions).
LINEAR_MAX_WIDTH = 2048


def reference_with_cut_inputs(
    graph: gs.Graph, analysis: Analysis, linear: bool = False
) -> tuple[onnx.ModelProto, list[CutPoint]]:
    """The original with a mask and a fill input at every consumer a plan can cut: one model, one ONNX
    Runtime session, computes what the pruned model of any plan computes (the compensated reference,
    with the plan's masks and constants fed instead of built in), without rewriting anything. ``linear``:
    each cut point also takes a weight rebuilding the removed channels from the kept ones, what a refit of
    the consumers can recover (the search's estimate of calibration)."""
    points = []
    tensors = graph.tensors()
    for name, node_names in _readers(analysis).items():
        tensor = tensors.get(name)
        if not isinstance(tensor, gs.Variable):
            continue
        users = [n for n in tensor.outputs if n.name in node_names and n.inputs and n.inputs[0] is tensor]
        if not users:
            continue
        rank = len(tensor.shape) if tensor.shape is not None else 4
        shape = (len(analysis.states[name].removed_value),) + (1,) * max(rank - 2, 0)
        dtype = tensor.dtype or np.float32
        mask = gs.Variable(f"{name}__cut_mask", dtype=dtype, shape=shape)
        fill = gs.Variable(f"{name}__cut_fill", dtype=dtype, shape=shape)
        weight = None
        if linear and shape[0] <= LINEAR_MAX_WIDTH:
            weight = _weight_input(name, rank, shape[0], dtype)
        filled = _mask_and_fill(graph, tensor, mask, fill, weight)
        for node in users:
            node.inputs[0] = filled
        graph.inputs.extend([mask, fill] + ([weight] if weight is not None else []))
        point = CutPoint(name, mask.name, fill.name, shape)
        if weight is not None:
            point = CutPoint(name, mask.name, fill.name, shape, weight.name, tuple(weight.shape))
        points.append(point)
    graph.cleanup().toposort()
    return gs.export_onnx(graph, do_type_check=False), points


def _weight_input(name: str, rank: int, width: int, dtype: object) -> gs.Variable:
    """[C, C, 1...] for a Conv over the channel axis (rank 3 and up); [C, C] for a MatMul (rank 2)."""
    shape = (width, width) + ((1,) * (rank - 2) if rank > 2 else ())
    return gs.Variable(f"{name}__cut_weight", dtype=dtype, shape=shape)


def _readers(analysis: Analysis) -> dict[str, set[str]]:
    """Tensor name -> the consumers (Conv, Gemm, MatMul reducing over its channels) that read it."""
    readers: dict[str, set[str]] = {}
    for name, node_name, _ in analysis.consumers:
        readers.setdefault(name, set()).add(node_name)
    return readers


def _mask_and_fill(
    graph: gs.Graph, tensor: gs.Variable, mask: gs.Tensor, fill: gs.Tensor, weight: gs.Tensor | None = None
) -> gs.Variable:
    name = tensor.name
    masked = gs.Variable(f"{name}__masked", dtype=tensor.dtype)
    filled = gs.Variable(f"{name}__filled", dtype=tensor.dtype)
    graph.nodes.append(gs.Node("Mul", f"{name}__mask_mul", inputs=[tensor, mask], outputs=[masked]))
    kept = masked
    if weight is not None:
        rebuilt = gs.Variable(f"{name}__rebuilt", dtype=tensor.dtype)
        both = gs.Variable(f"{name}__with_rebuilt", dtype=tensor.dtype)
        if len(weight.shape) > 2:
            graph.nodes.append(
                gs.Node("Conv", f"{name}__rebuild", inputs=[masked, weight], outputs=[rebuilt])
            )
        else:  # [N, C] x [C, C]: the weight as given is the transposed map
            graph.nodes.append(
                gs.Node("MatMul", f"{name}__rebuild", inputs=[masked, weight], outputs=[rebuilt])
            )
        graph.nodes.append(gs.Node("Add", f"{name}__rebuilt_add", inputs=[masked, rebuilt], outputs=[both]))
        kept = both
    graph.nodes.append(gs.Node("Add", f"{name}__fill_add", inputs=[kept, fill], outputs=[filled]))
    return filled


def _filled(graph: gs.Graph, tensor: gs.Variable, removed: np.ndarray, value: np.ndarray) -> gs.Variable:
    """``tensor * mask + c``: removed channels replaced by their constants, the others untouched."""
    rank = len(tensor.shape) if tensor.shape is not None else 4
    shape = (-1,) + (1,) * max(rank - 2, 0)
    dtype = tensor.dtype or np.float32
    name = tensor.name
    mask = gs.Constant(f"{name}__mask", (~removed).astype(dtype).reshape(shape))
    fill = gs.Constant(f"{name}__fill", np.where(removed, value, 0.0).astype(dtype).reshape(shape))
    return _mask_and_fill(graph, tensor, mask, fill)


def cut_feeds(
    analysis: Analysis, plan: Plan, points: list[CutPoint], rebuilt: Mapping[str, Rebuilt]
) -> dict[str, np.ndarray]:
    """The masks, fills and rebuild weights that make the cut-input model compute what ``plan``'s pruned
    model does (rebuilt channels where ``rebuilt`` has them, the analysis' constants elsewhere)."""
    feed: dict[str, np.ndarray] = {}
    for point in points:
        removed = analysis.removed_mask(point.tensor, plan)
        fill = np.nan_to_num(analysis.states[point.tensor].removed_value, nan=0.0)
        weight = np.zeros((len(removed), len(removed)))
        found = rebuilt.get(point.tensor)
        if found is not None:
            fill = np.zeros(len(removed))
            fill[found.removed] = found.constant
            if found.linear is not None:
                weight[np.ix_(found.removed, found.kept)] = found.linear
        feed[point.mask] = (~removed).astype(np.float32).reshape(point.shape)
        feed[point.fill] = np.where(removed, fill, 0.0).astype(np.float32).reshape(point.shape)
        if point.weight is not None:
            # A MatMul computes x @ W: the map transposed; a Conv takes [out, in, 1...].
            matrix = weight.T if len(point.weight_shape) == 2 else weight
            feed[point.weight] = matrix.astype(np.float32).reshape(point.weight_shape)
        elif found is not None and found.linear is not None:
            raise AssertionError(f"{point.tensor}: rebuilt columns but no weight input to take them")
    return feed


def with_cuts(model: onnx.ModelProto, cuts: Mapping[str, np.ndarray]) -> onnx.ModelProto:
    """The cut-input model with its cut inputs as constants: the original's inputs only."""
    baked = onnx.ModelProto()
    baked.CopyFrom(model)
    kept = [v for v in baked.graph.input if v.name not in cuts]
    del baked.graph.input[:]
    baked.graph.input.extend(kept)
    baked.graph.initializer.extend(numpy_helper.from_array(value, name) for name, value in cuts.items())
    return baked
