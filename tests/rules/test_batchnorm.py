"""batchnorm.py: BatchNormalization wherever it stands (after a Conv, an activation, a Concat, alone on an
identity branch) and InstanceNormalization. The first BN after a producer scores its channels."""

import numpy as np

from onnxprune import api

from ._build import Net, assert_declines, build, check_exact


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


def repvgg(seed: int = 0):
    """Two RepVGG blocks: Relu(BN(3x3) + BN(1x1) + BN(x)). The identity BN does not score (its input was
    normalised already); every BN of the residual group shares one dead mask so that a dead channel is 0 in
    each branch."""
    n = Net(seed)
    dead = n.rng.random(16) < 0.5
    x = n.act(n.bn(n.conv("input", 3, 16), 16, dead=dead), "Relu")
    for _ in range(2):
        b3 = n.bn(n.conv(x, 16, 16), 16, dead=dead)
        b1 = n.bn(n.conv(x, 16, 16, k=1), 16, dead=dead)
        x = n.node("Relu", [n.node("Sum", [b3, b1, n.bn(x, 16, dead=dead)])])
    return build(n, [n.head(x, 16)])


def test_identity_branch_bn_is_sliced():
    dead, half = check_exact(repvgg(), through="Sum")
    for result in (dead, half):
        graph = result.pruned.graph  # type: ignore[union-attr]
        dims = {t.name: t.dims[0] for t in graph.initializer}
        scales = [dims[node.input[1]] for node in graph.node if node.op_type == "BatchNormalization"]
        assert len(scales) == 7 and max(scales) < 16  # the identity BNs were sliced too


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
