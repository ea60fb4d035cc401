"""The engine builders a model can be handed to, and which one ``auto`` takes.

- ``tensorrt``: NVIDIA TensorRT (the ``[trt]`` extra; its wheels come from NVIDIA's index). Its builder is
  created only where a CUDA device is visible, and builds for that GPU.
- ``rtx``: TensorRT for RTX (the ``[rtx]`` extra, module ``tensorrt_rtx``, on PyPI): the same ONNX parser and
  builder API, compiling ahead of time on the CPU with or without a GPU. Its plans run on RTX-class GPUs:
  compute capability 8.0, 8.6, 8.9, 12.0 and 12.1 by default, 7.5 when asked for; elsewhere (an H100 is
  9.0) a plan is built but cannot be run.

``auto`` takes TensorRT where it is installed and a CUDA device is visible, else TensorRT-RTX. Every check
here answers from ``devices.py``, without importing either package; ``load`` imports one.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from types import ModuleType

from onnxprune.devices import compute_capabilities, has_cuda_device, has_module
from onnxprune.engine.options import BiasMapForm, EngineBackend
from onnxprune.errors import CapabilityError, first_line

# What TensorRT-RTX compiles for when it is not told: its documented default set.
RTX_DEFAULT_TARGETS = ("8.0", "8.6", "8.9", "12.0", "12.1")
_NO_DEVICE = "no CUDA device is visible"


@dataclass(frozen=True)
class Backend:
    name: EngineBackend
    title: str
    module: str
    install: str  # how to get it, for the one-line error
    needs_device: bool  # to build at all
    # The bias-map form it is handed (docs/tensorrt.md). TensorRT-RTX: as the Conv of a ones image; its
    # builder fuses Conv, map Add and BN into one kernel whichever comes first, stores a dense map whole, and
    # computes a factored map or the ones-image Conv in a kernel of its own, the latter's plan the smallest of
    # the exact forms. TensorRT: behind the BN, so that its Conv + BN fusion sees the pair adjacent (reasoned,
    # not measured: scripts/gpu_check.sh times it against the ones-image Conv where TensorRT is).
    bias_maps: BiasMapForm
    sparse_note: str | None  # why 2:4 sparse weights are not used, where they are not

    def installed(self) -> bool:
        return has_module(self.module)

    def missing(self) -> list[str]:
        """Why it cannot build here: empty where it can."""
        reasons = [] if self.installed() else [f"{self.title} is not installed ({self.install})"]
        if self.needs_device and not has_cuda_device():
            reasons.append(f"{self.title} needs a CUDA device and {_NO_DEVICE}")
        return reasons

    def load(self) -> ModuleType:
        """The imported package; CapabilityError where it is installed but does not load."""
        try:
            return importlib.import_module(self.module)
        except (ImportError, OSError) as err:  # the wheel is there but its libraries are not
            raise CapabilityError(f"{self.title} is installed but does not load: {first_line(err)}") from err

    def loads(self) -> bool:
        try:
            self.load()
        except CapabilityError:
            return False
        return True

    def not_runnable(self, targets: tuple[str, ...] = ()) -> str | None:
        """Why a plan built here cannot be run here (None where it can). Asks the driver only."""
        if not has_cuda_device():
            return f"{_NO_DEVICE}, so the plan cannot be run here"
        if self.name != EngineBackend.RTX:
            return None
        wanted = targets or RTX_DEFAULT_TARGETS
        found = [f"{major}.{minor}" for major, minor in compute_capabilities()]
        if any(capability in wanted for capability in found):
            return None
        return (
            f"no GPU here runs this plan (compute capability {', '.join(found) or 'unknown'}; it was built "
            f"for {', '.join(wanted)})"
        )


TENSORRT = Backend(
    EngineBackend.TENSORRT,
    "TensorRT",
    "tensorrt",
    "pip install 'onnxprune[trt]'; its wheels come from NVIDIA's package index, pypi.nvidia.com, not PyPI",
    needs_device=True,
    bias_maps=BiasMapForm.AFTER_BN,
    sparse_note=None,
)
RTX = Backend(
    EngineBackend.RTX,
    "TensorRT-RTX",
    "tensorrt_rtx",
    "pip install 'onnxprune[rtx]'",
    needs_device=False,
    bias_maps=BiasMapForm.CONV,
    sparse_note=(
        "TensorRT-RTX compiles its kernels on the GPU when the plan is loaded: the plan is the same with and "
        "without the sparse-weights flag, so no 2:4 kernel is promised"
    ),
)
BACKENDS = {EngineBackend.TENSORRT: TENSORRT, EngineBackend.RTX: RTX}


def resolve(choice: EngineBackend | str) -> Backend:
    """The backend ``choice`` names; ``auto``: TensorRT where it imports and a device is visible (it is
    imported only then), else TensorRT-RTX (which may be missing too: ``unavailable`` says so)."""
    choice = EngineBackend(choice)
    if choice != EngineBackend.AUTO:
        return BACKENDS[choice]
    return TENSORRT if not TENSORRT.missing() and TENSORRT.loads() else RTX


def unavailable(choice: EngineBackend | str) -> str | None:
    """One line on why no plan can be built here for ``choice``; None where one can."""
    backend = resolve(choice)
    missing = backend.missing()
    if not missing:
        return None
    if EngineBackend(choice) == EngineBackend.AUTO:
        missing += TENSORRT.missing()
    return f"cannot build a plan here: {'; '.join(missing)}"


def require(choice: EngineBackend | str) -> Backend:
    """The backend, checked before any work: CapabilityError where it cannot build, or does not load."""
    why = unavailable(choice)
    if why is not None:
        raise CapabilityError(why)
    backend = resolve(choice)
    if not backend.needs_device:
        backend.load()  # importing needs no GPU: a broken install is found now, not after the work
    return backend
