"""Load: an ONNX file becomes a normalised onnx-graphsurgeon graph; save writes it back atomically.

Normalisation happens once, here, so that no later stage cares how an exporter stored parameters:
- ``Constant`` nodes (PaddlePaddle exports have no initializers at all) become graphsurgeon Constants;
- ``Identity`` nodes that forward a constant are bypassed, so a consumer sees the parameter itself;
- shapes are inferred so that every rule can read the rank and channel count of its tensors.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

import numpy as np
import onnx
import onnx_graphsurgeon as gs
from onnx import numpy_helper

from onnxprune.errors import ModelLoadError, ModelSaveError, UsageError

# Models over protobuf's 2 GB limit must keep their weights in external data files.
PROTOBUF_LIMIT = 2**31 - 1


def read_model(path: str | Path) -> onnx.ModelProto:
    """Read an ONNX file (with its external data) or raise a one-line ModelLoadError."""
    path = Path(path)
    if not path.exists():
        raise ModelLoadError(f"{path}: no such file")
    if path.is_dir():
        raise ModelLoadError(f"{path}: is a directory, expected an .onnx file")
    if path.stat().st_size == 0:
        raise ModelLoadError(f"{path}: file is empty")
    try:
        model = onnx.load(str(path))
    except Exception as exc:  # protobuf raises several unrelated types for garbage input
        raise ModelLoadError(f"{path}: not a readable ONNX model ({_first_line(exc)})") from None
    if not model.graph.node:
        raise ModelLoadError(f"{path}: not an ONNX model (the graph has no nodes)")
    _check_versions(model, path)
    return model


def _check_versions(model: onnx.ModelProto, path: Path) -> None:
    if model.ir_version > onnx.IR_VERSION:
        raise ModelLoadError(
            f"{path}: IR version {model.ir_version} is newer than this onnx supports ({onnx.IR_VERSION})"
        )
    latest = onnx.defs.onnx_opset_version()
    for opset in model.opset_import:
        if opset.domain in ("", "ai.onnx") and opset.version > latest:
            raise ModelLoadError(f"{path}: opset {opset.version} is newer than this onnx supports ({latest})")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:200] if text else type(exc).__name__


def load_graph(path: str | Path) -> gs.Graph:
    """Read and normalise a model; the graph keeps the model's node names."""
    return normalise(read_model(path))


def normalise(model: onnx.ModelProto) -> gs.Graph:
    """Infer shapes, import into graphsurgeon and turn every parameter into a gs.Constant."""
    model = infer_shapes(model)
    graph = gs.import_onnx(model)
    _constant_nodes_to_constants(graph)
    _bypass_constant_identities(graph)
    graph.cleanup()
    return graph


def infer_shapes(model: onnx.ModelProto) -> onnx.ModelProto:
    """Shape inference that tolerates models it cannot fully type (they keep what they had)."""
    try:
        if model.ByteSize() < PROTOBUF_LIMIT:
            return onnx.shape_inference.infer_shapes(model, data_prop=True)
    except Exception:
        pass  # a partially typed model is still prunable where rules find the shapes they need
    return model


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


def check_output_path(output: str | Path, inputs: list[str | Path]) -> Path:
    """Refuse output paths that would overwrite an input or land in a missing directory."""
    output = Path(output)
    for source in inputs:
        source = Path(source)
        if output.exists() and source.exists() and output.resolve() == source.resolve():
            raise UsageError(f"{output}: output would overwrite the input model; choose another path")
    parent = output.parent if str(output.parent) else Path(".")
    if not parent.is_dir():
        raise ModelSaveError(f"{output}: directory {parent} does not exist")
    if output.is_dir():
        raise ModelSaveError(f"{output}: is a directory")
    return output


def save_model(model: onnx.ModelProto, output: str | Path, *, external_data: bool | None = None) -> Path:
    """Write a model atomically: a temporary file in the same directory, then an os.replace.

    Args:
        external_data: keep weights in a side file ``<name>.data``. ``None`` decides by size: models over
            protobuf's 2 GB limit cannot be written any other way.
    """
    output = Path(output)
    if external_data is None:
        external_data = _needs_external_data(model)
    parent = output.parent if str(output.parent) else Path(".")
    fd, tmp_name = tempfile.mkstemp(prefix=f".{output.name}.", suffix=".tmp", dir=parent)
    os.close(fd)
    tmp = Path(tmp_name)
    data_name = output.name + ".data"
    tmp_data = parent / (tmp.name + ".data")
    try:
        if external_data:
            # Written under a temporary name too; the model refers to the final data file name.
            onnx.save_model(
                model,
                str(tmp),
                save_as_external_data=True,
                all_tensors_to_one_file=True,
                location=tmp_data.name,
                size_threshold=1024,
            )
            _rename_external_location(tmp, tmp_data.name, data_name)
            os.replace(tmp_data, parent / data_name)
        else:
            with open(tmp, "wb") as handle:
                handle.write(model.SerializeToString())
                handle.flush()
                os.fsync(handle.fileno())
        os.replace(tmp, output)
    except BaseException as exc:  # KeyboardInterrupt included: never leave a partial file behind
        for leftover in (tmp, tmp_data):
            with contextlib.suppress(OSError):
                leftover.unlink()
        if isinstance(exc, OSError):
            raise ModelSaveError(f"{output}: cannot write ({exc.strerror or exc})") from None
        raise
    return output


def _needs_external_data(model: onnx.ModelProto) -> bool:
    try:
        return model.ByteSize() >= PROTOBUF_LIMIT
    except Exception:  # protobuf refuses to even measure some over-limit messages
        return True


def _rename_external_location(model_path: Path, old: str, new: str) -> None:
    """Point the saved model's external tensors at the final data file name."""
    model = onnx.load(str(model_path), load_external_data=False)
    for tensor in onnx.external_data_helper._get_all_tensors(model):
        for entry in tensor.external_data:
            if entry.key == "location" and entry.value == old:
                entry.value = new
    with open(model_path, "wb") as handle:
        handle.write(model.SerializeToString())


def tensor_to_array(tensor: onnx.TensorProto) -> np.ndarray:
    return numpy_helper.to_array(tensor)


def save_json(payload: object, output: str | Path) -> Path:
    """Write JSON atomically (same rules as models: temp file, then os.replace)."""
    import json

    output = Path(output)
    parent = output.parent if str(output.parent) else Path(".")
    if not parent.is_dir():
        raise ModelSaveError(f"{output}: directory {parent} does not exist")
    fd, tmp_name = tempfile.mkstemp(prefix=f".{output.name}.", suffix=".tmp", dir=parent)
    try:
        with os.fdopen(fd, "w") as handle:
            json.dump(payload, handle, indent=2)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_name, output)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp_name)
        if isinstance(exc, OSError):
            raise ModelSaveError(f"{output}: cannot write ({exc.strerror or exc})") from None
        raise
    return output
