"""conv.py: dense Conv (bias folding or keeping), grouped Conv (ResNeXt, RegNet: tied chunks, group counts
that are not multiples of 8, round_to), producers ranked by filter norm where there is no BN."""

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from onnxprune import api
from onnxprune.options import PlanOptions
from onnxprune.report import must_keep_reasons

from ._build import Net, assert_declines, build, check_exact, shape_of, tiny


def resnext(group: int, width: int = 24, seed: int = 0):
    """1x1 → grouped 3x3 → 1x1 with a residual. Every chunk of the grouped Conv's input and output has the
    same number of dead channels (one in two), so dead channels can go without breaking the tie."""
    n = Net(seed)
    stem = n.cbr("input", 3, 16)
    every_other = np.arange(width) % 2 == 1
    h = n.act(n.bn(n.conv(stem, 16, width, k=1), width, dead=every_other), "Relu")
    h = n.act(n.bn(n.conv(h, width, width, group=group), width, dead=every_other), "Relu")
    h = n.bn(n.conv(h, width, 16, k=1), 16)
    return build(n, [n.head(n.node("Relu", [n.node("Add", [h, stem])]), 16)])


def _grouped_weight(model: onnx.ModelProto) -> np.ndarray:
    conv = next(n for n in model.graph.node if n.op_type == "Conv" and n.attribute[0].i > 1)
    init = {t.name: t for t in model.graph.initializer}
    return numpy_helper.to_array(init[conv.input[1]])


@pytest.mark.parametrize("group", [3, 4, 6, 12])
def test_grouped_conv_prunes_every_chunk_alike(group):
    dead, half = check_exact(resnext(group))
    assert dead is not None
    w = _grouped_weight(dead.pruned)
    assert w.shape == (12, 12 // group, 3, 3)  # half of every chunk was dead, on both sides


@pytest.mark.parametrize(
    ("group", "width", "round_to"),
    [
        (3, 48, 8),
        (4, 32, 8),
        (6, 48, 8),
        (4, 32, 3),
    ],
)
def test_grouped_conv_counts_meet_round_to(group, width, round_to):
    """Chunks keep equal counts; their total (what a GPU kernel sees) is a multiple of round_to."""
    model = resnext(group, width)
    result = api.prune_model(model, PlanOptions(ratio=0.5, round_to=round_to, min_keep=1))
    tiny.assert_exact(result.masked, result.pruned)
    w = _grouped_weight(result.pruned)
    kept_out, per_group_in = w.shape[0], w.shape[1]
    assert kept_out % group == 0 and kept_out < width
    assert kept_out % round_to == 0 and (per_group_in * group) % round_to == 0


def test_grouped_conv_cut_by_a_concat_declines():
    """Chunks of 4 over a Concat of two 6-channel tensors: the middle chunk straddles both."""
    n = Net()
    a, b = n.cbr("input", 3, 6), n.cbr("input", 3, 6)
    y = n.cbr(n.node("Concat", [a, b], axis=1), 12, 12, group=3)
    assert_declines(build(n, [n.head(y, 12)]), "grouped Conv whose groups are cut by another op")


def _sigmoid_into(k: int):
    """A removed channel is Sigmoid(0) = 0.5 when it reaches the Conv under test."""
    n = Net()
    x = n.act(n.bn(n.conv("input", 3, 16), 16), "Sigmoid")
    y = n.cbr(x, 16, 16, k=k, bias=True)
    return build(n, [n.head(y, 16)])


def test_dense_conv_folds_a_constant_into_its_bias():
    dead, _ = check_exact(_sigmoid_into(k=1))
    assert dead is not None and dead.report["groups"][0]["channels_after"] < 16


def _sigmoid_out(model: onnx.ModelProto) -> str:
    return next(n.output[0] for n in model.graph.node if n.op_type == "Sigmoid")


def test_padded_conv_folds_an_exact_constant_as_a_bias_map_without_compensation_too():
    """--compensate none refuses estimates, not exact constants: Sigmoid(0) = 0.5 is one, and its bias map
    is exact, so plain removal folds it as compensation does."""
    model = _sigmoid_into(k=3)
    dead = tiny.prune_dead(model, compensate="none")
    assert shape_of(dead.pruned, _sigmoid_out(model))[1] < 16
    tiny.assert_exact(model, dead.pruned)
    assert any("bias_map" in t.name for t in dead.pruned.graph.initializer)
    half = api.prune_model(model, PlanOptions(ratio=0.5, round_to=4, min_keep=4, compensate="none"))
    tiny.assert_exact(half.masked, half.pruned)


def _depthwise_after_sigmoid(spatial=(16, 16)):
    n = Net()
    x = n.act(n.bn(n.conv("input", 3, 16), 16), "Sigmoid")
    x = n.act(n.bn(n.conv(x, 16, 16, group=16), 16, dead=np.zeros(16, bool)), "Relu")
    return build(n, [n.head(n.cbr(x, 16, 16, k=1), 16)], {"input": (1, 3, *spatial)})


def test_padded_depthwise_conv_of_a_constant_keeps_the_channel_without_compensation():
    """Sigmoid(0) = 0.5 into a zero-padded depthwise Conv differs at the border: not one constant, so plain
    removal keeps the channel and says so (once, at the depthwise Conv: the 1x1 Conv after it is the same
    cause)."""
    model = _depthwise_after_sigmoid()
    assert_declines(model, "a zero-padded depthwise Conv makes a removed channel's constant differ", "none")
    group = next(g for g in api.inspect(model, compensate="none").groups if g.size == 16 and g.prunable)
    assert group.must_keep is not None and group.must_keep.all()
    assert [k["node"] for k in must_keep_reasons(group)] == [model.graph.node[3].name]
    assert not api.inspect(model, compensate="bn").groups[1].must_keep_why  # bn: its interior value


def test_padded_conv_with_dynamic_spatial_size_keeps_a_constant_without_compensation():
    n = Net()
    x = n.act(n.bn(n.conv("input", 3, 16), 16), "Sigmoid")
    model = build(n, [n.head(n.cbr(x, 16, 16, k=3), 16)], {"input": (1, 3, "h", "w")})
    assert_declines(
        model, "its zero padding needs a per-position bias map, which needs static spatial", "none"
    )


def test_padded_conv_folds_a_constant_as_a_bias_map():
    """Sigmoid(0) = 0.5 into a zero-padded 3x3 Conv: exact as one [1, K, H, W] Add after the Conv."""
    model = _sigmoid_into(k=3)
    dead, _ = check_exact(model)
    assert dead is not None and shape_of(dead.pruned, _sigmoid_out(model))[1] < 16
    initializers = dead.pruned.graph.initializer
    maps = {t.name.rsplit("_", 1)[-1]: list(t.dims) for t in initializers if "bias_map" in t.name}
    # stored as its factors: rows [Ho, R], the kernel sums [K, R, S] sliced like the Conv's own outputs (its
    # BN has dead channels too), cols [S, Wo]; 9*3*3 + 16*3 + 3*16 numbers instead of 9*16*16
    assert maps == {"rows": [16, 3], "taps": [9, 3, 3], "cols": [3, 16]}
    layers = dead.report["compensation"]["layers"]
    assert [(x["applied"], x["exact"]) for x in layers if x["carrying"]] == [("bias map", True)]


def test_padded_conv_bias_map_with_strides_dilations_and_same_padding():
    """The map against ONNX Runtime itself: a removed constant channel, every padding geometry."""
    from onnx import TensorProto, helper

    from onnxprune.rules.padmap import padded_bias_map
    from onnxprune.runtime import run_model

    rng = np.random.default_rng(0)
    columns, values = rng.normal(size=(5, 3, 3, 4)), np.array([0.7, -1.3, 2.0])
    for attrs in (
        {"pads": [1, 2, 0, 1], "strides": [2, 1], "dilations": [1, 2]},
        {"auto_pad": "SAME_UPPER", "strides": [2, 2]},
        {"auto_pad": "SAME_LOWER", "strides": [1, 3]},
    ):
        node = helper.make_node("Conv", ["x", "w"], ["y"], kernel_shape=[3, 4], **attrs)
        graph = helper.make_graph(
            [node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 9, 11])],
            [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
            [numpy_helper.from_array(columns.astype(np.float32), "w")],
        )  # fmt: skip
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
        image = np.broadcast_to(values[None, :, None, None], (1, 3, 9, 11)).astype(np.float32)
        expected = run_model(model, {"x": image})["y"][0]
        got = padded_bias_map(columns, values, dict(attrs), [9, 11], list(expected.shape[1:]))
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


def test_padded_conv_with_dynamic_spatial_size_keeps_the_channel():
    """No static shape, no exact bias map: compensation falls back to keeping the channel."""
    n = Net()
    x = n.act(n.bn(n.conv("input", 3, 16), 16), "Sigmoid")
    model = build(n, [n.head(n.cbr(x, 16, 16, k=3, bias=True), 16)], {"input": (1, 3, "h", "w")})
    assert_declines(model, "a removed channel would carry a constant this op cannot fold exactly")


def no_bn(seed: int = 0):
    """Convs with biases and no BN (folded by the exporter); two filters of the first are zero."""
    n = Net(seed)
    x = n.node("Relu", [n.conv("input", 3, 16, bias=True)])
    x = n.node("Relu", [n.conv(x, 16, 24, bias=True)])
    model = build(n, [n.head(x, 24)])
    for t in model.graph.initializer:
        if t.name in (model.graph.node[0].input[1], model.graph.node[0].input[2]):
            values = numpy_helper.to_array(t).copy()
            values[[3, 7]] = 0
            t.CopyFrom(numpy_helper.from_array(values, t.name))
    return model


@pytest.mark.parametrize("criterion", ["auto", "l1", "l2"])
def test_without_bn_filters_rank_by_norm(criterion):
    dead, half = check_exact(no_bn(), criterion=criterion)
    assert dead is not None and tiny.removed_channels(dead) == 2  # exactly the zero filters
    assert {g["criterion"] for g in half.report["groups"]} == {"l2" if criterion == "l2" else "l1"}


def test_without_bn_gamma_criterion_declines():
    model = no_bn()
    groups = api.inspect(model, criterion="gamma").groups
    found = {d.reason for g in groups for d in g.declines}
    assert "cannot rank its channels: no BatchNormalization scores it" in found


def test_conv_with_a_runtime_weight_declines():
    n = Net()
    x = n.cbr("input", 3, 8)
    y = n.node("Conv", [x, "w"], kernel_shape=[1, 1])
    model = build(n, [n.head(y, 8)], inputs={"input": (1, 3, 16, 16), "w": (8, 8, 1, 1)})
    assert_declines(model, "Conv whose weight is not a constant")
