"""Load: an ONNX model becomes a normalised onnx-graphsurgeon graph, and a graph becomes a model again.

Reading and writing files (atomic writes, external data, the weightless skeleton) is ``files.py``.

Normalisation happens once, here, so that no later stage cares how an exporter stored parameters:
- ``Constant`` nodes (PaddlePaddle exports have no initializers at all) become graphsurgeon Constants;
- ``Identity`` nodes that forward a constant are bypassed, so a consumer sees the parameter itself;
- shapes are inferred so that every rule can read the rank and channel count of its tensors;
- constant subgraphs are folded, except the factors of a bias map that onnxprune wrote when it pruned the
  model before (``rules/padmap.py``): folded, they would be dense maps, larger than the Conv they follow.
"""

from __future__ import annotations

import logging

import numpy as np
import onnx
import onnx_graphsurgeon as gs
from onnx_graphsurgeon.logger import G_LOGGER

from onnxprune.files import needs_external_data, without_weights
from onnxprune.rules.padmap import is_map_factor
from onnxprune.runtime import quiet_onnxruntime


def normalise(model: onnx.ModelProto) -> gs.Graph:
    """Infer shapes, import into graphsurgeon, turn every parameter into a gs.Constant and fold constant
    subgraphs; every node that stays keeps its name."""
    graph = _import_with_shapes(model)
    _constant_nodes_to_constants(graph)
    _bypass_constant_identities(graph)
    graph.cleanup()
    before = len(graph.nodes)
    _fold_constants(graph)
    if len(graph.nodes) != before:
        # Folded bounds make shapes known that inference could not see before: infer them again.
        graph = _import_with_shapes(gs.export_onnx(graph, do_type_check=False))
    return graph


def infer_shapes(model: onnx.ModelProto) -> onnx.ModelProto:
    """Shape inference that tolerates models it cannot fully type (they keep what they had).

    Inference runs on ``without_weights(model)``, so it works past protobuf's 2 GB limit and never holds
    extra copies of the weights; the result is a copy of ``model`` with the inferred types.
    """
    inferred = _inferred_types(model)
    result = onnx.ModelProto()
    result.CopyFrom(model)
    if inferred is not None:
        _set_types(result, *inferred)
    return result


def _import_with_shapes(model: onnx.ModelProto) -> gs.Graph:
    """gs.import_onnx with inferred types: set on ``model`` for the import only, then restored."""
    inferred = _inferred_types(model)
    if inferred is None:
        return gs.import_onnx(model)
    before = [_copy(v) for v in model.graph.value_info], [_copy(v) for v in model.graph.output]
    _set_types(model, *inferred)
    try:
        return gs.import_onnx(model)
    finally:
        _set_types(model, *before)


def _inferred_types(model: onnx.ModelProto) -> tuple[list, list] | None:
    """(value_info, outputs) after shape inference, or None where onnx cannot infer."""
    candidates = [without_weights] + ([] if needs_external_data(model) else [lambda m: m])
    for candidate in candidates:
        try:
            inferred = onnx.shape_inference.infer_shapes(candidate(model), data_prop=True)
        except Exception:  # a partially typed model is still prunable where rules find the shapes they need
            continue
        return list(inferred.graph.value_info), list(inferred.graph.output)
    return None


def _set_types(model: onnx.ModelProto, value_info: list, outputs: list) -> None:
    del model.graph.value_info[:]
    model.graph.value_info.extend(value_info)
    del model.graph.output[:]
    model.graph.output.extend(outputs)


def _copy(message):
    out = type(message)()
    out.CopyFrom(message)
    return out


# Random ops compute no constant, whatever their inputs.
RANDOM_OPS = {"RandomNormal", "RandomUniform", "RandomNormalLike", "RandomUniformLike", "Multinomial",
              "Bernoulli"}  # fmt: skip
# Ops never folded: quantization stays as the exporter wrote it, and random ops are not constants.
NOT_FOLDED = {"QuantizeLinear", "DequantizeLinear"} | RANDOM_OPS


def _fold_constants(graph: gs.Graph) -> None:
    """Fold subgraphs that compute constants (shape arithmetic such as a chunk's Slice bounds from Shape →
    Gather → Div, a transposed weight), as ``polygraphy surgeon sanitize --fold-constants`` does: rules
    can only follow channels through bounds and weights they can read."""
    if not _may_fold(graph):
        return  # graphsurgeon's pass walks every node to find nothing
    level = G_LOGGER.severity
    G_LOGGER.severity = G_LOGGER.ERROR  # folding reports every node it cannot evaluate; none is an error
    logging.getLogger("onnxruntime").setLevel(logging.ERROR)
    try:
        quiet_onnxruntime()  # graphsurgeon's sessions log to the process-wide logger
        graph.fold_constants(
            size_threshold=64 << 20,
            should_exclude_node=lambda node: node.op in NOT_FOLDED or is_map_factor(node),
        )
        graph.cleanup()
    except Exception:
        pass  # without onnxruntime or on an op it cannot run, the graph stays as it was: still prunable
    finally:
        G_LOGGER.severity = level


def _may_fold(graph: gs.Graph) -> bool:
    """Whether any node could fold: one computed from constants only, or a Shape/Size (graphsurgeon folds
    those of static shapes, and every chain of shape arithmetic starts at one)."""
    for node in graph.nodes:
        if node.op in NOT_FOLDED or is_map_factor(node):
            continue
        if node.op in ("Shape", "Size") or (
            node.inputs and all(isinstance(t, gs.Constant) or t.is_empty() for t in node.inputs)
        ):
            return True
    return False


def _constant_nodes_to_constants(graph: gs.Graph) -> None:
    for node in graph.nodes:
        if node.op != "Constant" or len(node.outputs) != 1 or node.domain not in (None, "", "ai.onnx"):
            continue
        value = _constant_node_value(node)
        if value is None:
            continue
        out = node.outputs[0]
        node.outputs.clear()
        out.to_constant(value)


def _constant_node_value(node: gs.Node) -> np.ndarray | None:
    attrs = node.attrs
    if "value" in attrs:
        value = attrs["value"]
        return np.asarray(value.values if isinstance(value, gs.Constant) else value)
    scalars = {"value_float": np.float32, "value_int": np.int64}
    for key, dtype in scalars.items():
        if key in attrs:
            return np.array(attrs[key], dtype=dtype)
    lists = {"value_floats": np.float32, "value_ints": np.int64}
    for key, dtype in lists.items():
        if key in attrs:
            return np.array(attrs[key], dtype=dtype)
    return None


def _bypass_constant_identities(graph: gs.Graph) -> None:
    outputs = set(id(t) for t in graph.outputs)
    for node in graph.nodes:
        if node.op != "Identity" or not node.inputs or not isinstance(node.inputs[0], gs.Constant):
            continue
        forwarded, source = node.outputs[0], node.inputs[0]
        if id(forwarded) in outputs:
            continue
        for consumer in list(forwarded.outputs):
            for i, tensor in enumerate(consumer.inputs):
                if tensor is forwarded:
                    consumer.inputs[i] = source
        node.outputs.clear()


def to_model(graph: gs.Graph, template: onnx.ModelProto | None = None) -> onnx.ModelProto:
    """Export a graph, keeping the template's metadata (producer, IR version, model-level docs)."""
    model = gs.export_onnx(graph, do_type_check=False)
    if template is not None:
        model.ir_version = template.ir_version
        model.producer_name = template.producer_name or model.producer_name
        model.producer_version = template.producer_version
        model.model_version = template.model_version
        model.doc_string = template.doc_string
        del model.metadata_props[:]
        model.metadata_props.extend(template.metadata_props)
    return model
