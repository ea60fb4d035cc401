"""devices.py: the package and CUDA-driver probes answer yes or no, whatever the import system or the driver
does (a stand-in driver here: this machine may have none)."""

from __future__ import annotations

import ctypes
import importlib.util

from onnxprune.devices import compute_capabilities, has_cuda_device, has_module


class Driver:
    """The four CUDA driver calls the probes make."""

    def __init__(self, init_status: int, capabilities: list[tuple[int, int]]):
        self.init_status, self.capabilities = init_status, capabilities

    def cuInit(self, flags):  # noqa: N802 - the CUDA driver's name
        return self.init_status

    def cuDeviceGetCount(self, pointer):  # noqa: N802
        pointer._obj.value = len(self.capabilities)
        return 0

    def cuDeviceGet(self, pointer, index):  # noqa: N802
        pointer._obj.value = index
        return 0

    def cuDeviceGetAttribute(self, pointer, attribute, device):  # noqa: N802
        major, minor = self.capabilities[device.value]
        pointer._obj.value = {75: major, 76: minor}[attribute]
        return 0


def test_has_module_answers_no_when_the_lookup_fails(monkeypatch):
    def broken(name, *args, **kwargs):
        raise ValueError("tensorrt.__spec__ is None")

    monkeypatch.setattr(importlib.util, "find_spec", broken)
    assert has_module("tensorrt") is False


def test_has_module_finds_an_installed_package_without_importing_it():
    assert has_module("numpy") and not has_module("no_such_package_here")


def test_the_probes_ask_the_driver(monkeypatch):
    monkeypatch.setattr(ctypes, "CDLL", lambda name: Driver(0, [(8, 6), (9, 0)]))
    assert has_cuda_device() is True
    assert compute_capabilities() == [(8, 6), (9, 0)]
    monkeypatch.setattr(ctypes, "CDLL", lambda name: Driver(100, [(8, 6)]))  # CUDA_ERROR_NO_DEVICE
    assert has_cuda_device() is False and compute_capabilities() == []


def test_no_driver_library_is_no_device(monkeypatch):
    def missing(name):
        raise OSError(f"{name}: cannot open shared object file")

    monkeypatch.setattr(ctypes, "CDLL", missing)
    assert has_cuda_device() is False and compute_capabilities() == []


def test_a_driver_that_falls_over_is_no_device(monkeypatch):
    class Broken(Driver):
        def cuDeviceGetAttribute(self, pointer, attribute, device):  # noqa: N802
            raise RuntimeError("the driver fell over")

    monkeypatch.setattr(ctypes, "CDLL", lambda name: Broken(0, [(8, 6)]))
    assert compute_capabilities() == []
