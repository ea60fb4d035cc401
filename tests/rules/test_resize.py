"""resize.py: Resize / Upsample in their opset 9, 11, 13 and 18 forms (scales, sizes that are rewritten,
``axes``) in an HRNet-style fuse (Resize + Add across branches), and Pad without channel padding."""

import numpy as np
import pytest
from onnx import numpy_helper

from ._build import Net, assert_declines, build, check_exact, const, ints, shape_of, tiny

RESIZES = {
    # form: (opset, inputs after X, attributes)
    "upsample-9": (9, [("f", [1, 1, 2, 2])], {}),
    "scales-11": (11, [("f", []), ("f", [1, 1, 2, 2])], {}),
    "sizes-13": (13, ["", "", ("i", [1, 16, 16, 16])], {}),
    "scales-axes-18": (18, ["", ("f", [2, 2])], {"axes": [2, 3]}),
    "sizes-axes-18": (18, ["", "", ("i", [16, 16, 16])], {"axes": [1, 2, 3]}),
}


def hrnet_fuse(form: str):
    """High-res branch + upsampled low-res branch (1x1 Conv → BN → Resize x2), then Add and Relu."""
    opset, extra, attrs = RESIZES[form]
    n = Net(opset)
    x = n.cbr("input", 3, 16)
    low = n.cbr(n.node("MaxPool", [x], kernel_shape=[2, 2], strides=[2, 2]), 16, 16)
    low = n.bn(n.conv(low, 16, 16, k=1), 16)
    ins = [low]
    for item in extra:
        ins.append(
            item if isinstance(item, str) else const(n, item[1]) if item[0] == "f" else ints(n, item[1])
        )
    op = "Upsample" if form.startswith("upsample") else "Resize"
    up = n.node(op, ins, mode="nearest", **attrs)
    y = n.node("Relu", [n.node("Add", [x, up])])
    return build(n, [n.head(n.cbr(y, 16, 16), 16)], opset=opset), up


@pytest.mark.parametrize("form", list(RESIZES))
def test_hrnet_fuse_resize(form):
    model, up = hrnet_fuse(form)
    dead, half = check_exact(model, through="Resize" if "Resize" in up else "Upsample")
    assert dead is not None
    assert shape_of(dead.pruned, up)[1] < 16


def test_resize_of_the_channel_axis_declines():
    n = Net()
    x = n.cbr("input", 3, 16)
    up = n.node("Resize", [x, "", const(n, [1, 2, 2, 2])])
    model = build(n, [n.node("GlobalAveragePool", [up])])
    assert_declines(model, "Resize that scales the channel axis or has run-time scales")


def padded(opset: int = 13, mode: str = "constant", fill: float | None = None, axes: bool = False):
    """Conv → BN → Relu → Pad → 1x1 Conv: the Pad stands in for the second Conv's padding."""
    n = Net(opset)
    x = n.cbr("input", 3, 16)
    if opset < 11:
        p = n.node("Pad", [x], pads=[0, 0, 1, 1, 0, 0, 1, 1], mode=mode)
    elif axes:
        p = n.node("Pad", [x, ints(n, [1, 1, 1, 1]), "", ints(n, [2, 3])], mode=mode)
    else:
        ins = [x, ints(n, [0, 0, 1, 1, 0, 0, 1, 1])] + ([const(n, fill)] if fill is not None else [])
        p = n.node("Pad", ins, mode=mode)
    return build(n, [n.head(n.cbr(p, 16, 16, k=1), 16)], opset=opset)


@pytest.mark.parametrize(
    "kw", [{"opset": 10}, {"opset": 13}, {"opset": 18, "axes": True}, {"mode": "reflect"}, {"fill": 0.0}]
)
def test_pad_without_channel_padding(kw):
    check_exact(padded(**kw), through="Pad")


def test_pad_with_a_nonzero_value_keeps_channels_that_would_carry_0():
    """A removed 0 padded with 1.0 is no longer constant: the 1x1 Conv cannot fold it."""
    model = padded(fill=1.0)
    assert_declines(model, "a removed channel would carry no one constant into this op")
    pad = next(n.output[0] for n in model.graph.node if n.op_type == "Pad")
    assert shape_of(tiny.prune_dead(model).pruned, pad)[1] == 16


def test_pad_of_the_channel_axis_declines():
    n = Net()
    x = n.cbr("input", 3, 16)
    p = n.node("Pad", [x, ints(n, [0, 1, 0, 0, 0, 1, 0, 0])])
    assert_declines(build(n, [n.node("GlobalAveragePool", [p])]), "Pad of the batch or channel axis")


def test_sizes_follow_the_kept_count():
    model, up = hrnet_fuse("sizes-13")
    dead = tiny.prune_dead(model)
    node = next(n for n in dead.pruned.graph.node if n.output[0] == up)
    sizes = next(numpy_helper.to_array(t) for t in dead.pruned.graph.initializer if t.name == node.input[3])
    assert np.array_equal(sizes, [1, shape_of(dead.pruned, up)[1], 16, 16])
