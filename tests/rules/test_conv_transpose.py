"""conv_transpose.py: ConvTranspose as producer (weight columns) and consumer (weight rows), depthwise and
grouped, in a U-Net style decoder."""

import numpy as np
import pytest
from onnx import numpy_helper

from onnxprune import api
from onnxprune.options import PlanOptions

from ._build import Net, assert_declines, build, check_exact, shape_of, tiny


def up(n: Net, x: str, c_in: int, c_out: int, group: int = 1, bias: bool = True) -> str:
    w = n.param(n.rng.normal(0, np.sqrt(2 / c_in), (c_in, c_out // group, 2, 2)))
    ins = [x, w] + ([n.param(n.rng.normal(0, 0.1, c_out), "b")] if bias else [])
    return n.node("ConvTranspose", ins, kernel_shape=[2, 2], strides=[2, 2], group=group)


def decoder(group: int = 1, seed: int = 0, aligned: bool = True):
    """Encoder Conv → pool → Conv → ConvTranspose (x2) → BN → concat with the skip → Conv. Aligned: dead
    channels come one in two, so every chunk of a grouped ConvTranspose loses as many; else at random."""
    n = Net(seed)
    every_other = np.arange(24) % 2 == 1 if aligned else n.rng.random(24) < 0.5
    skip = n.cbr("input", 3, 16)
    x = n.node("MaxPool", [skip], kernel_shape=[2, 2], strides=[2, 2])
    x = n.act(n.bn(n.conv(x, 16, 24), 24, dead=every_other), "Relu")
    u = n.act(n.bn(up(n, x, 24, 24, group), 24, dead=every_other), "Relu")
    y = n.cbr(n.node("Concat", [skip, u], axis=1), 40, 16)
    return build(n, [n.head(y, 16)])


def _transpose_weight(model):
    node = next(n for n in model.graph.node if n.op_type == "ConvTranspose")
    init = {t.name: t for t in model.graph.initializer}
    return node, numpy_helper.to_array(init[node.input[1]])


@pytest.mark.parametrize("group", [1, 2, 3])
def test_conv_transpose_producer_and_consumer(group):
    dead, half = check_exact(decoder(group), through="ConvTranspose")
    assert dead is not None
    _, w = _transpose_weight(dead.pruned)
    assert w.shape == (12, 12 // group, 2, 2)


@pytest.mark.parametrize("group", [2, 3])
def test_grouped_conv_transpose_chunks_keep_their_own_channels(group):
    """Scores at random: each chunk keeps different columns, which a slice by the first chunk's would miss."""
    result = api.prune_model(decoder(group, aligned=False), PlanOptions(ratio=0.7, round_to=4, min_keep=4))
    tiny.assert_exact(result.masked, result.pruned)
    kept = next(
        g["kept"] for g in result.report["groups"] if any("ConvTranspose" in p for p in g["producers"])
    )
    assert len(kept) < 24 // group


def depthwise_up(seed: int = 0):
    """A depthwise ConvTranspose: a removed 0 becomes its bias, the next BN a constant a 1x1 Conv folds."""
    n = Net(seed)
    x = n.cbr("input", 3, 16)
    u = n.act(n.bn(up(n, x, 16, 16, group=16), 16), "Relu")
    return build(n, [n.head(n.cbr(u, 16, 16, k=1), 16)])


def test_depthwise_conv_transpose_follows_its_input():
    dead, _ = check_exact(depthwise_up(), through="ConvTranspose")
    assert dead is not None
    node, w = _transpose_weight(dead.pruned)
    assert w.shape[1] == 1 and next(a.i for a in node.attribute if a.name == "group") == w.shape[0] < 16


def test_conv_transpose_keeps_input_channels_that_carry_a_constant():
    """Sigmoid(0) = 0.5 reaches a strided ConvTranspose: no bias can stand for it."""
    n = Net()
    x = n.act(n.bn(n.conv("input", 3, 16), 16), "Sigmoid")
    model = build(n, [n.head(n.cbr(up(n, x, 16, 8), 8, 8), 8)])
    assert_declines(model, "a removed channel would carry a constant this op cannot fold exactly")
    sigmoid = next(n.output[0] for n in model.graph.node if n.op_type == "Sigmoid")

    assert shape_of(tiny.prune_dead(model).pruned, sigmoid)[1] == 16


def test_conv_transpose_with_a_runtime_weight_declines():
    n = Net()
    x = n.cbr("input", 3, 8)
    y = n.node("ConvTranspose", [x, "w"], kernel_shape=[2, 2], strides=[2, 2])
    model = build(n, [n.head(y, 4)], inputs={"input": (1, 3, 16, 16), "w": (8, 4, 2, 2)})
    assert_declines(model, "ConvTranspose whose weight or bias is computed at run time")
