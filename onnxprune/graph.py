"""Load: an ONNX file becomes a normalised onnx-graphsurgeon graph; save writes it back atomically.

Normalisation happens once, here, so that no later stage cares how an exporter stored parameters:
- ``Constant`` nodes (PaddlePaddle exports have no initializers at all) become graphsurgeon Constants;
- ``Identity`` nodes that forward a constant are bypassed, so a consumer sees the parameter itself;
- shapes are inferred so that every rule can read the rank and channel count of its tensors.
"""

from __future__ import annotations

import contextlib
import errno
import os
import tempfile
from pathlib import Path

import numpy as np
import onnx
import onnx_graphsurgeon as gs
from onnx import numpy_helper

from onnxprune.errors import ModelLoadError, ModelSaveError, UsageError, first_line

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
        raise ModelLoadError(f"{path}: not a readable ONNX model ({first_line(exc)})") from None
    if not model.graph.node:
        raise ModelLoadError(f"{path}: not an ONNX model (the graph has no nodes)")
    _check_versions(model, path)
    try:
        # On the skeleton: the checker would serialise a copy of every weight, and checks none of them.
        onnx.checker.check_model(checkable(without_weights(model)))
    except Exception as exc:
        raise ModelLoadError(f"{path}: not a valid ONNX model ({first_line(exc)})") from None
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


def without_weights(model: onnx.ModelProto, threshold: int = 1024) -> onnx.ModelProto:
    """A copy of the model in which every float tensor of ``threshold`` bytes or more (main-graph
    initializers, ``Constant`` node values) is a stub: its name, type and dims, its data "external" in a file
    that does not exist. Shape inference needs no more, and the copy is small whatever the model's size.
    """
    skeleton = _copy_fields(model, onnx.ModelProto(), skip=("graph",))
    graph = _copy_fields(model.graph, skeleton.graph, skip=("initializer", "node"))
    for tensor in model.graph.initializer:
        if _is_large(tensor, threshold):
            _stub(tensor, graph.initializer.add())
        else:
            graph.initializer.append(tensor)
    for node in model.graph.node:
        if not any(a.HasField("t") and _is_large(a.t, threshold) for a in node.attribute):
            graph.node.append(node)
            continue
        copy = _copy_fields(node, graph.node.add(), skip=("attribute",))
        for attr in node.attribute:
            if attr.HasField("t") and _is_large(attr.t, threshold):
                _stub(attr.t, _copy_fields(attr, copy.attribute.add(), skip=("t",)).t)
            else:
                copy.attribute.append(attr)
    return skeleton


def checkable(skeleton: onnx.ModelProto) -> onnx.ModelProto:
    """A skeleton (``without_weights``) the checker accepts: it would read the stubs' missing external
    data, so stubbed weights (initializers, or ``Constant`` nodes as PaddlePaddle writes them) become
    graph inputs of the same type and dims instead."""
    graph = skeleton.graph
    stubs = [t for t in graph.initializer if _is_stub(t)]
    kept = [t for t in graph.initializer if not _is_stub(t)]
    del graph.initializer[:]
    graph.initializer.extend(kept)
    graph.input.extend(onnx.helper.make_tensor_value_info(t.name, t.data_type, list(t.dims)) for t in stubs)
    nodes = list(graph.node)
    del graph.node[:]
    for node in nodes:
        value = next((a.t for a in node.attribute if a.name == "value" and a.HasField("t")), None)
        if node.op_type == "Constant" and value is not None and _is_stub(value):
            graph.input.append(
                onnx.helper.make_tensor_value_info(node.output[0], value.data_type, list(value.dims))
            )
        else:
            graph.node.append(node)
    return skeleton


def _is_stub(tensor: onnx.TensorProto) -> bool:
    return tensor.data_location == onnx.TensorProto.EXTERNAL


_WEIGHT_TYPES = {
    onnx.TensorProto.FLOAT,
    onnx.TensorProto.FLOAT16,
    onnx.TensorProto.BFLOAT16,
    onnx.TensorProto.DOUBLE,
}


def _is_large(tensor: onnx.TensorProto, threshold: int) -> bool:
    """A float tensor big enough to matter. Integer tensors stay: data propagation may read them as shapes."""
    return (
        tensor.data_type in _WEIGHT_TYPES
        and tensor.data_location != onnx.TensorProto.EXTERNAL
        and tensor_bytes(tensor) >= threshold
    )


_DATA_FIELDS = (
    "raw_data", "float_data", "int32_data", "string_data", "int64_data", "double_data", "uint64_data",
    "external_data", "data_location",
)  # fmt: skip


def _stub(tensor: onnx.TensorProto, stub: onnx.TensorProto) -> None:
    _copy_fields(tensor, stub, skip=_DATA_FIELDS)
    stub.data_location = onnx.TensorProto.EXTERNAL
    entry = stub.external_data.add()
    entry.key, entry.value = "location", "onnxprune-weights-not-loaded"


# Ops never folded: quantization stays as the exporter wrote it, and random ops are not constants.
NOT_FOLDED = {"QuantizeLinear", "DequantizeLinear", "RandomNormal", "RandomUniform", "RandomNormalLike",
              "RandomUniformLike", "Multinomial", "Bernoulli"}  # fmt: skip


def _fold_constants(graph: gs.Graph) -> None:
    """Fold subgraphs that compute constants (shape arithmetic such as a chunk's Slice bounds from Shape →
    Gather → Div, a transposed weight), as ``polygraphy surgeon sanitize --fold-constants`` does: rules
    can only follow channels through bounds and weights they can read."""
    import logging

    from onnx_graphsurgeon.logger import G_LOGGER

    level = G_LOGGER.severity
    G_LOGGER.severity = G_LOGGER.ERROR  # folding reports every node it cannot evaluate; none is an error
    logging.getLogger("onnxruntime").setLevel(logging.ERROR)
    try:
        graph.fold_constants(size_threshold=64 << 20, should_exclude_node=lambda node: node.op in NOT_FOLDED)
        graph.cleanup()
    except Exception:
        pass  # without onnxruntime or on an op it cannot run, the graph stays as it was: still prunable
    finally:
        G_LOGGER.severity = level


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
    """Write a model atomically: temporary files in the same directory, then ``os.replace``.

    The model is left as it was (onnx's own external-data save strips the weights from the message). An
    output that exists and is not a regular file (``/dev/null``, a FIFO) is written through, not replaced.

    Args:
        external_data: keep weights in a side file ``<name>.data``. ``None`` decides by size: models over
            protobuf's 2 GB limit cannot be written any other way.
    """
    output = Path(output)
    if external_data is None:
        external_data = needs_external_data(model)
    if _is_special(output):
        if external_data:
            raise ModelSaveError(f"{output}: not a regular file; external data needs a directory to live in")
        _write_through(output, lambda handle: _write_proto(model, handle))
        return output
    if not external_data:
        with _atomic(output) as tmp, open(tmp, "wb") as handle:
            _write_proto(model, handle)
        return output
    data = output.with_name(output.name + ".data")
    # The model names the final data file, written under a temporary name meanwhile. The data file is
    # replaced first (inner block), so a model never refers to data that is not there yet; if the model's
    # own rename then fails, the new data goes too, so that no old model is left reading new data.
    placed = False
    try:
        with _atomic(output) as tmp:
            with _atomic(data) as tmp_data:
                _save_external(model, tmp, tmp_data, data.name)
            placed = True
    except BaseException:
        if placed:
            with contextlib.suppress(OSError):
                data.unlink()
        raise
    return output


EXTERNAL_THRESHOLD = 1024  # bytes: smaller tensors stay in the model file
EXTERNAL_ALIGN = 4096  # tensor offsets in the data file: page-aligned so that runtimes can mmap them


def _save_external(model: onnx.ModelProto, path: Path, data_path: Path, location: str) -> None:
    """Weights of the main graph's initializers to ``data_path``, the rest to ``path`` (tensors in subgraphs
    and node attributes stay inline).

    The file is written from a skeleton copy whose large initializers point into the data file, one tensor
    at a time: the caller's model is not touched and no second copy of the weights is ever held.
    """
    with open(data_path, "wb") as data:
        skeleton = _copy_fields(model, onnx.ModelProto(), skip=("graph",))
        graph = _copy_fields(model.graph, skeleton.graph, skip=("initializer",))
        for tensor in model.graph.initializer:
            raw = _raw_bytes(tensor)
            if raw is None:
                graph.initializer.append(tensor)
                continue
            offset = data.seek(-data.tell() % EXTERNAL_ALIGN, os.SEEK_CUR)
            length = data.write(raw)
            del raw
            stub = _copy_fields(tensor, graph.initializer.add(), skip=_DATA_FIELDS)
            stub.data_location = onnx.TensorProto.EXTERNAL
            for key, value in (("location", location), ("offset", offset), ("length", length)):
                entry = stub.external_data.add()
                entry.key, entry.value = key, str(value)
        _sync(data)
    with open(path, "wb") as handle:
        _write_proto(skeleton, handle)


def _raw_bytes(tensor: onnx.TensorProto) -> bytes | None:
    """The tensor's bytes, if it goes to the data file: loaded, not strings, EXTERNAL_THRESHOLD or more."""
    if tensor.data_location == onnx.TensorProto.EXTERNAL or tensor.data_type == onnx.TensorProto.STRING:
        return None
    if tensor.ByteSize() < EXTERNAL_THRESHOLD:
        return None
    if tensor.HasField("raw_data"):
        return tensor.raw_data
    return numpy_helper.to_array(tensor).tobytes()  # typed fields (float_data, ...): little-endian raw


def _copy_fields(src, dst, skip: tuple[str, ...]):
    """Copy every set field of one protobuf message into another, except ``skip``."""
    for field, value in src.ListFields():
        if field.name in skip:
            continue
        target = getattr(dst, field.name)
        # protobuf >= 5.28 has is_repeated; older ones only the label, which newer ones dropped.
        if getattr(field, "is_repeated", None) or getattr(field, "label", 0) == field.LABEL_REPEATED:
            target.extend(value)
        elif field.type == field.TYPE_MESSAGE:
            target.CopyFrom(value)
        else:
            setattr(dst, field.name, value)
    return dst


def _write_proto(model: onnx.ModelProto, handle) -> None:
    try:
        payload = model.SerializeToString()
    except Exception as exc:  # protobuf's EncodeError: a message over 2 GB cannot be serialised
        raise ModelSaveError(
            f"model cannot be written as one file ({first_line(exc)}); it needs external data"
        ) from None
    handle.write(payload)
    _sync(handle)


def _sync(handle) -> None:
    """Flush to the disk; devices such as /dev/null cannot sync (EINVAL) and need not."""
    handle.flush()
    try:
        os.fsync(handle.fileno())
    except OSError as exc:
        if exc.errno not in (errno.EINVAL, errno.ENOTSUP):
            raise


def _is_special(path: Path) -> bool:
    """An existing output that is not a regular file: a device or a FIFO is written into, never replaced."""
    try:
        return path.exists() and not path.is_file() and not path.is_dir()
    except OSError:
        return False


def _write_through(output: Path, write) -> None:
    try:
        with open(output, "wb") as handle:
            write(handle)
    except OSError as exc:
        raise ModelSaveError(f"{output}: cannot write ({exc.strerror or exc})") from None


@contextlib.contextmanager
def _atomic(output: Path):
    """A temporary path beside ``output`` that replaces it when the block succeeds and is removed when it
    fails, Ctrl-C included. OSErrors become one-line ModelSaveErrors."""
    parent = output.parent if str(output.parent) else Path(".")
    tmp: Path | None = None
    try:
        fd, name = tempfile.mkstemp(prefix=f".{output.name}.", suffix=".tmp", dir=parent)
    except OSError as exc:
        raise ModelSaveError(f"{output}: cannot create a file in {parent} ({exc.strerror or exc})") from None
    try:
        tmp = Path(name)
        try:
            os.fchmod(fd, _new_file_mode(output))
        finally:
            os.close(fd)
        yield tmp
        os.replace(tmp, output)
    except BaseException as exc:  # KeyboardInterrupt included: never leave a partial file behind
        if tmp is not None:
            with contextlib.suppress(OSError):
                tmp.unlink()
        if isinstance(exc, OSError):
            raise ModelSaveError(f"{output}: cannot write ({exc.strerror or exc})") from None
        raise


def _new_file_mode(output: Path) -> int:
    """What a plain ``open(output, "w")`` would give: the existing file's mode, else 0o666 less the umask
    (mkstemp creates 0o600 files)."""
    with contextlib.suppress(OSError):
        return output.stat().st_mode & 0o7777
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def uses_external_data(path: str | Path) -> bool:
    """Whether a model file keeps its weights in side files. Such an .onnx is small: a large one is inline
    and is not parsed twice to find out."""
    path = Path(path)
    if path.stat().st_size > (64 << 20):
        return False
    try:
        header = onnx.load(str(path), load_external_data=False)
    except Exception:
        return False
    return any(t.data_location == onnx.TensorProto.EXTERNAL for t in header.graph.initializer)


def needs_external_data(model: onnx.ModelProto) -> bool:
    """Over protobuf's 2 GB limit (less a margin for everything but the weights): the model cannot be
    serialised in one piece. Counted from the tensors' dims: ``ByteSize`` would serialise the whole model."""
    weights = sum(tensor_bytes(t) for t in model.graph.initializer)
    weights += sum(tensor_bytes(a.t) for n in model.graph.node for a in n.attribute if a.HasField("t"))
    return weights >= PROTOBUF_LIMIT - (64 << 20)


def tensor_bytes(tensor: onnx.TensorProto) -> int:
    """Bytes of a tensor's data, from its dims and type, without touching the data."""
    if tensor.data_location == onnx.TensorProto.EXTERNAL:
        return 0
    try:
        itemsize = onnx.helper.tensor_dtype_to_np_dtype(tensor.data_type).itemsize
    except Exception:  # strings and types numpy lacks: small, and never weights
        itemsize = 1
    return int(np.prod(tensor.dims, dtype=np.int64)) * itemsize


def save_json(payload: object, output: str | Path) -> Path:
    """Write JSON atomically (same rules as models: temp file, then os.replace)."""
    import json

    output = Path(output)
    text = json.dumps(payload, indent=2).encode()

    def write(handle) -> None:
        handle.write(text)
        _sync(handle)

    if _is_special(output):
        _write_through(output, write)
        return output
    parent = output.parent if str(output.parent) else Path(".")
    if not parent.is_dir():
        raise ModelSaveError(f"{output}: directory {parent} does not exist")
    with _atomic(output) as tmp, open(tmp, "wb") as handle:
        write(handle)
    return output
