"""Every tiny model the tests build is a valid ONNX model that ONNX Runtime runs, and its outputs depend on
its inputs (they move by >= 1e-2 between two random inputs): an exactness check on outputs that barely
move would prove nothing."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import tiny

from onnxprune.inputs import make_inputs
from onnxprune.runtime import run_model

MODELS = tiny.every_model()


@pytest.mark.parametrize("name", sorted(MODELS))
def test_a_tiny_model_is_valid_runs_and_depends_on_its_inputs(name: str) -> None:
    model = MODELS[name]()
    onnx.checker.check_model(model, full_check=True)
    first, second = (make_inputs(model, seed=seed)[0] for seed in (0, 1))
    a, b = run_model(model, first), run_model(model, second)
    for key in a:
        scale = float(np.abs(a[key]).max()) or 1.0
        moved = float(np.abs(a[key] - b[key]).max()) / scale
        assert moved >= 1e-2, f"{name}: output {key} moves {moved:.2g} between two inputs"


def test_the_index_holds_both_families() -> None:
    assert {n.split("/")[0] for n in MODELS} == {"prune", "sparse"}
    assert all(f"prune/{n}" in MODELS for n in tiny.REGISTRY)
