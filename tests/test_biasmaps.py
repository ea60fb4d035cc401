"""biasmaps.py: the exact forms compute what the factored map computes (on input-sensitive data), the interior
fold says what it costs at the border, and a map with no BatchNormalization after it stays where it is."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import weights
from onnx import TensorProto, helper, numpy_helper

from onnxprune import api
from onnxprune.biasmaps import EXACT_FORMS, FORMS, convert_maps
from onnxprune.errors import UsageError
from onnxprune.inputs import make_inputs
from onnxprune.rules.padmap import bias_map_factors
from onnxprune.runtime import run_model


@pytest.fixture(scope="module")
def pruned() -> onnx.ModelProto:
    """ResNet-18 (seeded, BN statistics re-estimated) at --ratio 0.5 with --compensate bn: 16 maps."""
    result = api.prune_model(
        weights.load("resnet18"), api.PlanOptions(ratio=0.5), api.VerifyOptions(enabled=False)
    )
    return result.pruned


def _outputs(model: onnx.ModelProto, seed: int) -> np.ndarray:
    return next(iter(run_model(model, make_inputs(model, seed=seed)[0]).values()))


def _relative(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a - b).max() / np.abs(a).max())


def test_the_data_moves_the_outputs(pruned):
    assert _relative(_outputs(pruned, 1), _outputs(pruned, 2)) >= 1e-2


@pytest.mark.parametrize("form", [f for f in EXACT_FORMS if f != "factored"])
def test_an_exact_form_computes_what_the_factored_maps_compute(pruned, form):
    converted, record = convert_maps(pruned, form)
    assert record.maps >= 10 and record.converted == record.maps and record.exact and not record.left
    for seed in (1, 2):
        assert _relative(_outputs(pruned, seed), _outputs(converted, seed)) < 1e-5
    ops = [n.op_type for n in converted.graph.node]
    assert ops.count("Add") == [n.op_type for n in pruned.graph.node].count("Add")  # one Add per map still
    assert ops.count("MatMul") == (0 if form in ("dense", "conv") else 2 * record.maps)
    convs = [n.op_type for n in pruned.graph.node].count("Conv")
    assert ops.count("Conv") == convs + (record.maps if form == "conv" else 0)


def test_after_bn_puts_each_conv_next_to_its_batchnorm(pruned):
    converted, _ = convert_maps(pruned, "after-bn")
    producers = {o: n for n in converted.graph.node for o in n.output}
    bns = [n for n in converted.graph.node if n.op_type == "BatchNormalization"]
    assert all(producers[bn.input[0]].op_type == "Conv" for bn in bns)
    before = {o: n for n in pruned.graph.node for o in n.output}
    pruned_bns = [n for n in pruned.graph.node if n.op_type == "BatchNormalization"]
    assert sum(before[bn.input[0]].op_type == "Add" for bn in pruned_bns) == 16  # the maps sat between


def test_interior_folds_the_maps_away_and_reports_the_border_error(pruned):
    converted, record = convert_maps(pruned, "interior")
    assert record.converted == record.maps and not record.exact
    assert record.border_max_abs > 0 and 0 < record.border_fraction < 0.5
    assert not any(n.op_type == "MatMul" for n in converted.graph.node)
    error = _relative(_outputs(pruned, 1), _outputs(converted, 1))
    assert error > 1e-4  # the border is wrong: not exact, as the record says
    assert "not exact" in record.line() and record.to_dict()["border_max_abs"] == record.border_max_abs


def test_conv_stores_the_summed_taps_and_a_ones_image(pruned):
    converted, record = convert_maps(pruned, "conv")
    inits = {t.name: numpy_helper.to_array(t) for t in converted.graph.initializer}
    added = [n for n in converted.graph.node if n.op_type == "Conv" and n.input[0] in inits]
    assert len(added) == record.maps
    for node in added:
        ones, taps = inits[node.input[0]], inits[node.input[1]]
        assert ones.shape[:2] == (1, 1) and np.all(ones == 1) and taps.shape[1] == 1
    stored = sum(a.size for a in inits.values())
    assert stored < sum(numpy_helper.to_array(t).size for t in pruned.graph.initializer) * 1.05


def test_factored_changes_nothing(pruned):
    converted, record = convert_maps(pruned, "factored")
    assert converted is pruned and record.exact and record.converted == record.maps


def _map_then_relu() -> onnx.ModelProto:
    """x -> Conv(pad 1) -> Add(rows @ taps @ cols) -> Relu: a map no BatchNormalization reads."""
    rng = np.random.default_rng(0)
    kernel, (rows, cols) = bias_map_factors(
        rng.normal(0, 0.3, (8, 2, 3, 3)), np.array([0.5, -1.0]), {"pads": [1] * 4}, [8, 8], [8, 8]
    )
    inits = [
        numpy_helper.from_array(rng.normal(0, 0.3, (8, 4, 3, 3)).astype(np.float32), "w"),
        numpy_helper.from_array(rows.astype(np.float32), "rows"),
        numpy_helper.from_array(kernel.astype(np.float32), "taps"),
        numpy_helper.from_array(cols.T.astype(np.float32), "cols"),
    ]
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1], name="conv"),
        helper.make_node("MatMul", ["rows", "taps"], ["half"], name="map_rows"),
        helper.make_node("MatMul", ["half", "cols"], ["map"], name="map_cols"),
        helper.make_node("Add", ["c", "map"], ["a"], name="conv_map"),
        helper.make_node("Relu", ["a"], ["y"], name="relu"),
    ]
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8, 8, 8])], inits,
    )  # fmt: skip
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_a_map_with_no_batchnorm_after_it_stays_and_says_why():
    model = _map_then_relu()
    converted, record = convert_maps(model, "after-bn")
    assert (record.maps, record.converted) == (1, 0) and record.exact
    assert record.left == [{"node": "conv_map", "reason": "no BatchNormalization reads it alone"}]
    assert _relative(_outputs(model, 1), _outputs(converted, 1)) == 0
    conv, recomputed = convert_maps(model, "conv")
    assert recomputed.converted == 1 and _relative(_outputs(model, 1), _outputs(conv, 1)) < 1e-5
    interior, folded = convert_maps(model, "interior")
    assert folded.converted == 1 and any(
        n.op_type == "Conv" and len(n.input) == 3 for n in interior.graph.node
    )


def test_an_unknown_form_is_a_usage_error():
    with pytest.raises(UsageError, match="--bias-maps must be one of"):
        convert_maps(_map_then_relu(), "sideways")
    assert set(FORMS) == {"factored", "dense", "conv", "after-bn", "interior"}


def test_a_dense_map_keeps_its_form_where_its_taps_are_gone():
    from rules.test_padmap import _with_factored_map

    model = _with_factored_map(dense=True)
    converted, record = convert_maps(model, "conv")
    assert (record.maps, record.converted) == (1, 0)
    assert record.left == [{"node": record.left[0]["node"], "reason": "stored dense: its taps are not kept"}]
    moved, behind = convert_maps(model, "after-bn")  # a dense map still moves behind its BN, exactly
    assert behind.converted == 1 and _relative(_outputs(model, 1), _outputs(moved, 1)) < 1e-5
