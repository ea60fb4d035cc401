"""Planning: how many channels each group keeps, and which."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from onnxprune import api
from onnxprune.channels.group import ChannelGroup, Decline
from onnxprune.errors import UsageError
from onnxprune.importance import score_groups
from onnxprune.options import Criterion, PlanOptions, Scope
from onnxprune.planning import make_plan


def group(gid: int, scores: list[float], **kw: object) -> ChannelGroup:
    g = ChannelGroup(id=gid, size=len(scores), nodes=[f"/n{gid}/Conv"], **kw)  # type: ignore[arg-type]
    g.score = np.array(scores, dtype=np.float64)
    return g


def test_threshold_zero_removes_exactly_the_zero_scores() -> None:
    g = group(0, [0.0, 0.5, 0.0, 1.0])
    plan = make_plan([g], PlanOptions(threshold=0.0, round_to=1, min_keep=1))
    assert plan.keep(g).tolist() == [1, 3]


def test_global_ratio_ranks_all_groups_together() -> None:
    low, high = group(0, [0.1] * 8), group(1, [0.9] * 8)
    plan = make_plan([low, high], PlanOptions(ratio=0.5, round_to=1, min_keep=1, max_group_ratio=1.0))
    assert (plan.kept_count(low), plan.kept_count(high)) == (1, 8), (
        "the low group loses its channels first (never all of them)"
    )
    plan = make_plan([low, high], PlanOptions(ratio=0.5, round_to=1, min_keep=1))
    assert (plan.kept_count(low), plan.kept_count(high)) == (2, 6), (
        "by default no group loses more than 85% (floor(0.85 * 8) = 6)"
    )


def test_layer_scope_applies_the_ratio_per_group() -> None:
    low, high = group(0, [0.1] * 8), group(1, [0.9] * 8)
    plan = make_plan([low, high], PlanOptions(ratio=0.5, round_to=1, min_keep=1, scope="layer"))
    assert (plan.kept_count(low), plan.kept_count(high)) == (4, 4)


def test_kept_counts_round_up_to_multiples_and_respect_min_keep() -> None:
    g = group(0, list(np.linspace(0, 1, 64)))
    plan = make_plan([g], PlanOptions(ratio=0.6, round_to=8, min_keep=8, scope="layer"))
    assert plan.kept_count(g) == 32  # 64 - 38 = 26 → 32
    g = group(1, list(np.linspace(0, 1, 64)))
    plan = make_plan([g], PlanOptions(ratio=0.99, round_to=8, min_keep=16, scope="layer"))
    assert plan.kept_count(g) == 16


def test_counts_that_are_not_multiples_round_within_what_exists() -> None:
    g = group(0, list(np.linspace(0, 1, 12)))
    plan = make_plan([g], PlanOptions(ratio=0.2, round_to=8, min_keep=1, scope="layer"))
    assert plan.kept_count(g) == 12


def test_kept_channels_are_the_best_in_index_order() -> None:
    g = group(0, [0.3, 0.9, 0.1, 0.8, 0.2, 0.7, 0.0, 0.6])
    plan = make_plan([g], PlanOptions(ratio=0.5, round_to=1, min_keep=1))
    assert plan.keep(g).tolist() == [1, 3, 5, 7]


def test_must_keep_channels_survive_first() -> None:
    g = group(0, [0.0, 0.9, 0.1, 0.8], must_keep=np.array([True, False, False, False]))
    plan = make_plan([g], PlanOptions(threshold=0.5, round_to=1, min_keep=1))
    assert plan.keep(g).tolist() == [0, 1, 3]


def test_declined_and_excluded_groups_keep_everything() -> None:
    declined = group(0, [0.0] * 8, declines=[Decline("reaches graph output 'y'", "/head/Conv")])
    excluded = group(1, [0.0] * 8)
    plan = make_plan([declined, excluded], PlanOptions(threshold=0.0, round_to=1, exclude=["/n1/*"]))
    assert plan.keep(declined) is None and plan.keep(excluded) is None
    assert "excluded by --exclude" in plan.declines(excluded)[0].reason


def test_tied_groups_keep_equal_counts_whose_total_is_a_multiple() -> None:
    ties = [group(k, list(np.random.default_rng(k).random(4)), tie=0) for k in range(4)]
    plan = make_plan(ties, PlanOptions(ratio=0.5, round_to=8, min_keep=1))
    assert len({plan.kept_count(g) for g in ties}) == 1
    assert sum(plan.kept_count(g) for g in ties) % 8 == 0


def test_a_declined_tie_member_declines_the_tie() -> None:
    ties = [group(k, [0.0, 1.0], tie=0) for k in range(2)]
    ties[0].declines.append(Decline("reaches graph output 'y'", ""))
    plan = make_plan(ties, PlanOptions(threshold=0.0, round_to=1, min_keep=1))
    assert plan.keep(ties[1]) is None


@pytest.mark.parametrize(
    "kwargs",
    [
        {"ratio": 1.5},
        {"ratio": -0.1},
        {},
        {"ratio": 0.5, "threshold": 0.1},
        {"ratio": 0.5, "round_to": 0},
        {"ratio": 0.5, "scope": "model"},
        {"threshold": float("nan")},
        {"ratio": 0.5, "criterion": "bogus"},
        {"ratio": 0.5, "exclude": [3]},
    ],
)
def test_bad_options_are_usage_errors(kwargs: dict) -> None:
    """The options validate themselves: the API refuses what the CLI refuses, before any model is read."""
    with pytest.raises(UsageError):
        PlanOptions(**kwargs)


def test_options_take_plain_strings_and_cannot_change_after_the_check() -> None:
    options = PlanOptions(ratio=0.5, scope="layer", criterion="l2", exclude="/stem/*")
    assert (options.scope, options.criterion, options.exclude) == (Scope.LAYER, Criterion.L2, ("/stem/*",))
    assert options.to_dict() == {
        "ratio": 0.5, "threshold": None, "round_to": "auto", "min_keep": 8, "scope": "layer",
        "exclude": ["/stem/*"], "criterion": "l2", "compensate": "auto", "max_group_ratio": 0.85,
        "allocate": "auto", "device": "tensorrt",
        "width_step": 8, "aligned_to": 8,  # what auto resolved to (pinned to 8 for tests: conftest.py)
        "width_reason": options.to_dict()["width_reason"],
    }  # fmt: skip
    with pytest.raises(dataclasses.FrozenInstanceError):
        options.ratio = 2.0  # type: ignore[misc]
    with pytest.raises(UsageError):
        dataclasses.replace(options, ratio=2.0)


def test_a_bad_criterion_is_refused_by_the_api_too(tmp_path) -> None:
    with pytest.raises(
        UsageError, match="--criterion must be one of auto, gamma, l1, l2, activation, rebuild, got 'bogus'"
    ):
        api.inspect(tmp_path / "missing.onnx", criterion="bogus")
    with pytest.raises(UsageError, match="--criterion"):
        score_groups([group(0, [1.0])], "bogus")


def test_max_group_ratio_caps_a_group_and_moves_the_rest_elsewhere():
    low, high = group(0, list(np.linspace(0.0, 0.09, 10))), group(1, list(np.linspace(1.0, 1.9, 10)))
    plan = make_plan([low, high], PlanOptions(ratio=0.5, round_to=1, min_keep=1, max_group_ratio=0.6))
    assert (plan.kept_count(low), plan.kept_count(high)) == (
        4,
        6,
    )  # 6 from the low group (its cap), the other 4 from the next
    assert plan.keep(high).tolist() == list(range(4, 10))
    plan = make_plan([low, high], PlanOptions(ratio=0.5, round_to=1, min_keep=1, max_group_ratio=1.0))
    assert (plan.kept_count(low), plan.kept_count(high)) == (
        1,
        10,
    )  # uncapped: the low group goes down to its minimum


def test_max_group_ratio_must_be_a_fraction():
    for bad in (0.0, 1.5):
        with pytest.raises(UsageError, match="--max-group-ratio"):
            PlanOptions(ratio=0.5, max_group_ratio=bad)


def test_the_activation_criterion_needs_data() -> None:
    """Without calibration data there is nothing to rank by activation: refused, not scored by L1."""
    with pytest.raises(UsageError, match="--criterion activation ranks channels on calibration data"):
        score_groups([group(0, [1.0])], "activation")
