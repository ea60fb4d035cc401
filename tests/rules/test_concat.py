"""concat.py: Concat on the channel axis lays its inputs' channels end to end; on another axis it ties them
index by index."""

import numpy as np

from ._build import Net, assert_declines, build, check_exact, shape_of


def test_channel_concat_of_three_branches():
    """Inception: 1x1, 3x3 and pooled branches side by side, each pruned on its own."""
    n = Net()
    x = n.cbr("input", 3, 16)
    pooled = n.cbr(n.node("MaxPool", [x], kernel_shape=[3, 3], strides=[1, 1], pads=[1, 1, 1, 1]), 16, 8, k=1)
    y = n.node("Concat", [n.cbr(x, 16, 8, k=1), n.cbr(x, 16, 12), pooled], axis=1)
    dead, half = check_exact(build(n, [n.head(n.cbr(y, 28, 16), 16)]), through="Concat")
    assert (
        dead is not None
        and len([g for g in dead.report["groups"] if g["channels_after"] < g["channels_before"]]) >= 3
    )


def test_spatial_concat_ties_its_inputs():
    """Concatenating along H: channel c of both inputs is one channel of the output; a channel goes only if
    both branches' BNs call it dead (one shared mask here)."""
    n = Net()
    dead = n.rng.random(16) < 0.5
    a = n.act(n.bn(n.conv("input", 3, 16), 16, dead=dead), "Relu")
    b = n.act(n.bn(n.conv("input", 3, 16, k=1), 16, dead=dead), "Relu")
    y = n.node("Concat", [a, b], axis=2)
    result, _ = check_exact(build(n, [n.head(n.cbr(y, 16, 16), 16)]), through="Concat")
    assert result is not None
    assert shape_of(result.pruned, y)[1:3] == [16 - int(dead.sum()), 32]


def test_concat_with_a_constant_declines():
    n = Net()
    x = n.cbr("input", 3, 16)
    pad = n.param(np.zeros((1, 4, 16, 16)), "pad")
    assert_declines(
        build(n, [n.head(n.node("Concat", [x, pad], axis=1), 20)]), "Concat with a constant tensor"
    )
