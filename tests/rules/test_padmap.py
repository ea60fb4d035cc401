"""The padded Conv's bias map stored as separable factors: the same numbers, far fewer stored."""

from __future__ import annotations

import numpy as np
from onnx import TensorProto, helper, numpy_helper

from onnxprune.measure.counter import count
from onnxprune.rules.padmap import bias_map_factors, bias_map_size, padded_bias_map
from onnxprune.runtime import run_model


def _factored_model(kernel: np.ndarray, rows: np.ndarray, cols: np.ndarray):
    """x + rows @ taps @ cols, the graph insert_bias_map writes, as a standalone model."""
    k, (ho, wo) = kernel.shape[0], (rows.shape[0], cols.shape[1])
    nodes = [
        helper.make_node("MatMul", ["rows", "taps"], ["half"]),
        helper.make_node("MatMul", ["half", "cols"], ["map"]),
        helper.make_node("Add", ["x", "map"], ["y"]),
    ]
    inits = [
        numpy_helper.from_array(a.astype(np.float32), n)
        for n, a in (("rows", rows), ("taps", kernel), ("cols", cols))
    ]
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, k, ho, wo])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, k, ho, wo])], inits,
    )  # fmt: skip
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_factors_rebuild_the_dense_map_in_onnx_runtime():
    rng = np.random.default_rng(1)
    columns, values = rng.normal(size=(6, 3, 3, 5)), np.array([0.4, -2.0, 1.5])
    attrs = {"pads": [1, 2, 1, 2], "strides": [2, 1], "dilations": [1, 2]}
    in_size, out_size = [13, 10], [7, 2]
    dense = padded_bias_map(columns, values, attrs, in_size, out_size)
    kernel, (rows, cols) = bias_map_factors(columns, values, attrs, in_size, out_size)
    zero = np.zeros((1, 6, *out_size), np.float32)
    rebuilt = run_model(_factored_model(kernel, rows, cols.T), {"x": zero})["y"][0]
    np.testing.assert_allclose(rebuilt, dense, rtol=1e-5, atol=1e-5)
    assert not np.allclose(dense, dense.mean(axis=(1, 2), keepdims=True))  # the border differs: a real map


def test_factored_size_is_smaller_than_dense_where_it_pays():
    # YOLOv8n's first 3x3 at 640: 16 channels over 320x320
    assert bias_map_size(16, [3, 3], [320, 320]) == 16 * 9 + 320 * 3 + 3 * 320
    assert bias_map_size(4, [3, 3], [2, 2]) == 4 * 2 * 2  # tiny outputs stay dense
    assert bias_map_size(8, [3], [100]) == 800  # 1-D Convs stay dense


def test_a_matmul_of_constants_costs_no_macs():
    kernel, rows, cols = np.ones((4, 3, 3)), np.ones((8, 3)), np.ones((3, 8))
    counts = count(_factored_model(kernel, rows, cols))
    assert counts.macs == 0 and counts.params == 4 * 9 + 8 * 3 + 3 * 8


def test_onnx_runtime_folds_the_factors_when_it_loads_the_model(tmp_path):
    import onnx
    import onnxruntime as ort

    model = _factored_model(np.ones((4, 3, 3)), np.ones((8, 3)), np.ones((3, 8)))
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    options.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    assert [node.op_type for node in onnx.load(tmp_path / "optimized.onnx").graph.node] == ["Add"]


# ---- a model pruned before: its maps are followed, sliced and kept factored -----------------------------
def _with_factored_map(seed: int = 0, dense: bool = False):
    """Conv → Add(rows @ taps @ cols) → BN (dead channels with beta != 0) → Relu → Conv(pad 1) → BN → head:
    the graph a compensated prune leaves behind a padded Conv, written by hand (``dense``: the map as one
    [1, K, H, W] constant, as small outputs store it)."""
    from tiny import with_dead_beta

    from ._build import Net, build

    n = Net(seed)
    x = n.conv(n.cbr("input", 3, 8), 8, 16)
    columns, values = n.rng.normal(0, 0.3, (16, 4, 3, 3)), n.rng.normal(0, 1, 4)
    kernel, (rows, cols) = bias_map_factors(columns, values, {"pads": [1] * 4}, [16, 16], [16, 16])
    if dense:
        bias_map = n.param(padded_bias_map(columns, values, {"pads": [1] * 4}, [16, 16], [16, 16])[None])
    else:
        half = n.node("MatMul", [n.param(rows, "rows"), n.param(kernel, "taps")])
        bias_map = n.node("MatMul", [half, n.param(cols.T, "cols")])
    x = n.node("Add", [x, bias_map])
    x = n.act(n.bn(x, 16), "Relu")
    x = n.cbr(x, 16, 12)
    return with_dead_beta(build(n, [n.head(x, 12)]))


def _map_factors(model) -> list[tuple[list[int], ...]]:
    """The shapes of the constant inputs of every MatMul that reads only constants."""
    inits = {t.name: list(t.dims) for t in model.graph.initializer}
    return [
        tuple(inits[i] for i in node.input)
        for node in model.graph.node
        if node.op_type == "MatMul" and all(i in inits for i in node.input[:1])
    ]


def test_loading_keeps_a_factored_map_unfolded_and_folds_other_constant_matmuls():
    from onnxprune.graph import normalise

    model = _with_factored_map()
    graph = normalise(model)
    assert sum(node.op == "MatMul" for node in graph.nodes) == 2
    not_masks = _with_factored_map()
    rows = next(t for t in not_masks.graph.initializer if t.name.startswith("rows"))
    rows.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(rows) * 0.5, rows.name))
    assert not any(node.op == "MatMul" for node in normalise(not_masks).nodes)  # not a map: folded


def test_a_model_with_a_factored_map_is_pruned_through_it_exactly():
    """The BN after the map scores the Conv's channels; removing one removes its taps (still factored). The
    Relu(beta) of removed channels into a padded Conv becomes a map there: added to the old map's taps
    behind the mapped Conv (still one Add: Conv → Add(old + new) → BN), a new map behind the last Conv."""
    import tiny

    from ._build import check_exact, shape_of

    model = _with_factored_map()
    dead, half = check_exact(model, through="Add")
    assert dead is not None
    taps = sorted(shapes[1][0] for shapes in _map_factors(dead.pruned) if len(shapes[1]) == 3)
    mapped = next(n.output[0] for n in dead.pruned.graph.node if n.name.endswith("/Add"))  # the old Add
    kept = shape_of(dead.pruned, mapped)[1]
    assert len(taps) == 2 and kept in taps and kept < 16, taps  # the old map, summed, sliced along K
    products = {o for n in dead.pruned.graph.node if n.op_type == "MatMul" for o in n.output}
    map_adds = [n for n in dead.pruned.graph.node if n.op_type == "Add" and products & set(n.input)]
    assert len(map_adds) == 2  # one per padded Conv that reads constants, not one per prune
    dense = [t for t in dead.pruned.graph.initializer if len(t.dims) >= 3 and t.dims[-1] == 16 == t.dims[-2]]
    assert not dense, [t.name for t in dense]
    layers = dead.report["compensation"]["layers"]
    carrying = [(x["applied"], x["exact"]) for x in layers if x["carrying"]]
    assert carrying == [("bias map", True)] * 2 + [("bias", True)]  # the head's Gemm folds a bias
    assert count(dead.pruned).params < count(model).params
    again = tiny.prune_dead(dead.pruned)  # and once more: nothing dead is left, the model is unchanged
    assert tiny.removed_channels(again) == 0
    tiny.assert_exact(model, again.pruned)


def test_a_dense_map_is_sliced_with_the_channels_it_shifts():
    from ._build import check_exact

    model = _with_factored_map(dense=True)
    dead, _ = check_exact(model, through="Add")
    assert dead is not None
    inits = {t.name: list(t.dims) for t in dead.pruned.graph.initializer}
    mapped = next(n for n in dead.pruned.graph.node if n.name.endswith("/Add"))
    shape = next(inits[i] for i in mapped.input if i in inits)
    assert shape[0] == 1 and shape[1] < 16 and shape[2:] == [16, 16], shape


def test_a_factored_map_of_one_channel_broadcast_over_all_declines():
    """taps [1, R, S]: the same map added to every channel, not a slice per channel: declined with why."""
    from ._build import Net, assert_declines, build

    n = Net(0)
    x = n.conv(n.cbr("input", 3, 8), 8, 16)
    kernel, (rows, cols) = bias_map_factors(
        n.rng.normal(0, 0.3, (1, 4, 3, 3)), np.ones(4), {"pads": [1] * 4}, [16, 16], [16, 16]
    )
    half = n.node("MatMul", [n.param(rows, "rows"), n.param(kernel, "taps")])
    x = n.node("Add", [x, n.node("MatMul", [half, n.param(cols.T, "cols")])])
    model = build(n, [n.head(n.act(n.bn(x, 16), "Relu"), 16)])
    assert_declines(model, "Add of a bias map whose channels do not match")


def test_calibration_refits_only_its_own_part_of_a_summed_map():
    """--compensate calib on a model pruned before: the new taps summed into the earlier map (behind the
    mapped Conv) are this prune's offset and the earlier map is the original's own, so calibration sees
    the data-free fold of dead channels as exact (taking the whole map as its offset, it refitted the Conv
    away from the original: relative error 3.4e-3 at the output)."""
    import tiny

    from onnxprune import api
    from onnxprune.options import PlanOptions

    model = _with_factored_map()
    shape = [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
    drawn = np.random.default_rng(3).normal(size=(64, *shape[1:]))  # float64, numpy's default: cast
    samples = {model.graph.input[0].name: drawn}
    options = PlanOptions(threshold=0.0, round_to=1, min_keep=1, compensate="calib")
    result = api.prune_model(model, options, None, api.CalibRequest(samples=samples))
    assert tiny.removed_channels(result) > 0
    convs = [la for la in result.report["calibration"]["layers"] if la["op"] == "Conv"]
    assert len(convs) == 2 and all(abs(la["rel_mse_before"]) < 1e-5 for la in convs), convs
    tiny.assert_exact(model, result.pruned, rtol=1e-4)
