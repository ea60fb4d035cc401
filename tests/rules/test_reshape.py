"""reshape.py: Transpose, Reshape, Squeeze and Flatten where the channel axis survives as axis 1, and a
spatial Flatten into a Gemm (each channel owns H*W consecutive columns)."""

import pytest

from ._build import Net, assert_declines, build, check_exact, ints, shape_of


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


def test_transpose_to_channels_last_declines():
    n = Net()
    x = n.cbr("input", 3, 16)
    t = n.node("Transpose", [x], perm=[0, 2, 3, 1])
    assert_declines(build(n, [n.node("Relu", [t])]), "Transpose mixes the channel axis with others")


def test_reshape_that_mixes_channels_with_space_declines():
    n = Net()
    x = n.cbr("input", 3, 16)
    r = n.node("Reshape", [x, ints(n, [1, 32, 8, 16])])
    assert_declines(build(n, [n.node("Relu", [r])]), "Reshape mixes the channel axis with others")
