"""shuffle.py: ShuffleNet's channel shuffle, followed as a permutation and rewritten as one Gather, and
ResNeSt's radix softmax, whose chunks are tied so that the Reshape grid survives pruning."""

import numpy as np
import pytest

from ._build import Net, assert_declines, build, check_exact, ints, shape_of


def channel_shuffle(n: Net, x: str, c: int, hw: int, groups: int = 2) -> str:
    r = n.node("Reshape", [x, ints(n, [1, groups, c // groups, hw, hw])])
    return n.node("Reshape", [n.node("Transpose", [r], perm=[0, 2, 1, 3, 4]), ints(n, [1, c, hw, hw])])


def _branch(n: Net, x: str, c: int, stride: int) -> str:
    h = n.cbr(x, c, c, k=1)
    h = n.bn(n.conv(h, c, c, group=c, stride=stride), c)
    return n.cbr(h, c, c, k=1)


def shufflenet(groups: int = 2, seed: int = 0):
    """A stride-2 unit (two branches) and two stride-1 units (Split, one branch), each ending in a shuffle."""
    n = Net(seed)
    x = n.cbr("input", 3, 16)
    b1 = n.cbr(n.bn(n.conv(x, 16, 16, group=16, stride=2), 16), 16, 16, k=1)
    x = channel_shuffle(n, n.node("Concat", [b1, _branch(n, x, 16, 2)], axis=1), 32, 8, groups)
    for _ in range(2):
        a, b = n.node("Split", [x, ints(n, [16, 16])], n_out=2, axis=1)
        x = channel_shuffle(n, n.node("Concat", [a, _branch(n, b, 16, 1)], axis=1), 32, 8, groups)
    return build(n, [n.head(n.cbr(x, 32, 32, k=1), 32)])


@pytest.mark.parametrize("groups", [2, 4])
def test_channel_shuffle_is_a_permutation(groups):
    dead, half = check_exact(shufflenet(groups), through=("Transpose", "Split"))
    for result in (dead, half):
        ops = [node.op_type for node in result.pruned.graph.node]  # type: ignore[union-attr]
        assert ops.count("Gather") == 3 and "Transpose" not in ops


def test_shuffle_whose_grid_is_read_twice_declines():
    n = Net()
    x = n.cbr("input", 3, 16)
    r = n.node("Reshape", [x, ints(n, [1, 2, 8, 16, 16])])
    t = n.node("Reshape", [n.node("Transpose", [r], perm=[0, 2, 1, 3, 4]), ints(n, [1, 16, 16, 16])])
    model = build(n, [n.head(t, 16), n.node("ReduceMax", [r], keepdims=0)])
    assert_declines(model, "channels spread over several axes are used by several ops")


def test_grid_transposed_with_a_spatial_axis_declines():
    n = Net()
    x = n.cbr("input", 3, 16)
    r = n.node("Reshape", [x, ints(n, [1, 2, 8, 16, 16])])
    t = n.node("Reshape", [n.node("Transpose", [r], perm=[0, 1, 3, 2, 4]), ints(n, [1, 16, 16, 16])])
    assert_declines(build(n, [n.head(t, 16)]), "a Reshape that mixes channels with spatial positions")


def test_spatial_softmax_inside_a_regrouping_declines():
    n = Net()
    x = n.cbr("input", 3, 16)
    r = n.node("Softmax", [n.node("Reshape", [x, ints(n, [1, 2, 8, 16, 16])])], axis=-1)
    t = n.node("Reshape", [n.node("Transpose", [r], perm=[0, 2, 1, 3, 4]), ints(n, [1, 16, 16, 16])])
    assert_declines(build(n, [n.head(t, 16)]), "Softmax over spatial axes inside a channel regrouping")


def radix_softmax(n: Net, logits: str, radix: int, c: int, explicit: bool, cardinality: int = 1) -> str:
    """ResNeSt's rSoftMax: view(N, cardinality, radix, -1).transpose(1, 2) → softmax(dim=1) → view(N, -1)."""
    inner = c // cardinality
    r = n.node("Reshape", [logits, ints(n, [1, cardinality, radix, inner if explicit else -1])])
    s = n.node("Softmax", [n.node("Transpose", [r], perm=[0, 2, 1, 3])], axis=1)
    flat = n.node("Reshape", [s, ints(n, [1, radix * c] if explicit else [1, -1])])
    return n.node("Reshape", [flat, ints(n, [1, -1, 1, 1])])


def split_attention(explicit: bool = True, cardinality: int = 1, seed: int = 0):
    """ResNeSt's split attention, radix 2: grouped Conv → Split → sum → GAP → fc → BN → Relu → fc → radix
    softmax → Split → Mul with each part → sum, inside a residual block."""
    n = Net(seed)
    c = 8
    x = n.cbr("input", 3, 16)
    h = n.cbr(x, 16, 2 * c, group=2)
    a, b = n.node("Split", [h, ints(n, [c, c])], n_out=2, axis=1)
    z = n.cbr(n.node("GlobalAveragePool", [n.node("Add", [a, b])]), c, 8, k=1)
    att = radix_softmax(n, n.conv(z, 8, 2 * c, k=1, bias=True), 2, c, explicit, cardinality)
    att_a, att_b = n.node("Split", [att, ints(n, [c, c])], n_out=2, axis=1)
    out = n.node("Add", [n.node("Mul", [a, att_a]), n.node("Mul", [b, att_b])])
    y = n.node("Relu", [n.node("Add", [n.bn(n.conv(out, c, 16, k=1), 16), x])])
    return build(n, [n.head(y, 16)])


@pytest.mark.parametrize("explicit", [True, False])
def test_radix_softmax_ties_its_chunks(explicit):
    dead, half = check_exact(split_attention(explicit), through="Softmax")
    for result in (dead, half):
        pruned = result.pruned  # type: ignore[union-attr]
        soft = next(node for node in pruned.graph.node if node.op_type == "Softmax")
        kept = shape_of(pruned, soft.output[0])
        assert kept[:3] == [1, 2, 1] and isinstance(kept[3], int) and kept[3] < 8


def test_radix_softmax_over_interleaved_channels_declines():
    """Cardinality 2: the softmax sets are {g*2C' + k*C' + c}, not equal chunks of the channel axis."""
    model = split_attention(cardinality=2)
    assert_declines(model, "Softmax over channels that are not equal chunks of the channel axis")


def test_shufflenet_weights_follow_the_gather():
    """The 50 % plan rewrites the first Reshape as a Gather whose indices are a permutation of 0..C'-1."""
    _, half = check_exact(shufflenet())
    init = {t.name: t for t in half.pruned.graph.initializer}
    from onnx import numpy_helper

    for node in half.pruned.graph.node:
        if node.op_type == "Gather":
            idx = numpy_helper.to_array(init[node.input[1]])
            assert np.array_equal(np.sort(idx), np.arange(len(idx)))
