"""The project's seeded loader for the weight-free ``tests/data/*.graph.onnx`` topologies.

Every initializer stored empty (doc_string "stripped") is filled: Conv/Gemm weights ~ N(0, sqrt(2/fan_in)),
BN scale ~ |N(1, 0.3)|, BN bias ~ N(0, 0.1), mean ~ N(0, 0.1), var ~ U(0.5, 2), anything else ~ N(0, 0.02).
``dead`` makes that fraction of every BN's channels dead (scale = 0 and bias = 0): their BN output is
exactly 0.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

DATA = Path(__file__).parent / "data"


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


def load(name: str, seed: int = 0, dead: float = 0.0) -> onnx.ModelProto:
    """A runnable copy of ``tests/data/<name>.graph.onnx`` with seeded weights."""
    return fill(onnx.load(str(DATA / f"{name}.graph.onnx")), seed, dead)
