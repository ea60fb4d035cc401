"""batchnorm.py: BatchNormalization wherever it stands (after a Conv, an activation, a Concat, alone on an
identity branch) and InstanceNormalization. The first BN after a producer scores its channels, and so does
the identity branch of a multi-branch block (RepVGG, MobileOne)."""

import numpy as np
import pytest

from onnxprune import api
from onnxprune.options import PlanOptions

from ._build import Net, assert_declines, build, check_exact, tiny


def densenet(seed: int = 0):
    """Two DenseNet layers (BN → Relu → 1x1 → BN → Relu → 3x3, concatenated) and a transition. Each BN
    over a Concat normalises (and scores) the channels of every earlier feature map: a channel is dead
    where all of them say so, hence one dead mask per feature map, repeated in every BN that sees it."""
    n = Net(seed)
    dead = {k: n.rng.random(8) < 0.4 for k in range(3)}
    feats = [n.conv("input", 3, 8)]
    for k in (1, 2):
        x = n.node("Concat", feats, axis=1) if len(feats) > 1 else feats[0]
        mask = np.concatenate([dead[j] for j in range(k)])
        h = n.act(n.bn(x, 8 * k, dead=mask), "Relu")
        h = n.act(n.bn(n.conv(h, 8 * k, 16, k=1), 16), "Relu")
        feats.append(n.conv(h, 16, 8))
    x = n.node("Concat", feats, axis=1)
    x = n.act(n.bn(x, 24, dead=np.concatenate(list(dead.values()))), "Relu")
    return build(n, [n.head(n.conv(x, 24, 16, k=1), 16)])


def test_bn_after_concat_scores_every_part():
    model = densenet()
    dead, half = check_exact(model, through="Concat")
    first = model.graph.node[0].name  # the stem Conv, normalised by all three BNs after Concats
    group = next(g for g in dead.report["groups"] if first in g["producers"])  # type: ignore[union-attr]
    assert group["channels_after"] < group["channels_before"] == 8


def test_bn_after_an_activation_scores():
    """Conv → Relu → BN: Relu(0) is still the producer's 0, so this BN is the first one."""
    n = Net()
    x = n.bn(n.node("Relu", [n.conv("input", 3, 16)]), 16)
    model = build(n, [n.head(n.cbr(x, 16, 16), 16)])
    dead, _ = check_exact(model, through="Relu")
    group = api.inspect(model).groups[1]
    assert group.criterion == "gamma" and group.gamma is not None and not np.isnan(group.gamma).any()
    assert dead is not None


def repvgg(seed: int = 0, spatial: tuple[int | str, int | str] = (16, 16), summed: str = "Sum"):
    """Two RepVGG blocks before reparameterisation: Relu(BN(3x3) + BN(1x1) + BN(x)). The identity BN is a
    branch like the others: it scores and cuts. Every BN of the residual group shares one dead mask so that
    a dead channel is 0 in each branch. ``summed``: one Sum, or two Adds as PyTorch exports it."""
    n = Net(seed)
    dead = n.rng.random(16) < 0.5
    x = n.act(n.bn(n.conv("input", 3, 16), 16, dead=dead), "Relu")
    for _ in range(2):
        b3 = n.bn(n.conv(x, 16, 16), 16, dead=dead)
        b1 = n.bn(n.conv(x, 16, 16, k=1), 16, dead=dead)
        identity = n.bn(x, 16, dead=dead)
        if summed == "Sum":
            x = n.node("Sum", [b3, b1, identity])
        else:
            x = n.node("Add", [n.node("Add", [b3, b1]), identity])
        x = n.node("Relu", [x])
    return build(n, [n.head(x, 16)], {"input": (1, 3, *spatial)})


def test_identity_branch_bn_is_sliced():
    dead, half = check_exact(repvgg(), through="Sum")
    for result in (dead, half):
        graph = result.pruned.graph  # type: ignore[union-attr]
        dims = {t.name: t.dims[0] for t in graph.initializer}
        scales = [dims[node.input[1]] for node in graph.node if node.op_type == "BatchNormalization"]
        assert len(scales) == 7 and max(scales) < 16  # the identity BNs were sliced too


@pytest.mark.parametrize("summed", ["Sum", "Add"])
@pytest.mark.parametrize("compensate", ["none", "bn"])
def test_identity_branch_bn_cuts_its_channels(compensate, summed):
    """With dynamic spatial sizes no padded Conv can fold a bias map: a removed channel must leave the sum
    as 0, so the identity BN cuts it like the other branches' BNs (it would carry that BN's constant
    otherwise, and every channel would have to stay)."""
    model = repvgg(spatial=("h", "w"), summed=summed)
    found = api.inspect(model, compensate=compensate)
    residual = next(g for g in found.groups if g.size == 16 and g.prunable)
    assert residual.must_keep is None or not residual.must_keep.any()
    bns = [n for n in model.graph.node if n.op_type == "BatchNormalization"]
    identity = [n for n in bns if n.input[0].endswith("Relu_out0")]
    assert len(identity) == 2 and all(n.name in residual.nodes for n in identity)
    dead = tiny.prune_dead(model, compensate=compensate)
    assert tiny.removed_channels(dead) == int((residual.gamma == 0).sum()) > 0
    tiny.assert_exact(model, dead.pruned)
    half = api.prune_model(model, PlanOptions(ratio=0.5, round_to=4, min_keep=4, compensate=compensate))
    assert tiny.removed_channels(half) >= 8
    tiny.assert_exact(half.masked, half.pruned)


def mobileone(seed: int = 0):
    """A MobileOne stage before reparameterisation: a depthwise block (two 3x3 depthwise Conv+BN branches,
    a 1x1 depthwise scale branch and an identity BN, summed) and a pointwise block (two 1x1 Conv+BN branches
    and an identity BN), each followed by Relu. Spatial sizes are dynamic, as many exports leave them."""
    n = Net(seed)
    dead = n.rng.random(16) < 0.5
    x = n.act(n.bn(n.conv("input", 3, 16), 16, dead=dead), "Relu")
    for _ in range(2):
        branches = [n.bn(n.conv(x, 16, 16, group=16), 16, dead=np.zeros(16, bool)) for _ in range(2)]
        scale = n.bn(n.conv(x, 16, 16, k=1, group=16), 16, dead=np.zeros(16, bool))
        x = n.node("Relu", [n.node("Sum", [*branches, scale, n.bn(x, 16, dead=dead)])])
        branches = [n.bn(n.conv(x, 16, 16, k=1), 16, dead=dead) for _ in range(2)]
        x = n.node("Relu", [n.node("Sum", [*branches, n.bn(x, 16, dead=dead)])])
    return build(n, [n.head(x, 16)], {"input": (1, 3, "h", "w")})


@pytest.mark.parametrize("compensate", ["none", "bn"])
def test_mobileone_stage_prunes_exactly(compensate):
    """The pointwise blocks' identity BNs cut; the depthwise block's channels (not normalised by a first BN)
    carry their BNs' constants to the pointwise 1x1 Convs, which fold them."""
    model = mobileone()
    found = api.inspect(model, compensate=compensate)
    stage = next(g for g in found.groups if g.size == 16 and g.prunable)
    assert stage.must_keep is None or not stage.must_keep.any()
    dead = tiny.prune_dead(model, compensate=compensate)
    assert tiny.removed_channels(dead) == int((stage.gamma == 0).sum()) > 0
    tiny.assert_exact(model, dead.pruned)
    half = api.prune_model(model, PlanOptions(ratio=0.5, round_to=4, min_keep=4, compensate=compensate))
    assert tiny.removed_channels(half) >= 8
    tiny.assert_exact(half.masked, half.pruned)


def test_bn_summed_without_a_parallel_conv_is_an_affine():
    """A BN of an already normalised tensor whose input no Conv reads beside it is no identity branch: it
    maps a removed 0 to its constant, which a padded Conv with dynamic spatial sizes cannot fold."""
    n = Net()
    x = n.node("Relu", [n.bn(n.conv("input", 3, 16), 16)])
    y = n.node("Add", [n.bn(x, 16, dead=np.zeros(16, bool)), n.param(n.rng.normal(0, 0.1, (16, 1, 1)), "k")])
    model = build(n, [n.head(n.cbr(y, 16, 16), 16)], {"input": (1, 3, "h", "w")})
    assert_declines(model, "a removed channel would carry a constant this op cannot fold exactly", "none")


def test_instance_norm_turns_a_removed_0_into_its_bias():
    n = Net()
    x = n.cbr("input", 3, 16)
    scale, bias = n.param(n.rng.uniform(0.5, 1.5, 16), "s"), n.param(n.rng.normal(0, 0.3, 16), "b")
    y = n.node("InstanceNormalization", [x, scale, bias])
    check_exact(build(n, [n.head(n.cbr(y, 16, 16, k=1), 16)]), through="InstanceNormalization")


def test_bn_with_runtime_statistics_declines():
    n = Net()
    x = n.conv("input", 3, 8)
    params = [n.param(np.ones(8), "g"), n.param(np.zeros(8), "b"), "mean", n.param(np.ones(8), "v")]
    y = n.node("BatchNormalization", [x, *params])
    model = build(n, [n.head(y, 8)], {"input": (1, 3, 16, 16), "mean": (8,)})
    assert_declines(model, "BatchNormalization with run-time or training-mode statistics")
