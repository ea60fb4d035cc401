"""--criterion rebuild: channels the kept ones rebuild best are removed first. The greedy order is forward
selection of what the consumers read (checked against a brute-force computation of the same), and a
channel that copies another goes first whatever its norm, and its removal is exact."""

from __future__ import annotations

import numpy as np
import pytest

from onnxprune import api
from onnxprune.compensate.calibrate import CalibOptions
from onnxprune.errors import UsageError
from onnxprune.redundancy import Block, forward_order, scores_from_order

from ._models import conv, model, run, samples


def _explained(cov: np.ndarray, weight: np.ndarray, kept: list[int]) -> float:
    """tr(M Cov[:, K] Cov[K, K]^-1 Cov[K, :]): the consumer output energy a least-squares rebuild from the
    kept channels ``K`` keeps."""
    if not kept:
        return 0.0
    part = cov[:, kept] @ np.linalg.solve(cov[np.ix_(kept, kept)], cov[kept, :])
    return float(np.trace(weight @ part))


def test_forward_order_is_greedy_selection_of_explained_energy():
    rng = np.random.default_rng(3)
    mix = rng.standard_normal((7, 7)) + 2.0 * np.eye(7)
    cov = mix @ mix.T
    w = rng.standard_normal((5, 7))
    weight = w.T @ w
    order, gains = forward_order(7, [Block(np.arange(7), cov, weight, 1.0)], np.zeros(7))
    kept: list[int] = []
    for step in range(7):
        best = max((c for c in range(7) if c not in kept), key=lambda c: _explained(cov, weight, kept + [c]))
        assert order[step] == best
        gain = _explained(cov, weight, kept + [best]) - _explained(cov, weight, kept)
        assert gains[step] == pytest.approx(gain, rel=1e-6)
        kept.append(best)


def test_scores_rank_in_selection_order_and_constant_channels_score_zero():
    order, gains = np.array([2, 0, 3, 1]), np.array([5.0, 1.0, 1.5, 0.0])
    score = scores_from_order(order, gains, np.array([False, True, False, False]))
    assert score[1] == 0.0
    assert score[2] > score[0] > score[3] > 0


def _copied():
    """x -> A (4 -> 4, 1x1, bias) -> t -> B (4 -> 3, 3x3) -> y; A's channel 3 is the sum of channels 0 and 1
    (filter and bias): a rebuild from two of the three gives the third back; channel 2 is the smallest."""
    rng = np.random.default_rng(0)
    a, bias = rng.standard_normal((4, 4, 1, 1)), rng.standard_normal(4)
    a[2], bias[2] = 0.3 * a[2], 0.3 * bias[2]  # the smallest filter, and nothing else carries it
    a[3], bias[3] = a[0] + a[1], bias[0] + bias[1]
    nodes = [conv("A", "x", "wa", "t", "ba", pad=0), conv("B", "t", "wb", "y")]
    return model(nodes, {"wa": a, "ba": bias, "wb": rng.standard_normal((3, 4, 3, 3))})


def _pruned(criterion: str):
    plan = api.PlanOptions(ratio=0.25, criterion=criterion, round_to=1, min_keep=1, compensate="calib")
    calib = api.CalibRequest(samples=samples(40), options=CalibOptions(steps=("rebuild",)))
    result = api.prune_model(_copied(), plan, api.VerifyOptions(enabled=False), calib)
    (group,) = [g for g in result.groups if g.prunable]
    feed = samples(3, seed=9)
    want, got = run(_copied(), feed)["y"], run(result.pruned, feed)["y"]
    return group, result.plan.keep(group), float(np.linalg.norm(got - want) / np.linalg.norm(want))


def test_a_channel_the_others_rebuild_is_removed_first_and_nearly_exactly():
    group, kept, error = _pruned("rebuild")
    assert group.criterion == "rebuild"
    lowest = int(np.argmin(group.score))
    assert lowest in (0, 1, 3) and group.score[lowest] < 1e-6 * group.score.max()
    assert kept.tolist() == sorted({0, 1, 2, 3} - {lowest})
    l1_group, l1_kept, l1_error = _pruned("l1")
    assert l1_kept.tolist() == [0, 1, 3]  # l1 removes the smallest filter
    assert error < 1e-2 and l1_error > 10 * error


def test_rebuild_needs_calibration_data():
    with pytest.raises(UsageError, match="--calib"):
        api.prune_model(_copied(), api.PlanOptions(ratio=0.3, criterion="rebuild"))


def test_the_sensitivity_allocation_ranks_by_rebuild_by_default():
    """``--target-macs`` with calibration data (criterion auto): the scan and the plan rank channels on the
    rebuild's statistics, so the cut is the channel the others give back, not the smallest filter."""
    calib = api.CalibRequest(samples=samples(60), options=CalibOptions(steps=("rebuild",)))
    plan = api.PlanOptions(ratio=0.0, round_to=1, min_keep=1)
    result = api.prune_model(
        _copied(), plan, api.VerifyOptions(enabled=False), calib, target=api.Target("macs", 0.75)
    )
    (group,) = [g for g in result.groups if g.prunable]
    assert result.report["allocation"]["method"] == "sensitivity"
    assert group.criterion == "rebuild"
    assert len(result.plan.keep(group)) == 3 and 2 in result.plan.keep(group)
