"""--criterion activation: a channel that is constant on the data scores 0 (calibration folds its constant),
whatever its filter norm; removing it and refitting reproduces the original."""

from __future__ import annotations

import numpy as np
import pytest

from onnxprune import api
from onnxprune.compensate.calibrate import CalibOptions
from onnxprune.errors import UsageError

from ._models import conv, model, run, samples


def _pair():
    """x -> A (4 -> 3, 1x1, bias) -> t -> B (3 -> 2, 3x3, unpadded) -> y; A's channel 1 has a zero filter
    and a big bias: constant on every input, with the largest filter-and-bias norm of the three. (Unpadded:
    at a zero-padded border the constant would meet zeros, which a per-channel bias cannot copy.)"""
    rng = np.random.default_rng(0)
    a = rng.standard_normal((3, 4, 1, 1))
    a[1] = 0.0
    bias = np.array([0.1, 5.0, -0.2])
    nodes = [conv("A", "x", "wa", "t", "ba", pad=0), conv("B", "t", "wb", "y", pad=0)]
    return model(nodes, {"wa": a, "ba": bias, "wb": rng.standard_normal((2, 3, 3, 3))})


def test_constant_channel_scores_zero_and_is_removed_then_folded():
    original = _pair()
    plan = api.PlanOptions(ratio=0.34, criterion="activation", round_to=1, min_keep=1, compensate="calib")
    calib = api.CalibRequest(samples=samples(40), options=CalibOptions(ridge=1e-10))
    result = api.prune_model(original, plan, api.VerifyOptions(enabled=False), calib)
    (group,) = [g for g in result.groups if g.prunable]
    assert group.criterion == "activation" and group.score[1] == pytest.approx(0.0, abs=1e-6)
    assert group.score[0] > 0 and group.score[2] > 0
    assert result.plan.keep(group).tolist() == [0, 2]
    feed = samples(3, seed=9)
    want, got = run(original, feed)["y"], run(result.pruned, feed)["y"]
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


def test_activation_needs_calibration_data():
    with pytest.raises(UsageError, match="--calib"):
        api.prune_model(_pair(), api.PlanOptions(ratio=0.3, criterion="activation"))
