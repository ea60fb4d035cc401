"""backends.py: which builder ``auto`` takes, what each needs, and why a plan cannot run here; answered from
stand-in probes, so every machine takes every branch."""

from __future__ import annotations

import sys
import types

import pytest

from onnxprune.engine import backends
from onnxprune.engine.backends import RTX, TENSORRT, require, resolve, unavailable
from onnxprune.errors import CapabilityError, UsageError


def _machine(monkeypatch, modules=(), device=False, capabilities=()):
    """A machine with the packages ``modules`` (installed and importable) and a device or not."""
    monkeypatch.setattr(backends, "has_module", lambda name: name in modules)
    for name in modules:
        if name not in sys.modules:
            monkeypatch.setitem(sys.modules, name, types.ModuleType(name))
    monkeypatch.setattr(backends, "has_cuda_device", lambda: device)
    monkeypatch.setattr(backends, "compute_capabilities", lambda: list(capabilities))


@pytest.mark.parametrize(
    ("modules", "device", "picked"),
    [
        (("tensorrt", "tensorrt_rtx"), True, TENSORRT),  # TensorRT where it imports and a GPU is there
        (("tensorrt", "tensorrt_rtx"), False, RTX),  # no GPU: TensorRT cannot build, RTX can
        (("tensorrt_rtx",), True, RTX),
        ((), False, RTX),  # neither: RTX, which says what is missing
    ],
)
def test_auto_takes_tensorrt_with_a_gpu_else_rtx(monkeypatch, modules, device, picked):
    _machine(monkeypatch, modules, device)
    assert resolve("auto") is picked
    assert resolve("tensorrt") is TENSORRT and resolve("rtx") is RTX


def test_rtx_builds_without_a_gpu_tensorrt_does_not(monkeypatch):
    _machine(monkeypatch, ("tensorrt", "tensorrt_rtx"), device=False)
    assert unavailable("rtx") is None and unavailable("auto") is None
    why = unavailable("tensorrt")
    assert why is not None and "needs a CUDA device" in why


def test_with_neither_one_line_names_both_extras(monkeypatch):
    _machine(monkeypatch)
    why = unavailable("auto")
    assert why is not None and "\n" not in why
    assert "onnxprune[rtx]" in why and "onnxprune[trt]" in why
    with pytest.raises(CapabilityError, match=r"onnxprune\[rtx\]"):
        require("auto")


def test_a_bad_choice_is_a_usage_error():
    from onnxprune.engine import BuildOptions

    with pytest.raises(UsageError, match="--backend must be one of auto, tensorrt, rtx"):
        BuildOptions(backend="metal")


def test_an_rtx_that_does_not_load_is_found_before_any_work(monkeypatch):
    _machine(monkeypatch, ("tensorrt_rtx",))
    monkeypatch.setitem(sys.modules, "tensorrt_rtx", None)  # `import tensorrt_rtx` raises ImportError
    with pytest.raises(CapabilityError, match="TensorRT-RTX is installed but does not load"):
        require("rtx")


@pytest.mark.parametrize(
    ("capabilities", "targets", "runs"),
    [
        ([(8, 6)], (), True),
        ([(9, 0)], (), False),  # an H100: not a GPU TensorRT-RTX compiles for
        ([(7, 5)], (), False),  # Turing only when asked for
        ([(7, 5)], ("7.5",), True),
        ([(9, 0), (12, 0)], ("12.0",), True),
    ],
)
def test_an_rtx_plan_runs_only_on_a_gpu_it_was_compiled_for(monkeypatch, capabilities, targets, runs):
    _machine(monkeypatch, ("tensorrt_rtx",), device=True, capabilities=capabilities)
    why = RTX.not_runnable(targets)
    assert (why is None) == runs, why
    if not runs:
        assert "compute capability" in why


def test_without_a_device_no_plan_runs_here(monkeypatch):
    _machine(monkeypatch, ("tensorrt", "tensorrt_rtx"), device=False)
    for backend in (TENSORRT, RTX):
        why = backend.not_runnable()
        assert why is not None and "no CUDA device" in why


def test_auto_passes_over_a_tensorrt_that_does_not_import(monkeypatch):
    _machine(monkeypatch, ("tensorrt", "tensorrt_rtx"), device=True)
    monkeypatch.setitem(sys.modules, "tensorrt", None)  # installed, but `import tensorrt` fails
    assert resolve("auto") is RTX
