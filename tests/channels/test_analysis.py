"""Channel groups: which channels the analysis ties together, and why it declines."""

from __future__ import annotations

import numpy as np
import onnx
import tiny

from onnxprune import api
from onnxprune.analyse import analyse
from onnxprune.graph import normalise


def groups_by_producer(model: onnx.ModelProto) -> dict[str, object]:
    found = api.inspect(model)
    return {p: g for g in found.groups for p in g.producers}


def test_residual_add_unifies_both_branches() -> None:
    n = tiny.Net()
    stem = n.cbr("input", 3, 16)
    h = n.bn(n.conv(stem, 16, 16), 16)
    model = n.model([n.head(n.node("Relu", [n.node("Add", [h, stem])]), 16)])
    by_producer = groups_by_producer(model)
    convs = [node.name for node in model.graph.node if node.op_type == "Conv"]
    assert by_producer[convs[0]] is by_producer[convs[1]]
    assert by_producer[convs[0]].size == 16


def test_concat_keeps_each_input_its_own_group() -> None:
    model = tiny.concat()
    by_producer = groups_by_producer(model)
    convs = [node.name for node in model.graph.node if node.op_type == "Conv"]
    assert by_producer[convs[0]] is not by_producer[convs[1]]
    assert (by_producer[convs[0]].size, by_producer[convs[1]].size) == (12, 20)


def test_add_of_a_split_half_cuts_the_group_in_two() -> None:
    """C2f's shape: the second half of a split is added to a conv output; the halves become two groups."""
    n = tiny.Net()
    x = n.cbr("input", 3, 16)
    a, b = n.node("Split", [x, n.param(np.array([8, 8], np.int64), "split")], n_out=2, axis=1)
    y = n.node("Add", [b, n.bn(n.conv(b, 8, 8), 8)])
    out = n.cbr(n.node("Concat", [a, y], axis=1), 16, 8)
    model = n.model([n.head(out, 8)])
    by_producer = groups_by_producer(model)
    convs = [node.name for node in model.graph.node if node.op_type == "Conv"]
    assert by_producer[convs[0]] is not by_producer[convs[1]]
    ctx = api.inspect(model).analysis
    stem_out = next(node.output[0] for node in model.graph.node if node.op_type == "Relu")
    assert [span.length for span in ctx.resolve(ctx.states[stem_out].map)] == [8, 8]
    result = tiny.prune_dead(model)
    tiny.assert_exact(model, result.pruned)


def test_depthwise_conv_passes_channels_through() -> None:
    model = tiny.depthwise()
    groups = api.inspect(model).groups
    groups_attr = {
        n.name: next(a.i for a in n.attribute if a.name == "group")
        for n in model.graph.node
        if n.op_type == "Conv"
    }
    dw = next(name for name, g in groups_attr.items() if g == 48)
    owner = next(g for g in groups if dw in g.nodes)
    assert owner.size == 48 and len(owner.producers) == 1 and dw not in owner.producers


def test_graph_output_and_unknown_op_are_declined_with_their_node() -> None:
    n = tiny.Net()
    x = n.cbr("input", 3, 8)
    y = n.node("LpNormalization", [n.cbr(x, 8, 8)], axis=1)
    model = n.model([y, x])
    reasons = {d.reason for g in api.inspect(model).groups for d in g.declines}
    assert "no rule for op LpNormalization" in reasons
    assert any(r.startswith("reaches graph output") for r in reasons)
    assert all(not g.prunable for g in api.inspect(model).groups if g.producers)


def test_every_group_of_the_sample_has_a_score_or_a_reason() -> None:
    ctx = analyse(normalise(tiny.chain()))
    for group in ctx.groups:
        assert group.gamma is not None or group.declines or group.filter_norm is not None
