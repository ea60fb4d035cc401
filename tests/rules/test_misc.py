"""misc.py: Shape reads only a tensor's extent; Softmax over spatial axes keeps channels apart."""

import pytest

from ._build import Net, assert_declines, build, check_exact, ints


@pytest.mark.parametrize("op", ["Softmax", "LogSoftmax"])
def test_spatial_softmax(op):
    """A removed 0 normalised over 256 positions is 1/256 (log: -log 256), which the 1x1 Conv folds."""
    n = Net()
    x = n.cbr("input", 3, 16)
    s = n.node(op, [n.node("Reshape", [x, ints(n, [0, 0, -1])])], axis=2)
    y = n.node("Reshape", [s, ints(n, [0, 0, 16, 16])])
    check_exact(build(n, [n.head(n.cbr(y, 16, 16, k=1), 16)]), through=op)


def test_shape_is_read_without_pinning_channels():
    """A crop to the tensor's own (dynamic) height, computed from its Shape at run time, leaves channels
    alone."""
    n = Net()
    x = n.cbr("input", 3, 16)
    height = n.node("Gather", [n.node("Shape", [x]), ints(n, [2])], axis=0)
    crop = n.node("Slice", [x, ints(n, [0]), height, ints(n, [2])])
    model = build(n, [n.head(n.cbr(crop, 16, 16), 16)], {"input": (1, 3, "h", "w")})
    check_exact(model, through="Shape")


def test_softmax_over_channels_declines():
    n = Net()
    x = n.cbr("input", 3, 16)
    assert_declines(
        build(n, [n.node("Softmax", [x], axis=1)]), "Softmax over the channel axis mixes channels"
    )
