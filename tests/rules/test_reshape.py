"""reshape.py: Transpose, Reshape, Squeeze and Flatten where the channel axis survives as axis 1, and a
spatial Flatten into a Gemm (each channel owns H*W consecutive columns); Transpose, Squeeze and Unsqueeze
that move the channel axis (TensorFlow's NHWC), which element-wise ops and reductions follow."""

import numpy as np
import pytest

from onnxprune import api

from ._build import Net, assert_declines, build, check_exact, ints, shape_of, tiny


def test_transpose_of_spatial_axes():
    n = Net()
    x = n.cbr("input", 3, 16)
    t = n.node("Transpose", [x], perm=[0, 1, 3, 2])
    check_exact(build(n, [n.head(n.cbr(t, 16, 16), 16)]), through="Transpose")


@pytest.mark.parametrize("target", [[1, 16, 256], [0, 0, -1], [1, -1, 256]])
def test_reshape_that_keeps_the_channel_axis(target):
    """[N, C, H, W] → [N, C, H*W] → back; an explicit C in the target follows the kept count."""
    n = Net()
    x = n.cbr("input", 3, 16)
    flat = n.node("Reshape", [x, ints(n, target)])
    back = n.node("Reshape", [n.node("Relu", [flat]), ints(n, [0, 0, 16, 16])])
    dead, _ = check_exact(build(n, [n.head(n.cbr(back, 16, 16), 16)]), through="Reshape")
    assert dead is not None and shape_of(dead.pruned, flat)[1] < 16


def test_squeeze_after_global_pooling_into_gemm():
    n = Net()
    x = n.cbr("input", 3, 16)
    s = n.node("Squeeze", [n.node("GlobalAveragePool", [x]), ints(n, [2, 3])])
    w = n.param(n.rng.normal(0, 0.3, (16, 10)))
    check_exact(build(n, [n.node("MatMul", [s, w])]), through="Squeeze")


@pytest.mark.parametrize("act", ["Relu", "Sigmoid"])
def test_spatial_flatten_into_gemm(act):
    """VGG's classifier on a 4x4 map: a removed channel's 16 columns go (Sigmoid: their 0.5 is folded)."""
    n = Net()
    x = n.act(n.bn(n.conv("input", 3, 16), 16), act)
    x = n.node("AveragePool", [x], kernel_shape=[4, 4], strides=[4, 4])
    flat = n.node("Flatten", [x], axis=1)
    w = n.param(n.rng.normal(0, 0.1, (10, 16 * 16)))
    y = n.node("Gemm", [flat, w, n.param(n.rng.normal(0, 0.1, 10), "b")], transB=1)
    dead, _ = check_exact(build(n, [y]), through="Flatten")
    assert dead is not None and shape_of(dead.pruned, flat)[1] % 16 == 0


def test_view_with_a_dynamic_batch_into_gemm():
    """PyTorch's ``x.view(x.size(0), -1)`` with a dynamic batch: the target Concat(Shape(x)[0], [-1]) is
    computed at run time, and still right once channels are gone."""
    n = Net()
    x = n.cbr("input", 3, 16)
    x = n.node("AveragePool", [x], kernel_shape=[4, 4], strides=[4, 4])
    batch = n.node("Unsqueeze", [n.node("Gather", [n.node("Shape", [x]), ints(n, 0)], axis=0), ints(n, [0])])
    flat = n.node("Reshape", [x, n.node("Concat", [batch, ints(n, [-1])], axis=0)])
    w = n.param(n.rng.normal(0, 0.1, (10, 16 * 16)))
    y = n.node("Gemm", [flat, w, n.param(n.rng.normal(0, 0.1, 10), "b")], transB=1)
    check_exact(build(n, [y], {"input": ("batch", 3, 16, 16)}), through="Reshape")


def test_channels_last_into_an_op_that_needs_axis_1_declines():
    """Relu follows channels on axis 3; MaxPool pools axes 2 and 3, one of them the channels: declined."""
    n = Net()
    x = n.cbr("input", 3, 16)
    t = n.node("Relu", [n.node("Transpose", [x], perm=[0, 2, 3, 1])])
    y = n.node("MaxPool", [t], kernel_shape=[2, 2])
    assert_declines(build(n, [y]), "MaxPool of a tensor whose channels are on axis 3, not 1")


def test_transpose_that_moves_the_batch_axis_declines():
    n = Net()
    x = n.cbr("input", 3, 16)
    t = n.node("Transpose", [x], perm=[1, 0, 2, 3])
    assert_declines(build(n, [n.node("Relu", [t])]), "Transpose moves the batch axis")


def conv1d(n: Net, x: str, c_in: int, c_out: int) -> str:
    """tf2onnx's Conv1D on [N, T, C]: ExpandDims as Unsqueeze, Conv2D in NHWC between two Transposes,
    Squeeze back; then Keras' BatchNormalization in NCW between Transposes, a bias in NWC and Relu."""
    x = n.node("Unsqueeze", [x, ints(n, [1])])  # [N, 1, T, C]
    x = n.node("Transpose", [x], perm=[0, 3, 1, 2])  # [N, C, 1, T]
    w = n.param(n.rng.normal(0, np.sqrt(2 / (3 * c_in)), (c_out, c_in, 1, 3)))
    x = n.node("Conv", [x, w], kernel_shape=[1, 3], pads=[0, 1, 0, 1])
    x = n.node("Squeeze", [n.node("Transpose", [x], perm=[0, 2, 3, 1]), ints(n, [1])])  # [N, T, K]
    x = n.node("Transpose", [n.bn(n.node("Transpose", [x], perm=[0, 2, 1]), c_out)], perm=[0, 2, 1])
    x = n.node("Add", [x, n.param(n.rng.normal(0, 0.2, c_out), "bias")])  # [K]: along the last axis
    return n.node("Relu", [x])


def audio_cnn(seed: int = 0):
    """A TensorFlow audio classifier as tf2onnx writes it: [N, T, F] frames, three Conv1D blocks, the mean
    over time (GlobalAveragePooling1D) and a Dense layer."""
    n = Net(seed)
    x = conv1d(n, conv1d(n, conv1d(n, "input", 8, 16), 16, 24), 24, 16)
    x = n.node("ReduceMean", [x], axes=[1], keepdims=0)  # [N, K]
    logits = n.node("MatMul", [x, n.param(n.rng.normal(0, 0.3, (16, 10)))])
    return build(n, [logits], {"input": (1, 32, 8)})


def test_tf2onnx_conv1d_blocks_are_followed_through_nhwc():
    """Every block's channels are followed through both layouts and pruned exactly: the NWC bias is sliced
    on its last axis, the constant a removed channel leaves (Relu(bias)) is folded by the next Conv."""
    model = audio_cnn()
    groups = [g for g in api.inspect(model).groups if g.producers]
    assert [g.size for g in groups if g.prunable] == [16, 24, 16]
    dead, half = check_exact(model, through=["Transpose", "Squeeze", "Unsqueeze", "ReduceMean"])
    bias = {t.name: list(t.dims) for t in half.pruned.graph.initializer if t.name.startswith("bias")}
    assert sorted(bias.values()) == sorted([[g["channels_after"]] for g in half.report["groups"]])
    assert tiny.removed_channels(dead) > 0


def test_reshape_that_mixes_channels_with_space_declines():
    n = Net()
    x = n.cbr("input", 3, 16)
    r = n.node("Reshape", [x, ints(n, [1, 32, 8, 16])])
    assert_declines(build(n, [n.node("Relu", [r])]), "Reshape mixes the channel axis with others")
