"""split.py: Split in its opset 11 (attribute), 13 (input) and 18 (``num_outputs``) forms and Slice with
constant bounds, in the blocks that use them: CSP / C2f, GhostNet, Res2Net."""

import numpy as np
import pytest

from ._build import Net, assert_declines, build, check_exact, ints, shape_of


def _split(n: Net, x: str, sizes: list[int], opset: int) -> list[str]:
    if opset < 13:
        return n.node("Split", [x], n_out=len(sizes), axis=1, split=sizes)  # type: ignore[return-value]
    if opset >= 18 and len(set(sizes[:-1])) == 1 and sizes[-1] <= sizes[0]:
        return n.node("Split", [x], n_out=len(sizes), axis=1, num_outputs=len(sizes))  # type: ignore[return-value]
    return n.node("Split", [x, ints(n, sizes)], n_out=len(sizes), axis=1)  # type: ignore[return-value]


def c2f(opset: int, sizes: tuple[int, ...] = (8, 8)):
    """YOLOv8's C2f (CSP): split, run a bottleneck on the last part, concatenate all parts and its output."""
    n = Net(seed=opset)
    total = sum(sizes)
    x = n.cbr("input", 3, total, k=1)
    parts = _split(n, x, list(sizes), opset)
    m = n.cbr(n.cbr(parts[-1], sizes[-1], 8), 8, sizes[-1])
    y = n.node("Concat", [*parts, m], axis=1)
    return build(n, [n.head(n.cbr(y, total + sizes[-1], 16, k=1), 16)], opset=opset)


@pytest.mark.parametrize("opset", [11, 13, 18])
def test_c2f_split_every_opset_form(opset):
    dead, half = check_exact(c2f(opset), through="Split")
    assert dead is not None
    split = next(n for n in half.pruned.graph.node if n.op_type == "Split")
    if opset >= 13:  # sizes moved to the input (or stayed implicit for an even split)
        assert not any(a.name == "split" for a in split.attribute)


@pytest.mark.parametrize("placeholder", [False, True])
def test_uneven_num_outputs_split_of_opset_18(placeholder):
    """num_outputs=3 over 22 channels is 8, 8, 6: the pruned sizes are written out when they differ, into
    the empty optional input if the node has one."""
    model = c2f(18, (8, 8, 6))
    split = next(n for n in model.graph.node if n.op_type == "Split")
    if placeholder:
        split.input.append("")
    dead, _ = check_exact(model, through="Split")
    pruned = next(n for n in dead.pruned.graph.node if n.op_type == "Split")  # type: ignore[union-attr]
    assert len(pruned.input) == 2 and not any(a.name == "num_outputs" for a in pruned.attribute)


def ghost(seed: int = 0):
    """GhostNet's module: a primary 1x1 Conv, a cheap depthwise Conv on its output, both concatenated and
    sliced to 11 channels; the next module's 1x1 Conv folds what the depthwise BN makes of a removed 0."""
    n = Net(seed)
    x = n.cbr("input", 3, 16)
    primary = n.cbr(x, 16, 6, k=1)
    cheap = n.cbr(primary, 6, 6, group=6)
    ghost = n.node("Concat", [primary, cheap], axis=1)
    out = n.node("Slice", [ghost, ints(n, [0]), ints(n, [11]), ints(n, [1])])
    return build(n, [n.head(n.cbr(out, 11, 16, k=1), 16)])


def test_ghost_module_slice():
    dead, half = check_exact(ghost(), through="Slice")
    assert shape_of(half.pruned, half.pruned.graph.node[-1].output[0])  # the graph still types


def res2net(seed: int = 0):
    """Res2Net: four splits, each added to the previous part's output before its own 3x3 Conv."""
    n = Net(seed)
    x = n.cbr("input", 3, 32, k=1)
    s = _split(n, x, [8, 8, 8, 8], 13)
    y2 = n.cbr(s[1], 8, 8)
    y3 = n.cbr(n.node("Add", [s[2], y2]), 8, 8)
    y4 = n.cbr(n.node("Add", [s[3], y3]), 8, 8)
    y = n.node("Concat", [s[0], y2, y3, y4], axis=1)
    return build(n, [n.head(n.cbr(y, 32, 16, k=1), 16)])


def test_res2net_split_and_add():
    check_exact(res2net(), through=("Split", "Add"))


def slices(opset: int, step: int = 1):
    """Two Slices of the channel axis: opset 9 attributes, opset 10+ inputs (negative end included)."""
    n = Net(opset)
    x = n.cbr("input", 3, 24)
    if opset < 10:
        a = n.node("Slice", [x], starts=[0], ends=[10], axes=[1])
        b = n.node("Slice", [x], starts=[10], ends=[23], axes=[1])
    else:
        a = n.node("Slice", [x, ints(n, [0]), ints(n, [10]), ints(n, [1]), ints(n, [step])])
        b = n.node("Slice", [x, ints(n, [0, 10]), ints(n, [16, -1]), ints(n, [3, 1])])
    y = n.node("Concat", [n.cbr(a, 10 // step, 8), n.cbr(b, 13, 8)], axis=1)
    return build(n, [n.head(y, 16)], opset=opset)


@pytest.mark.parametrize("opset", [9, 13])
def test_slice_with_constant_bounds(opset):
    check_exact(slices(opset), through="Slice")


def test_slice_with_a_channel_step_declines():
    assert_declines(slices(13, step=2), "Slice of the channel axis with a step other than 1")


DYNAMIC = {"input": (1, 3, "h", "w")}


def _runtime_half(n: Net, x: str) -> str:
    """A bound only known at run time: half the input's (dynamic) height. A bound computed from static
    dims, as PyTorch exports ``x.chunk(2, dim=1)``, is folded to a constant at load and followed."""
    h = n.node("Gather", [n.node("Shape", ["input"]), ints(n, [2])], axis=0)
    return n.node("Div", [h, ints(n, [2])])


def test_runtime_slice_bounds_decline():
    n = Net()
    x = n.cbr("input", 3, 16)
    half = n.node("Slice", [x, ints(n, [0]), _runtime_half(n, x), ints(n, [1])])
    model = build(n, [n.node("GlobalAveragePool", [half])], DYNAMIC)
    assert_declines(model, "Slice with bounds computed at run time")


def test_runtime_split_sizes_decline():
    n = Net()
    x = n.cbr("input", 3, 16)
    h = _runtime_half(n, x)
    a, b = n.node("Split", [x, n.node("Concat", [h, h], axis=0)], n_out=2, axis=1)
    model = build(n, [n.node("Add", [a, b])], DYNAMIC)
    assert_declines(model, "Split of the channel axis with run-time sizes")


def test_split_on_a_spatial_axis_passes_channels_through():
    n = Net()
    x = n.cbr("input", 3, 16)
    top, bottom = n.node("Split", [x, ints(n, [8, 8])], n_out=2, axis=2)
    y = n.node("Concat", [n.cbr(top, 16, 8), n.cbr(bottom, 16, 8)], axis=2)
    dead, _ = check_exact(build(n, [n.head(y, 8)]), through="Split")
    assert dead is not None and np.all([g["channels_after"] > 0 for g in dead.report["groups"]])
