"""The real TensorRT-RTX, where its wheel installs and loads: ``needs_rtx`` skips saying why elsewhere
(its wheels are for x86-64 Linux and Windows; ``make setup`` installs the ``[rtx]`` extra)."""

from __future__ import annotations

import importlib

import pytest


def _why_not() -> str | None:
    try:
        importlib.import_module("tensorrt_rtx")
    except ImportError as err:
        return (
            f"TensorRT-RTX is not installed here ({err}); pip install 'onnxprune[rtx]' (x86-64 Linux/Windows)"
        )
    except OSError as err:
        return f"TensorRT-RTX is installed but its libraries do not load on this platform: {err}"
    return None


WHY_NOT = _why_not()
needs_rtx = pytest.mark.skipif(WHY_NOT is not None, reason=WHY_NOT or "")
