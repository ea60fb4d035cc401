"""Parse and build with TensorRT's Python API (TensorRT and TensorRT-RTX share it), keeping what the builder
says: its log is captured, its first error is the message of a failed build together with the ONNX node it
names, and with detailed profiling verbosity its verbose log lists the engine's layers (``layers.py``).
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from onnxprune.engine.options import Profile
from onnxprune.errors import BuildError, UsageError


@dataclass(frozen=True)
class Settings:
    """How the network and the builder are set up; the backend modules fill it in."""

    strongly_typed: bool
    fp16_flag: bool = False  # weakly typed FP16 (TensorRT 10 only)
    sparse: bool = False
    workspace_mib: int | None = None
    profiles: Mapping[str, Profile] = field(default_factory=dict)
    compute_capabilities: Sequence[str] = ()  # TensorRT-RTX only: "8.6" -> ComputeCapability.SM86


@dataclass(frozen=True)
class Built:
    plan: bytes
    version: str
    seconds: float  # build_serialized_network alone: parsing and the model's preparation are not in it
    log: list[str]  # every message, in order, at VERBOSE


def captured_logger(trt: Any) -> Any:
    """A logger that keeps every message (the builder's layer list is one of them, at VERBOSE)."""

    class Captured(trt.ILogger):  # type: ignore[misc, name-defined]
        def __init__(self) -> None:
            trt.ILogger.__init__(self)
            self.messages: list[tuple[Any, str]] = []

        def log(self, severity: Any, msg: str) -> None:
            self.messages.append((severity, msg))

    return Captured()


def build(trt: Any, title: str, onnx_file: Path, settings: Settings, node_ops: Mapping[str, str]) -> Built:
    """Parses ``onnx_file`` and builds a serialized plan. ``node_ops``: the model's node names and op types,
    to name the node of a builder error. BuildError where the parser or the builder refuses it."""
    version = f"{title} {trt.__version__}"
    logger = captured_logger(trt)
    builder = trt.Builder(logger)
    strong = getattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED", None)
    flags = 1 << int(strong) if strong is not None and settings.strongly_typed else 0
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_file)):
        raise BuildError(f"{version} cannot parse the model: {_parse_error(parser)}; no plan written")
    config = builder.create_builder_config()
    _configure(trt, config, settings)
    _add_profile(builder, network, config, settings.profiles)
    began = time.perf_counter()
    plan = builder.build_serialized_network(network, config)
    seconds = time.perf_counter() - began
    if plan is None:
        raise BuildError(f"{version} could not build the engine: {_first_error(trt, logger, node_ops)}")
    return Built(bytes(plan), version, seconds, [message for _, message in logger.messages])


def _parse_error(parser: Any) -> str:
    if not parser.num_errors:
        return "no error reported"
    error = parser.get_error(0)
    node = _call(error, "node_name")
    where = f"node {node!r} ({_call(error, 'node_operator')}): " if node else ""
    return f"{where}{error.desc()}"


def _call(error: Any, name: str) -> str:
    method = getattr(error, name, None)
    return str(method()) if callable(method) else ""


def _first_error(trt: Any, logger: Any, node_ops: Mapping[str, str]) -> str:
    errors = [message for severity, message in logger.messages if severity <= trt.ILogger.Severity.ERROR]
    if not errors:
        return "no error reported; no plan written"
    first = errors[0].strip().splitlines()[0]
    node = named_node(first, node_ops)
    where = f" (node {node!r}, {node_ops[node]})" if node is not None else ""
    return f"{first}{where}; no plan written"


def named_node(message: str, node_ops: Mapping[str, str]) -> str | None:
    """The ONNX node a builder message names: a quoted name first, else the longest name it contains."""
    for quoted in re.findall(r"'([^']+)'|\"([^\"]+)\"", message):
        name = quoted[0] or quoted[1]
        if name in node_ops:
            return name
    found = [name for name in node_ops if name and len(name) > 2 and name in message]
    return max(found, key=len) if found else None


def _configure(trt: Any, config: Any, settings: Settings) -> None:
    if settings.workspace_mib is not None:
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, settings.workspace_mib << 20)
    if settings.sparse:
        config.set_flag(trt.BuilderFlag.SPARSE_WEIGHTS)
    if settings.fp16_flag:
        config.set_flag(trt.BuilderFlag.FP16)
    verbosity = getattr(trt, "ProfilingVerbosity", None)
    if verbosity is not None:
        config.profiling_verbosity = verbosity.DETAILED  # the layer list with each layer's ONNX nodes
    if settings.compute_capabilities:
        config.num_compute_capabilities = len(settings.compute_capabilities)
        for index, value in enumerate(settings.compute_capabilities):
            config.set_compute_capability(_capability(trt, value), index)


def _capability(trt: Any, value: str) -> Any:
    name = "SM" + value.replace(".", "")
    member = getattr(trt.ComputeCapability, name, None)
    if member is None:
        known = sorted(m[2:] for m in dir(trt.ComputeCapability) if m.startswith("SM"))
        offered = ", ".join(f"{m[:-1]}.{m[-1]}" for m in known)
        raise UsageError(f"--compute-capability {value} is not one {trt.__name__} builds for ({offered})")
    return member


def _add_profile(builder: Any, network: Any, config: Any, profiles: Mapping[str, Profile]) -> None:
    """One optimisation profile for the inputs with dynamic dimensions."""
    inputs = [network.get_input(i) for i in range(network.num_inputs)]
    dynamic = [tensor for tensor in inputs if any(d < 0 for d in tensor.shape)]
    if not dynamic:
        return
    profile = builder.create_optimization_profile()
    for tensor in dynamic:
        if tensor.name not in profiles:
            raise UsageError(
                f"input {tensor.name!r} has dynamic dimensions; give its build shape with --shape"
            )
        shapes = profiles[tensor.name]
        profile.set_shape(tensor.name, shapes.min, shapes.opt, shapes.max)
    config.add_optimization_profile(profile)
