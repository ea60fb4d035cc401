"""pool.py: pooling and reductions over spatial axes keep channels apart."""

import pytest

from ._build import Net, assert_declines, build, check_exact, ints


@pytest.mark.parametrize(
    ("op", "attrs", "act"),
    [
        ("MaxPool", {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1]}, "Sigmoid"),
        ("AveragePool", {"kernel_shape": [2, 2], "strides": [2, 2]}, "Sigmoid"),
        ("GlobalMaxPool", {}, "Sigmoid"),
        # these change a constant (the border counts zero padding; an Lp norm scales): 0 only stays 0
        ("AveragePool", {"kernel_shape": [3, 3], "pads": [1, 1, 1, 1], "count_include_pad": 1}, "Relu"),
        ("LpPool", {"kernel_shape": [2, 2], "strides": [2, 2]}, "Relu"),
    ],
)
def test_spatial_pooling(op, attrs, act):
    """Sigmoid: a removed channel reaches the pool as 0.5, which the 1x1 Conv after it folds."""
    n = Net()
    x = n.act(n.bn(n.conv("input", 3, 16), 16), act)
    y = n.node(op, [x], **attrs)
    check_exact(build(n, [n.head(n.cbr(y, 16, 16, k=1), 16)]), through=op)


def test_reduce_mean_over_spatial_axes():
    n = Net()
    x = n.cbr("input", 3, 16)
    y = n.node("ReduceMean", [x, ints(n, [2, 3])], keepdims=1)
    check_exact(build(n, [n.head(n.cbr(y, 16, 16, k=1), 16)], opset=18), through="ReduceMean")


def test_reduce_over_the_channel_axis_declines():
    n = Net()
    x = n.cbr("input", 3, 16)
    y = n.node("ReduceMean", [x], axes=[1], keepdims=1)
    assert_declines(build(n, [n.head(y, 1)]), "ReduceMean reduces over the batch or channel axis")


def test_maxpool_indices_in_use_decline():
    n = Net()
    x = n.cbr("input", 3, 16)
    _, idx = n.node("MaxPool", [x], n_out=2, kernel_shape=[2, 2], strides=[2, 2])
    assert_declines(build(n, [n.node("Cast", [idx], to=1)]), "MaxPool whose indices output is used")
