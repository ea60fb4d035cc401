"""Files: every read and write of a model, a report or a plan goes through here.

- ``read_model``: an ONNX file (with its external data), checked, or a one-line ModelLoadError;
- ``check_output_path``: refuse an output that would overwrite an input or has no directory to go in;
- ``write_atomically`` (and ``save_model``, ``save_json``, ``write_bytes`` on top of it): temporary file
  beside the target, fsync, ``os.replace``; nothing partial is ever left behind, Ctrl-C included; a device
  or FIFO is written through;
- external data: models over protobuf's 2 GB limit keep their weights in a side file (``save_model``);
- the weightless skeleton (``without_weights``, ``checkable``): a copy of a model with its weights stubbed,
  which shape inference and the checker take at any model size.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import json
import math
import os
import tempfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import IO, Any

import onnx
from onnx import numpy_helper
from onnx.external_data_helper import load_external_data_for_model

from onnxprune import readahead
from onnxprune.errors import ModelLoadError, ModelSaveError, UsageError, first_line

__all__ = [
    "PROTOBUF_LIMIT",
    "atomic",
    "check_output_path",
    "checkable",
    "needs_external_data",
    "read_model",
    "save_json",
    "save_model",
    "tensor_bytes",
    "unfix_non_positive_dims",
    "uses_external_data",
    "without_weights",
    "write_atomically",
    "write_bytes",
]

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
        model = _load(path)
    except Exception as exc:  # protobuf raises several unrelated types for garbage input
        raise ModelLoadError(f"{path}: not a readable ONNX model ({first_line(exc)})") from None
    if not model.graph.node:
        raise ModelLoadError(f"{path}: not an ONNX model (the graph has no nodes)")
    _check_versions(model, path)
    unfix_non_positive_dims(model)
    try:
        # On the skeleton: the checker would serialise a copy of every weight, and checks none of them.
        onnx.checker.check_model(checkable(without_weights(model)))
    except Exception as exc:
        raise ModelLoadError(f"{path}: not a valid ONNX model ({first_line(exc)})") from None
    return model


def unfix_non_positive_dims(model: onnx.ModelProto) -> None:
    """Make every ``dim_value`` <= 0 of the graph's inputs, outputs and value infos a dynamic dim, in place.

    Older exporters (PaddlePaddle's among them) write ``dim_value: -1`` for a dynamic batch; ONNX Runtime
    and TensorRT read it as dynamic, but every reader of a shape would take it for a size. Cleared once
    here, no later stage meets it.
    """
    for value in (*model.graph.input, *model.graph.output, *model.graph.value_info):
        if not value.type.tensor_type.HasField("shape"):
            continue
        for dim in value.type.tensor_type.shape.dim:
            if dim.HasField("dim_value") and dim.dim_value <= 0:
                dim.Clear()


def _load(path: Path) -> onnx.ModelProto:
    """``onnx.load``, from the bytes the console script read ahead where it did (readahead.py)."""
    data = readahead.take(path)
    if data is None:
        return onnx.load(str(path))
    model = onnx.load_model_from_string(data)
    del data  # the parsed model holds its own copy
    load_external_data_for_model(model, str(path.parent))
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


def check_output_path(output: str | Path, inputs: Sequence[str | Path]) -> Path:
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


def same_file(a: str | Path, b: str | Path) -> bool:
    """Whether two paths name one file (or, where either does not exist yet, one path)."""
    a, b = Path(a), Path(b)
    return a.samefile(b) if a.exists() and b.exists() else a.resolve() == b.resolve()


def save_model(
    model: onnx.ModelProto,
    output: str | Path,
    *,
    external_data: bool | None = None,
    serialized: bytes | None = None,
    confirm: Callable[[], object] | None = None,
) -> Path:
    """Write a model atomically: temporary files in the same directory, then ``os.replace``.

    The model is left as it was (onnx's own external-data save strips the weights from the message). An
    output that exists and is not a regular file (``/dev/null``, a FIFO) is written through, not replaced.

    Args:
        external_data: keep weights in a side file ``<name>.data``. ``None`` decides by size: models over
            protobuf's 2 GB limit cannot be written any other way.
        serialized: ``model.SerializeToString()`` if the caller has it already (written as is in one file).
        confirm: runs once the bytes are written and synced, before they replace ``output``; if it raises,
            nothing is written (prune's ONNX Runtime check runs meanwhile). Before anything is written
            where there is no temporary file (a device, a FIFO) and with external data.
    """
    output = Path(output)
    if external_data is None:
        external_data = needs_external_data(model)
    if not external_data:
        write = functools.partial(_write_proto, model, serialized=serialized)
        return write_atomically(output, write, confirm)
    if confirm is not None:
        confirm()
    if _is_special(output):
        raise ModelSaveError(f"{output}: not a regular file; external data needs a directory to live in")
    data = output.with_name(output.name + ".data")
    # The model names the final data file, written under a temporary name meanwhile. The data file is
    # replaced first (inner block), so a model never refers to data that is not there yet; if the model's
    # own rename then fails, the new data goes too, so that no old model is left reading new data.
    placed = False
    try:
        with atomic(output) as tmp:
            with atomic(data) as tmp_data:
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
        _sync(handle)


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
    """Copy every set field of one protobuf message into another, except ``skip``.

    Fields are walked by descriptor, not ListFields: that hands back every set value, so stubbing a tensor
    would copy its raw_data out only to skip it
    (most of the time a skeleton takes)."""
    for field in src.DESCRIPTOR.fields:
        if field.name in skip:
            continue
        # protobuf >= 5.28 has is_repeated; older ones only the label, which newer ones dropped.
        if getattr(field, "is_repeated", None) or getattr(field, "label", 0) == field.LABEL_REPEATED:
            if len(value := getattr(src, field.name)):
                getattr(dst, field.name).extend(value)
        elif src.HasField(field.name):
            if field.type == field.TYPE_MESSAGE:
                getattr(dst, field.name).CopyFrom(getattr(src, field.name))
            else:
                setattr(dst, field.name, getattr(src, field.name))
    return dst


def _write_proto(model: onnx.ModelProto, handle: IO[bytes], serialized: bytes | None = None) -> None:
    """The model as one protobuf; ``serialized``: its bytes when the caller has them already."""
    if serialized is not None:
        handle.write(serialized)
        return
    try:
        payload = model.SerializeToString()
    except Exception as exc:  # protobuf's EncodeError: a message over 2 GB cannot be serialised
        raise ModelSaveError(
            f"model cannot be written as one file ({first_line(exc)}); it needs external data"
        ) from None
    handle.write(payload)


def _sync(handle: IO[bytes]) -> None:
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


def write_atomically(
    output: str | Path, write: Callable[[IO[bytes]], Any], confirm: Callable[[], object] | None = None
) -> Path:
    """Write a file with ``write(handle)``: into a temporary file beside it, synced, then ``os.replace``d
    over it. An existing output that is not a regular file (``/dev/null``, a FIFO) is written through.
    ``confirm()`` must return before the file replaces the output (first, for a device or FIFO)."""
    output = Path(output)
    if _is_special(output):
        if confirm is not None:
            confirm()
        try:
            with open(output, "wb") as handle:
                write(handle)
                _sync(handle)
        except OSError as exc:
            raise ModelSaveError(f"{output}: cannot write ({exc.strerror or exc})") from None
        return output
    parent = output.parent if str(output.parent) else Path(".")
    if not parent.is_dir():
        raise ModelSaveError(f"{output}: directory {parent} does not exist")
    with atomic(output) as tmp, open(tmp, "wb") as handle:
        write(handle)
        _sync(handle)
        if confirm is not None:
            confirm()
    return output


def write_bytes(output: str | Path, data: bytes) -> Path:
    """``data`` into a file, atomically (a TensorRT plan)."""
    return write_atomically(output, lambda handle: handle.write(data))


def save_json(payload: object, output: str | Path) -> Path:
    """JSON into a file, atomically (a report)."""
    return write_bytes(output, json.dumps(payload, indent=2).encode())


@contextlib.contextmanager
def atomic(output: Path) -> Iterator[Path]:
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
    # math.prod on Python ints: np.prod per tensor dominated building a skeleton, which a prune does often.
    return math.prod(tensor.dims) * _itemsize(tensor.data_type)


@functools.cache
def _itemsize(data_type: int) -> int:
    try:
        return int(onnx.helper.tensor_dtype_to_np_dtype(data_type).itemsize)
    except Exception:  # strings and types numpy lacks: small, and never weights
        return 1
