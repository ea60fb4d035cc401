"""What this machine has to build and run engines on, asked without importing anything heavy.

Whether a Python package is installed is asked of the import system (``find_spec``, nothing imported), and
the CUDA devices of the CUDA driver itself, through ctypes: a TensorRT builder or runtime created without a
device can take the process down, so nothing GPU-side is touched before these say yes.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import importlib.util
import sys

# CUdevice_attribute values of the CUDA driver API.
_COMPUTE_CAPABILITY_MAJOR = 75
_COMPUTE_CAPABILITY_MINOR = 76


def has_module(name: str) -> bool:
    """Whether the package ``name`` can be found (it is not imported)."""
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def has_cuda_device() -> bool:
    """Whether the CUDA driver reports at least one device. Never raises."""
    try:
        return _cuda_device_count() > 0
    except Exception:  # a probe answers yes or no, whatever the driver does
        return False


def compute_capabilities() -> list[tuple[int, int]]:
    """(major, minor) of every CUDA device the driver reports; empty where there is none. Never raises."""
    try:
        driver = _driver()
        if driver is None:
            return []
        return [_capability(driver, index) for index in range(_count(driver))]
    except Exception:  # as has_cuda_device: a probe, not a failure
        return []


def _driver() -> ctypes.CDLL | None:
    names = ["nvcuda.dll"] if sys.platform == "win32" else ["libcuda.so.1", "libcuda.so"]
    names.append(ctypes.util.find_library("cuda") or "")
    for name in filter(None, names):
        try:
            return ctypes.CDLL(name)
        except OSError:
            continue
    return None


def _count(driver: ctypes.CDLL) -> int:
    count = ctypes.c_int(0)
    # CUDA_SUCCESS is 0; cuInit fails with CUDA_ERROR_NO_DEVICE when CUDA_VISIBLE_DEVICES hides them all.
    if driver.cuInit(0) != 0 or driver.cuDeviceGetCount(ctypes.byref(count)) != 0:
        return 0
    return count.value


def _cuda_device_count() -> int:
    driver = _driver()
    return _count(driver) if driver is not None else 0


def _capability(driver: ctypes.CDLL, index: int) -> tuple[int, int]:
    device, major, minor = ctypes.c_int(0), ctypes.c_int(0), ctypes.c_int(0)
    if driver.cuDeviceGet(ctypes.byref(device), index) != 0:
        raise OSError(f"cuDeviceGet({index}) failed")
    for value, attribute in ((major, _COMPUTE_CAPABILITY_MAJOR), (minor, _COMPUTE_CAPABILITY_MINOR)):
        if driver.cuDeviceGetAttribute(ctypes.byref(value), attribute, device) != 0:
            raise OSError(f"cuDeviceGetAttribute({attribute}) failed")
    return major.value, minor.value
