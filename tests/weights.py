"""The project's seeded loader for the weight-free ``tests/data/*.graph.onnx`` topologies.

Every initializer stored empty (doc_string "stripped") is filled: Conv/Gemm weights ~ N(0, sqrt(2/fan_in)),
BN scale ~ |N(1, 0.3)|, BN bias ~ N(0, 0.1), mean ~ N(0, 0.1), var ~ U(0.5, 2), anything else ~ N(0, 0.02).
``dead`` makes that fraction of every BN's channels dead (scale = 0 and bias = 0): their BN output is
exactly 0.

Random running statistics kill the signal of deep nets (yolov8n's outputs moved by 3e-5, relative, between
two random inputs; efficientnet_b0's by 1e-4), and an exactness check on such a model proves little. So
every BN's running mean and variance are then re-estimated on seeded N(0, 1) images, as a recalibration
routine does: one ONNX Runtime run of a copy in which each BN normalises with the statistics of its own
input (training mode, in topological order by construction), which are read out as extra graph outputs.
Every topology then moves by >= 1e-2 between two random inputs (tests/test_weights.py).
"""

from __future__ import annotations

import functools
import hashlib
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
from onnx import helper, numpy_helper

DATA = Path(__file__).parent / "data"
CACHE = Path(tempfile.gettempdir()) / "onnxprune-test-bn-stats"


def topologies() -> list[str]:
    return sorted(p.name.removesuffix(".graph.onnx") for p in DATA.glob("*.graph.onnx"))


def _roles(model: onnx.ModelProto) -> dict[str, tuple[str, str | None]]:
    roles: dict[str, tuple[str, str | None]] = {}
    for node in model.graph.node:
        if node.op_type == "BatchNormalization":
            for role, name in zip(
                ("bn_scale", "bn_bias", "bn_mean", "bn_var"), node.input[1:5], strict=False
            ):
                roles[name] = (role, node.input[1])
        elif node.op_type in ("Conv", "ConvTranspose", "Gemm", "MatMul") and len(node.input) > 1:
            roles.setdefault(node.input[1], ("weight", None))
    return roles


def _draw(rng: np.random.Generator, role: str, shape: tuple[int, ...]) -> np.ndarray:
    if role == "weight":
        fan_in = int(np.prod(shape[1:])) if len(shape) > 1 else shape[0]
        return rng.normal(0, np.sqrt(2.0 / max(fan_in, 1)), shape)
    if role == "bn_scale":
        return np.abs(rng.normal(1, 0.3, shape))
    if role in ("bn_bias", "bn_mean"):
        return rng.normal(0, 0.1, shape)
    if role == "bn_var":
        return rng.uniform(0.5, 2.0, shape)
    return rng.normal(0, 0.02, shape)


def fill(model: onnx.ModelProto, seed: int = 0, dead: float = 0.0) -> onnx.ModelProto:
    rng = np.random.default_rng(seed)
    roles = _roles(model)
    dead_masks: dict[str | None, np.ndarray] = {}
    for tensor in model.graph.initializer:
        if tensor.doc_string != "stripped":
            continue
        shape = tuple(tensor.dims)
        role, owner = roles.get(tensor.name, ("other", None))
        values = _draw(rng, role, shape)
        if dead and role in ("bn_scale", "bn_bias"):
            mask = dead_masks.setdefault(owner, rng.random(shape) < dead)
            values = np.where(mask, 0.0, values)
        dtype = onnx.helper.tensor_dtype_to_np_dtype(tensor.data_type)
        tensor.CopyFrom(numpy_helper.from_array(values.astype(dtype), tensor.name))
    return model


def load(name: str, seed: int = 0, dead: float = 0.0, calibrate: bool = True) -> onnx.ModelProto:
    """A runnable copy of ``tests/data/<name>.graph.onnx`` with seeded weights and, with ``calibrate``,
    BN statistics re-estimated on random images (cached: a fresh copy every call)."""
    return onnx.load_from_string(_filled(name, seed, dead, calibrate))


@functools.lru_cache(maxsize=4)
def _filled(name: str, seed: int, dead: float, calibrate: bool) -> bytes:
    path = DATA / f"{name}.graph.onnx"
    model = fill(onnx.load(str(path)), seed, dead)
    if calibrate:
        key = hashlib.sha1(path.read_bytes()).hexdigest()[:12]
        cached = CACHE / f"{name}-{seed}-{dead}-{key}.npz"
        _set_initializers(model, _cached(cached, lambda: bn_statistics(model, seed)))
    return model.SerializeToString()


def _cached(path: Path, compute: Callable[[], dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """The statistics are a few kB and take seconds to compute: kept on disk between test runs."""
    try:
        with np.load(path) as data:
            return {k: data[k] for k in data.files}
    except (OSError, ValueError):
        pass
    values = compute()
    path.parent.mkdir(parents=True, exist_ok=True)
    part = path.with_suffix(f".{os.getpid()}.part.npz")
    np.savez(part, **values)
    os.replace(part, path)  # atomic: parallel test workers never read half a file
    return values


def calibrate_bn(model: onnx.ModelProto, seed: int = 0) -> onnx.ModelProto:
    """Sets every BN's running mean/var to the statistics of its input on a seeded N(0, 1) image."""
    _set_initializers(model, bn_statistics(model, seed))
    return model


def _set_initializers(model: onnx.ModelProto, values: dict[str, np.ndarray]) -> None:
    for tensor in model.graph.initializer:
        if tensor.name in values:
            array = values[tensor.name].astype(helper.tensor_dtype_to_np_dtype(tensor.data_type))
            tensor.CopyFrom(numpy_helper.from_array(array, tensor.name))


def bn_statistics(model: onnx.ModelProto, seed: int = 0) -> dict[str, np.ndarray]:
    """Running mean/var initializer name -> the statistics of that BN's input on a seeded N(0, 1) image.

    A BN whose input has one value per channel (rank 2 at batch 1) keeps its statistics: a variance over
    one sample is 0.
    """
    import onnxruntime as ort

    from onnxprune.inputs import make_inputs

    probe, stats = _training_mode_copy(model)
    if not stats:
        return {}
    options = ort.SessionOptions()
    options.log_severity_level = 4
    session = ort.InferenceSession(probe.SerializeToString(), options, providers=["CPUExecutionProvider"])
    names = [n for pair in stats.values() for n in pair]
    values = dict(zip(names, session.run(names, make_inputs(model, seed=seed)[0]), strict=True))
    out = {}
    for (mean, var), (mean_out, var_out) in stats.items():
        out[mean], out[var] = values[mean_out], values[var_out]
    return out


def _training_mode_copy(model: onnx.ModelProto) -> tuple[onnx.ModelProto, dict]:
    """A copy whose BNs normalise with their input's own mean/var, exposed as outputs."""
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    ranks = _ranks(probe)
    nodes, stats = [], {}
    for node in probe.graph.node:
        rank = ranks.get(node.input[0], 0) if node.op_type == "BatchNormalization" else 0
        if rank < 3:
            nodes.append(node)
            continue
        mean, var = f"{node.name}__calib_mean", f"{node.name}__calib_var"
        nodes += _stat_nodes(node.input[0], rank, mean, var)
        stats[(node.input[3], node.input[4])] = (mean, var)
        node.input[3], node.input[4] = mean, var
        nodes.append(node)
    del probe.graph.node[:]
    probe.graph.node.extend(nodes)
    probe.graph.initializer.append(numpy_helper.from_array(np.array([-1], np.int64), "__calib_flat"))
    for mean, var in stats.values():
        probe.graph.output.extend(
            [helper.make_empty_tensor_value_info(mean), helper.make_empty_tensor_value_info(var)]
        )
    return probe, stats


def _stat_nodes(x: str, rank: int, mean: str, var: str) -> list[onnx.NodeProto]:
    axes = [0, *range(2, rank)]
    m, d, sq, v = (f"{mean}_keep", f"{mean}_centred", f"{mean}_sq", f"{var}_keep")
    return [
        helper.make_node("ReduceMean", [x], [m], axes=axes, keepdims=1),
        helper.make_node("Sub", [x, m], [d]),
        helper.make_node("Mul", [d, d], [sq]),
        helper.make_node("ReduceMean", [sq], [v], axes=axes, keepdims=1),
        helper.make_node("Reshape", [m, "__calib_flat"], [mean]),
        helper.make_node("Reshape", [v, "__calib_flat"], [var]),
    ]


def _ranks(model: onnx.ModelProto) -> dict[str, int]:
    skeleton = onnx.ModelProto()
    skeleton.CopyFrom(model)
    del skeleton.graph.initializer[:]  # shapes only: inference never needs the weights' values
    skeleton.graph.input.extend(
        helper.make_tensor_value_info(t.name, t.data_type, list(t.dims)) for t in model.graph.initializer
    )
    inferred = onnx.shape_inference.infer_shapes(skeleton)
    values = [*inferred.graph.value_info, *inferred.graph.input, *inferred.graph.output]
    return {v.name: len(v.type.tensor_type.shape.dim) for v in values if v.type.tensor_type.HasField("shape")}
