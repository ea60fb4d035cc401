"""Latency: median and p90 of N timed runs after a warm-up, on ONNX Runtime or Polygraphy's TensorRT runner.

Backends: ``cpu`` (ONNX Runtime CPU), ``cuda`` and ``tensorrt`` (ONNX Runtime's execution providers, which
need onnxruntime-gpu and a CUDA device), ``trt`` (Polygraphy's TrtRunner: TensorRT and a CUDA device). Each
is gated on a real check: ONNX Runtime silently falls back to the CPU when a provider cannot start, so the
session's providers are read back, and a fallback is a CapabilityError rather than a CPU figure under a GPU
name. Several models are timed interleaved, run by run, so that a busy machine slows them alike.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from onnxprune.devices import has_cuda_device, has_module
from onnxprune.errors import CapabilityError, UsageError
from onnxprune.files import read_model
from onnxprune.inputs import make_inputs, resolve_shapes
from onnxprune.runtime import quiet_onnxruntime, quiet_options

Shape = tuple[int, ...]
MAX_RUNS = 100_000
BACKENDS = ("cpu", "cuda", "tensorrt", "trt")
_PROVIDERS = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider",
              "tensorrt": "TensorrtExecutionProvider"}  # fmt: skip


@dataclass(frozen=True)
class BenchOptions:
    runs: int = 50
    warmup: int = 5
    threads: int | None = None  # ONNX Runtime intra-op threads; None: its default (every core)
    backend: str = "cpu"
    shapes: Mapping[str, Shape] | None = None
    seed: int = 0
    min_seconds: float = 0.0

    def check(self) -> None:
        if self.runs < 1 or self.warmup < 0:
            raise UsageError(f"--runs must be >= 1 and --warmup >= 0, got {self.runs} and {self.warmup}")
        if self.threads is not None and self.threads < 1:
            raise UsageError(f"--threads must be at least 1, got {self.threads}")
        if self.backend not in BACKENDS:
            raise UsageError(f"--backend must be one of {', '.join(BACKENDS)}, got {self.backend!r}")


@dataclass(frozen=True)
class Latency:
    name: str
    backend: str
    median_ms: float
    p90_ms: float
    runs: int
    inputs: dict[str, Shape]

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "backend": self.backend, "median_ms": self.median_ms,
                "p90_ms": self.p90_ms, "runs": self.runs,
                "inputs": {k: list(v) for k, v in self.inputs.items()}}  # fmt: skip


def available_backends() -> list[str]:
    """Backends this machine can time on, from real checks (an installed provider and a CUDA device)."""

    found = []
    try:
        import onnxruntime as ort

        providers = set(ort.get_available_providers())
        found += [b for b in ("cpu", "cuda", "tensorrt") if _PROVIDERS[b] in providers]
    except ImportError:
        pass
    gpu = has_cuda_device()
    found = [b for b in found if b == "cpu" or gpu]
    if gpu and has_module("tensorrt"):
        found.append("trt")
    return found


def bench(
    models: Sequence[onnx.ModelProto | str | Path],
    options: BenchOptions,
    names: Sequence[str] | None = None,
    progress: Callable[[str], None] | None = None,
) -> list[Latency]:
    """Time each model on the same seeded feed (shapes from ``options.shapes`` or the defaults).
    ``progress(step)`` is told each step as it starts (loading, warming up, timing)."""

    options.check()
    say = progress or (lambda _step: None)
    labels = list(names) if names is not None else [_label(m, i) for i, m in enumerate(models)]
    protos = [_header(m) for m in models]
    shapes = resolve_shapes(protos[0], options.shapes)
    feed = make_inputs(protos[0], seed=options.seed, shapes=shapes)[0]
    runners = []
    for model, label in zip(models, labels, strict=True):
        say(f"loading {label}")
        runners.append(_runner(model, options))
    for run, label in zip(runners, labels, strict=True):
        say(f"warming up {label}")
        for _ in range(options.warmup):
            run(feed)
    say("timing " + " and ".join(labels))
    times: list[list[float]] = [[] for _ in runners]
    began = time.perf_counter()
    # Tiny models run in microseconds: a busy machine's hiccups would decide their median, so at least
    # ``min_seconds`` of runs are taken (every model as many).
    while len(times[0]) < options.runs or (
        time.perf_counter() - began < options.min_seconds and len(times[0]) < MAX_RUNS
    ):
        for run, samples in zip(runners, times, strict=True):
            start = time.perf_counter()
            run(feed)
            samples.append((time.perf_counter() - start) * 1e3)
    return [
        Latency(
            label, options.backend, float(np.median(t)), float(np.percentile(t, 90)), options.runs, shapes
        )
        for label, t in zip(labels, times, strict=True)
    ]


def _label(model: onnx.ModelProto | str | Path, index: int) -> str:
    return Path(model).name if isinstance(model, str | Path) else f"model {index + 1}"


def _header(model: onnx.ModelProto | str | Path) -> onnx.ModelProto:
    if isinstance(model, onnx.ModelProto):
        return model

    return read_model(model)


def _runner(model: onnx.ModelProto | str | Path, options: BenchOptions) -> Callable[[dict], Any]:
    if options.backend == "trt":
        return _trt_runner(model)
    session = _ort_session(model, options)
    names = [o.name for o in session.get_outputs()]
    return lambda feed: session.run(names, feed)


def _ort_session(model: onnx.ModelProto | str | Path, options: BenchOptions) -> Any:
    try:
        ort = quiet_onnxruntime()
    except ImportError:
        raise CapabilityError("ONNX Runtime is not installed: pip install 'onnxprune[cpu]'") from None
    provider = _PROVIDERS[options.backend]
    if options.backend != "cpu" and options.backend not in available_backends():
        raise CapabilityError(
            f"backend {options.backend!r} needs onnxruntime-gpu ('onnxprune[gpu]') and a CUDA device"
        )
    so = quiet_options(ort)
    if options.threads is not None:
        so.intra_op_num_threads = options.threads
    source = str(model) if isinstance(model, str | Path) else model.SerializeToString()
    providers = list(dict.fromkeys([provider, "CPUExecutionProvider"]))
    session = ort.InferenceSession(source, sess_options=so, providers=providers)
    if session.get_providers()[0] != provider:
        raise CapabilityError(f"ONNX Runtime could not start {provider} here (it fell back to the CPU)")
    return session


def _trt_runner(model: onnx.ModelProto | str | Path) -> Callable[[dict], Any]:

    if not (has_module("tensorrt") and has_cuda_device()):
        raise CapabilityError(
            "backend 'trt' needs TensorRT ('onnxprune[trt]', from pypi.nvidia.com) and a GPU"
        )
    from polygraphy.backend.trt import EngineFromNetwork, NetworkFromOnnxBytes, TrtRunner

    data = Path(model).read_bytes() if isinstance(model, str | Path) else model.SerializeToString()
    runner = TrtRunner(EngineFromNetwork(NetworkFromOnnxBytes(data)))
    runner.activate()  # held for the process: the engine is built once, timed many times
    return lambda feed: runner.infer(feed, check_inputs=False)


def bench_record(
    models: Sequence[onnx.ModelProto | str | Path],
    options: BenchOptions,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """``bench`` as the report's JSON: the options, and per model median, p90 and ratio to the first."""
    rows = bench(models, options, progress=progress)
    base = rows[0].median_ms
    return {
        "backend": options.backend,
        "runs": rows[0].runs,
        "warmup": options.warmup,
        "threads": options.threads,
        "models": [dict(r.to_dict(), ratio=r.median_ms / base) for r in rows],
    }
