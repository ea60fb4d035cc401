"""The backbone: pruning dead channels changes nothing, and any plan matches its masked reference."""

from __future__ import annotations

import build_samples
import pytest
import tiny

from onnxprune import api
from onnxprune.options import PlanOptions


@pytest.mark.parametrize("name", sorted(tiny.REGISTRY))
def test_dead_channels_prune_exactly(name: str) -> None:
    model = tiny.REGISTRY[name]()
    result = tiny.prune_dead(model)
    assert tiny.removed_channels(result) > 0, "the pattern's dead channels were not removed"
    assert result.report["macs"]["after"] < result.report["macs"]["before"]
    tiny.assert_exact(model, result.pruned)


@pytest.mark.parametrize("name", sorted(tiny.REGISTRY))
@pytest.mark.parametrize("scope", ["global", "layer"])
def test_any_plan_matches_its_masked_reference(name: str, scope: str) -> None:
    result = api.prune_model(
        tiny.REGISTRY[name](seed=3), PlanOptions(ratio=0.5, round_to=4, min_keep=4, scope=scope)
    )
    assert tiny.removed_channels(result) > 0
    tiny.assert_exact(result.masked, result.pruned)


@pytest.mark.parametrize("name", sorted(tiny.REGISTRY))
def test_pruning_live_channels_changes_outputs(name: str) -> None:
    """The exactness checks above can fail: removing live channels moves the outputs."""
    model = tiny.REGISTRY[name](seed=5, dead=0.0)
    result = api.prune_model(model, PlanOptions(ratio=0.5, round_to=1, min_keep=1))
    with pytest.raises(AssertionError, match="relative error"):
        tiny.assert_exact(model, result.pruned)


def test_dead_channel_through_depthwise_is_folded_into_the_projection_bias() -> None:
    model = tiny.depthwise()
    result = tiny.prune_dead(model)
    projection = [n for n in result.pruned.graph.node if n.op_type == "Conv"][3]
    assert len(projection.input) == 3, "the folded constant needs a bias on the 1x1 projection"
    tiny.assert_exact(model, result.pruned)


def test_bundled_sample_prunes_exactly() -> None:
    dead = build_samples.resnet_slim(dead=True)
    result = tiny.prune_dead(dead)
    assert result.report["params"]["after"] < 0.6 * result.report["params"]["before"]
    tiny.assert_exact(dead, result.pruned)
