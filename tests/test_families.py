"""Real CNN families: every topology in tests/data, with seeded weights (tests/weights.py).

For every model with BatchNormalization, ``prune --ratio 0.5`` with the defaults (round_to 8, min_keep 8)
gives a model that validates and runs with the original output shapes (prune_model checks both), matches
its masked reference, cuts MACs at least as far as it did when these tests were written, and keeps every
pruned group (every grouped-Conv tie, summed) at a multiple of 8 or whole. Pruning exactly the dead channels
leaves the outputs unchanged. The two models without BN are ranked by filter norm, or declined with reasons.
"""

from __future__ import annotations

import collections

import numpy as np
import onnx
import pytest
import tiny
import weights
from onnx import numpy_helper

from onnxprune import api
from onnxprune.options import PlanOptions

NO_BN = ("convnext_tiny", "squeezenet1_1")
BN_MODELS = [name for name in weights.topologies() if name not in NO_BN]
# MBConv with squeeze-excite after the depthwise BN: see test_dead_channels_a_live_gate_scales_are_kept.
SE_AFTER_DEPTHWISE = ("efficientnet_b0", "mobilenet_v3_large")
# MACs after / before at --ratio 0.5 when these tests were written, plus a margin: a ceiling, not a target.
MAX_MACS = {
    "densenet121": 0.45,
    "efficientnet_b0": 0.48,
    "googlenet": 0.35,
    "mnasnet1_0": 0.48,
    "mobilenet_v2": 0.47,
    "mobilenet_v3_large": 0.50,
    "regnet_y_400mf": 0.76,
    "resnet18": 0.44,
    "resnet50": 0.31,
    "resnext50_32x4d": 0.45,
    "shufflenet_v2_x1_0": 0.37,
    "vgg11_bn_fc256": 0.33,
    "yolov8n": 0.41,
}


def assert_rounded(result: api.PruneResult, step: int) -> None:
    """Kept counts are multiples of ``step`` or the whole group; a grouped Conv's tie counts as one."""
    ties: dict[int, list] = collections.defaultdict(list)
    kept = {g.id: result.plan.kept_count(g) for g in result.groups}
    for group in result.groups:
        if group.id in result.plan.kept and group.tie >= 0:
            ties[group.tie].append(group)
        elif group.id in result.plan.kept:
            assert kept[group.id] % step == 0 or kept[group.id] == group.size, (group.id, kept, group.size)
    for members in ties.values():
        total = sum(kept[g.id] for g in members)
        assert total % step == 0 or all(kept[g.id] == g.size for g in members), [kept[g.id] for g in members]


@pytest.mark.parametrize("name", BN_MODELS)
def test_half_ratio_with_defaults(name):
    result = api.prune_model(weights.load(name), PlanOptions(ratio=0.5))
    macs = result.report["macs"]
    assert macs["after"] / macs["before"] <= MAX_MACS[name]
    assert_rounded(result, 8)
    tiny.assert_exact(result.masked, result.pruned)


@pytest.mark.parametrize("name", BN_MODELS)
def test_dead_channels_are_exact(name):
    """Every BN kills its own random 30% (materialize.py's --dead): channels dead where they are scored
    go, and the outputs do not move."""
    model = weights.load(name, dead=0.3)
    result = tiny.prune_dead(model)
    assert tiny.removed_channels(result) > 0
    tiny.assert_exact(model, result.pruned)


@pytest.mark.parametrize("name", SE_AFTER_DEPTHWISE)
def test_dead_channels_a_live_gate_scales_are_kept(name):
    """In MBConv a channel dead at the expand BN becomes a constant c after the depthwise BN, and the live
    squeeze-excite gate scales it: removing it would move the outputs, so --threshold 0 keeps it."""
    result = tiny.prune_dead(weights.load(name, dead=0.3))
    kept_dead = 0
    for group in result.groups:
        keep = result.plan.keep(group)
        if group.gamma is None or group.inexact is None or keep is None:
            continue
        dead = (group.gamma == 0) & group.inexact
        kept_dead += int(np.isin(np.flatnonzero(dead), keep).sum())
    assert kept_dead > 0


def zero_filters(model: onnx.ModelProto, fraction: float = 0.3, seed: int = 0) -> onnx.ModelProto:
    """Without BN a dead channel is a zero filter: weight rows and bias of every Conv (the classifier's stay,
    as its channels reach the output)."""
    rng = np.random.default_rng(seed)
    inits = {t.name: t for t in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type != "Conv":
            continue
        dead = rng.random(inits[node.input[1]].dims[0]) < fraction
        for name in node.input[1:3]:
            values = numpy_helper.to_array(inits[name]).copy()
            values[dead] = 0
            inits[name].CopyFrom(numpy_helper.from_array(values, name))
    return model


def test_squeezenet_ranks_by_filter_norm():
    result = api.prune_model(weights.load("squeezenet1_1"), PlanOptions(ratio=0.5))
    assert {g["criterion"] for g in result.report["groups"]} == {"l1"}
    assert result.report["macs"]["after"] < 0.6 * result.report["macs"]["before"]
    assert_rounded(result, 8)
    tiny.assert_exact(result.masked, result.pruned)
    model = zero_filters(weights.load("squeezenet1_1"))
    dead = tiny.prune_dead(model)
    assert tiny.removed_channels(dead) > 0
    tiny.assert_exact(model, dead.pruned)


def test_convnext_channels_last_blocks_decline():
    """ConvNeXt runs its MLP in NHWC (Transpose → LayerNorm → MatMul): onnxprune follows the channels to
    axis 3, where LayerNormalization normalises across them, so every block's channels are declined, each
    with its reason."""
    inspection = api.inspect(weights.load("convnext_tiny"))
    declined = [g for g in inspection.groups if g.nodes and not g.prunable]
    reasons = {d.reason for g in declined for d in g.declines}
    assert "LayerNormalization of a tensor whose channels are on axis 3, not 1" in reasons
    assert "MatMul with a run-time weight, a transposed or non-2-D input" in reasons
    assert not [g for g in inspection.groups if g.prunable and g.producers and g.size > 3]


def test_shufflenet_chunk_bounds_are_folded_at_load():
    """shufflenet_v2 computes its chunk bounds from Shape at run time; load folds them to constants, so each
    channel shuffle is followed as a permutation and replaced by a Gather."""
    model = weights.load("shufflenet_v2_x1_0")
    result = api.prune_model(model, PlanOptions(ratio=0.5))
    assert result.report["macs"]["after"] < 0.4 * result.report["macs"]["before"]
    assert len(result.report["declined"]) == 2  # the input's channels and the logits
    assert [n.op_type for n in result.pruned.graph.node].count("Gather") == 16
    assert_rounded(result, 8)
    tiny.assert_exact(result.masked, result.pruned)
