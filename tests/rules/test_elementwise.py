"""elementwise.py: per-channel constant operands (Mul, Add, Sub, Div by [C,1,1] or [1,C,1,1]), PRelu
slopes, and squeeze-excite, whose gate is unified with the tensor it scales."""

import numpy as np
import pytest
from onnx import numpy_helper

from ._build import Net, assert_declines, build, check_exact, tiny


@pytest.mark.parametrize(
    ("op", "constant_first"),
    [("Mul", False), ("Add", False), ("Sub", False), ("Div", False), ("Mul", True), ("Sub", True)],
)
@pytest.mark.parametrize("shape", [(16, 1, 1), (1, 16, 1, 1)])
def test_per_channel_constant_operand(op, shape, constant_first):
    """A removed 0 becomes op(0, c) per channel (c - 0 = c for a constant first Sub): a 1x1 Conv folds it.
    (c / 0 is inf: test_division_by_a_removed_channel_keeps_it.)"""
    n = Net()
    x = n.cbr("input", 3, 16)
    c = n.param(n.rng.uniform(0.5, 1.5, shape), "k")
    y = n.node(op, [c, x] if constant_first else [x, c])
    model = build(n, [n.head(n.cbr(y, 16, 16, k=1), 16)])
    dead, _ = check_exact(model, through=op)
    assert dead is not None


def test_prelu_with_per_channel_slopes():
    n = Net()
    x = n.bn(n.conv("input", 3, 16), 16)
    y = n.node("PRelu", [x, n.param(n.rng.uniform(0, 0.3, (16, 1, 1)), "slope")])
    check_exact(build(n, [n.head(n.cbr(y, 16, 16), 16)]), through="PRelu")


def test_division_by_a_removed_channel_keeps_it():
    n = Net()
    x = n.bn(n.conv("input", 3, 16), 16)
    y = n.node("Div", [n.param(np.ones((16, 1, 1)), "one"), n.node("Add", [x, n.param(np.array(0.0))])])
    assert_declines(
        build(n, [n.head(n.cbr(y, 16, 8, k=1), 8)]), "a removed channel would carry no one constant"
    )


def test_per_channel_graph_input_operand_declines():
    n = Net()
    x = n.cbr("input", 3, 16)
    inputs = {"input": (1, 3, 16, 16), "scale": (1, 16, 1, 1)}
    assert_declines(
        build(n, [n.head(n.node("Mul", [x, "scale"]), 16)], inputs), "channels of graph input 'scale'"
    )


def test_broadcast_across_the_channel_axis_declines():
    n = Net()
    x = n.cbr("input", 3, 16)
    model = build(
        n, [n.head(n.node("Add", [x, "bias"]), 16)], {"input": (1, 3, 16, 16), "bias": (16, 16, 16)}
    )
    assert_declines(model, "Add broadcasts a tracked tensor across the channel axis")


def squeeze_excite(gate: str = "Sigmoid", seed: int = 0):
    """MBConv: 1x1 expand → BN → act → depthwise → BN → act → SE (GAP → 1x1 → Relu → 1x1 → gate → Mul) → 1x1.

    A dead expand channel is 0 after its BN, then the depthwise BN makes it a constant c. The gate's expand
    Conv is a source too: the masked reference zeroes its logits, so the removed channel leaves SE as
    c * gate(0) (0.5 for Sigmoid and HardSigmoid), which the projection folds. Here the gate's rows of the
    dead channels are zero too, so the original's gate is gate(0) as well and the channels are truly dead.
    """
    n = Net(seed)
    dead = n.rng.random(24) < 0.5
    stem = n.cbr("input", 3, 16)
    x = n.act(n.bn(n.conv(stem, 16, 24, k=1), 24, dead=dead), "HardSwish")
    x = n.act(n.bn(n.conv(x, 24, 24, group=24), 24, dead=np.zeros(24, bool)), "HardSwish")
    s = n.node("Relu", [n.conv(n.node("GlobalAveragePool", [x]), 24, 8, k=1, bias=True)])
    logits = n.conv(s, 8, 24, k=1, bias=True)
    y = n.node("Mul", [x, n.node(gate, [logits])])
    model = build(n, [n.head(n.cbr(y, 24, 16, k=1), 16)])
    expand = next(node for node in model.graph.node if node.output[0] == logits)
    for t in model.graph.initializer:
        if t.name in expand.input[1:]:
            values = numpy_helper.to_array(t).copy()
            values[dead] = 0
            t.CopyFrom(numpy_helper.from_array(values, t.name))
    return model, expand.name


@pytest.mark.parametrize("gate", ["Sigmoid", "HardSigmoid"])
def test_squeeze_excite(gate):
    model, expand = squeeze_excite(gate)
    dead, half = check_exact(model, through=(gate, "GlobalAveragePool"))
    for result in (dead, half):
        groups = result.report["groups"]  # type: ignore[union-attr]
        main = next(g for g in groups if expand in g["nodes"] and "BatchNormalization" in str(g["nodes"]))
        hidden = next(g for g in groups if expand in g["nodes"] and g is not main)
        assert main["channels_after"] < 24 and hidden["channels_before"] == 8 and hidden["criterion"] == "l1"


def test_squeeze_excite_keeps_channels_dead_only_at_the_bn():
    """With a live gate, a channel dead at the expand BN leaves SE as c * gate(x), not a constant: removing
    it would move the outputs, so --threshold 0 keeps it, and the result stays exact."""
    model, expand = squeeze_excite()
    node = next(n for n in model.graph.node if n.name == expand)
    for t in model.graph.initializer:
        if t.name == node.input[2]:
            t.CopyFrom(numpy_helper.from_array(np.full(24, 3.0, np.float32), t.name))
    live_gate = tiny.prune_dead(model)
    tiny.assert_exact(model, live_gate.pruned)
    dead_gate = tiny.prune_dead(squeeze_excite()[0])

    def main_channels(result):
        return next(
            g["channels_after"]
            for g in result.report["groups"]
            if expand in g["nodes"] and g["channels_before"] == 24
        )

    assert main_channels(live_gate) > main_channels(dead_gate)
