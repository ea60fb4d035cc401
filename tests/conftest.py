"""Shared by every test: the width step of ``--round-to auto`` pinned to 8, and the ``sample`` model file.

Auto asks ONNX Runtime for its CPU channel block (measure/layout.py): 16 on an AVX-512 machine, 8 on AVX2.
Tests that count kept channels must not depend on which machine runs them, so here the block is 1 (auto = 8,
the Tensor Core multiple); tests/measure/test_layout.py asks the real ONNX Runtime and pins other blocks.
"""

from __future__ import annotations

import os
from pathlib import Path

import onnx
import pytest
import tiny

from onnxprune.measure import layout

# PyTorch (the train tests) starts one thread per core; on a loaded two-core machine they wait on each other
# and tiny convs take many times as long. Read when torch is first imported, so it must be set before.
os.environ.setdefault("OMP_NUM_THREADS", "1")


@pytest.fixture(autouse=True)
def _auto_round_to_is_8(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(layout, "cpu_channel_block", lambda: 1)


@pytest.fixture()
def sample(tmp_path: Path) -> Path:
    """The tiny residual model (tests/tiny.py) as a file: what the command-line tests prune."""
    path = tmp_path / "residual.onnx"
    onnx.save(tiny.residual(), path)
    return path
