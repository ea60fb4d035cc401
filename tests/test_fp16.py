"""fp16.py on the CPU: the project's tiny registry, FP16-specific tiny models built here, and the real
topologies of tests/data."""

from __future__ import annotations

import logging
import zlib

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import tiny
from onnx import TensorProto, helper, numpy_helper
from weights import DATA, load, topologies

from onnxprune.errors import ValidationError, VerificationError
from onnxprune.fp16 import DEFAULT_FP32_OPS, FP32_OP_REASONS, convert_to_fp16, verify_fp16

FLOAT, FLOAT16, INT64 = TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.INT64


# ---- tiny models -------------------------------------------------------------------------------------------


def _model(nodes, inputs, outputs, weights=()):
    graph = helper.make_graph(nodes, "g", inputs, outputs, initializer=list(weights))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    return model


def _io(name, dims, elem=FLOAT):
    return helper.make_tensor_value_info(name, elem, dims)


def _rng(name):
    # Seeded by name, so that every call of a builder makes the same model.
    return np.random.default_rng(zlib.crc32(name.encode()))


def _w(name, *shape, scale=None):
    fan_in = int(np.prod(shape[1:])) if len(shape) > 1 else 1
    values = _rng(name).normal(0, scale if scale is not None else np.sqrt(2 / fan_in), shape)
    return numpy_helper.from_array(values.astype(np.float32), name)


def _ints(name, values):
    return numpy_helper.from_array(np.array(values, dtype=np.int64), name)


def _conv(x, y, cin, cout, k=3):
    node = helper.make_node("Conv", [x, f"{y}.w", f"{y}.b"], [y], pads=[k // 2] * 4)
    return node, [_w(f"{y}.w", cout, cin, k, k), _w(f"{y}.b", cout, scale=0.1)]


def resize():
    """Resize by scales from a Constant node (4/3: float16 would round it), to int64 sizes, and a crop box."""
    conv, weights = _conv("x", "c", 4, 4)
    scales = numpy_helper.from_array(np.array([1, 1, 4 / 3, 4 / 3], dtype=np.float32))
    roi = numpy_helper.from_array(np.float32([0, 0, 0.1, 0.2, 1, 1, 0.9, 0.7]), "roi")
    nodes = [
        conv,
        helper.make_node("Constant", [], ["scales"], value=scales),
        helper.make_node("Resize", ["c", "", "scales"], ["y1"], mode="linear"),
        helper.make_node("Resize", ["c", "", "", "sizes"], ["y2"], mode="nearest"),
        helper.make_node(
            "Resize", ["c", "roi", "", "sizes"], ["y3"], coordinate_transformation_mode="tf_crop_and_resize"
        ),
    ]
    outputs = [_io("y1", [1, 4, 16, 16]), _io("y2", [1, 4, 20, 20]), _io("y3", [1, 4, 20, 20])]
    consts = [_ints("sizes", [1, 4, 20, 20]), roi]
    return _model(nodes, [_io("x", [1, 4, 12, 12])], outputs, [*weights, *consts])


def split():
    """Conv -> Split by int64 sizes -> a Conv per part -> Concat -> Reshape by an int64 shape."""
    conv, w = _conv("x", "c", 8, 16)
    ca, wa = _conv("p0", "a", 4, 4)
    cb, wb = _conv("p1", "b", 12, 4)
    nodes = [
        conv,
        helper.make_node("Split", ["c", "parts"], ["p0", "p1"], axis=1),
        ca,
        cb,
        helper.make_node("Concat", ["a", "b"], ["ab"], axis=1),
        helper.make_node("Reshape", ["ab", "flat"], ["y"]),
    ]
    weights = [*w, *wa, *wb, _ints("parts", [4, 12]), _ints("flat", [1, -1])]
    return _model(nodes, [_io("x", [1, 8, 8, 8])], [_io("y", [1, 512])], weights)


def shape_math():
    """Output size computed in float from Shape: 1.5 x H, floored, back to int64, into Resize's sizes."""
    conv, weights = _conv("x", "c", 4, 4)
    nodes = [
        conv,
        helper.make_node("Shape", ["c"], ["shape"]),
        helper.make_node("Gather", ["shape", "hw_axes"], ["hw"]),
        helper.make_node("Cast", ["hw"], ["hw_f"], to=FLOAT),
        helper.make_node("Mul", ["hw_f", "factor"], ["hw_scaled"]),
        helper.make_node("Floor", ["hw_scaled"], ["hw_floor"]),
        helper.make_node("Cast", ["hw_floor"], ["hw_new"], to=INT64),
        helper.make_node("Concat", ["nc", "hw_new"], ["sizes"], axis=0),
        helper.make_node("Resize", ["c", "", "", "sizes"], ["r"], mode="nearest"),
        helper.make_node("Relu", ["r"], ["y"]),
    ]
    consts = [
        _ints("hw_axes", [2, 3]),
        _ints("nc", [1, 4]),
        numpy_helper.from_array(np.float32([1.5]), "factor"),
    ]
    return _model(nodes, [_io("x", [1, 4, 10, 10])], [_io("y", [1, 4, 15, 15])], [*weights, *consts])


def mlp_softmax():
    """MatMul + bias from a Constant node, scaled by a value_float Constant, then Softmax.

    Softmax is float32 by default. The logits are a graph output and feed the Softmax too.
    """
    bias = numpy_helper.from_array(_rng("bias").normal(0, 0.1, 8).astype(np.float32))
    nodes = [
        helper.make_node("MatMul", ["x", "w"], ["m"]),
        helper.make_node("Constant", [], ["bias"], value=bias),
        helper.make_node("Add", ["m", "bias"], ["logits"]),
        helper.make_node("Constant", [], ["half"], value_float=0.5),
        helper.make_node("Mul", ["logits", "half"], ["scaled"]),
        helper.make_node("Softmax", ["scaled"], ["y"], axis=-1),
    ]
    outputs = [_io("y", [2, 8]), _io("logits", [2, 8])]
    return _model(nodes, [_io("x", [2, 16])], outputs, [_w("w", 16, 8)])


def if_branch():
    """An If whose branches read an outer tensor: that tensor stays float32, under its own name."""
    conv, weights = _conv("x", "c", 4, 4)
    then = helper.make_graph(
        [helper.make_node("Mul", ["r", "two"], ["t"])],
        "then",
        [],
        [_io("t", [1, 4, 6, 6])],
        [numpy_helper.from_array(np.float32([2.0]), "two")],
    )
    other = helper.make_graph([helper.make_node("Neg", ["r"], ["e"])], "else", [], [_io("e", [1, 4, 6, 6])])
    nodes = [
        conv,
        helper.make_node("Relu", ["c"], ["r"]),
        helper.make_node("If", ["cond"], ["y"], then_branch=then, else_branch=other),
    ]
    inputs = [_io("x", [1, 4, 6, 6]), _io("cond", [], TensorProto.BOOL)]
    return _model(nodes, inputs, [_io("y", [1, 4, 6, 6])], weights)


def uint8_image():
    """A uint8 image cast to float and scaled: the Cast now makes float16."""
    conv, weights = _conv("scaled", "y", 3, 4)
    nodes = [
        helper.make_node("Cast", ["x"], ["xf"], to=FLOAT),
        helper.make_node("Div", ["xf", "255"], ["scaled"]),
        conv,
    ]
    consts = [*weights, numpy_helper.from_array(np.float32([255.0]), "255")]
    return _model(nodes, [_io("x", [1, 3, 8, 8], TensorProto.UINT8)], [_io("y", [1, 4, 8, 8])], consts)


# The project's registry (Conv -> BN -> activation chains with a GAP -> Flatten -> Gemm head, a residual Add,
# a Concat, a depthwise block, a Flatten into MatMul), and the patterns that matter to FP16.
TINY = {
    **tiny.REGISTRY,
    **{f.__name__: f for f in (resize, split, shape_math, mlp_softmax, if_branch, uint8_image)},
}


# ---- helpers -----------------------------------------------------------------------------------------------


def _run(model, feed):
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return dict(zip([o.name for o in session.get_outputs()], session.run(None, feed), strict=True))


def _types(model):
    """Every tensor's element type, after shape inference."""
    graph = onnx.shape_inference.infer_shapes(model).graph
    types = {init.name: init.data_type for init in graph.initializer}
    for value in (*graph.input, *graph.value_info, *graph.output):
        types[value.name] = value.type.tensor_type.elem_type
    return types


def _node(model, op_type):
    return next(node for node in model.graph.node if node.op_type == op_type)


def _check_converted(original, converted):
    """The checks every conversion must pass: IO kept, checker, ONNX Runtime, agreement."""
    assert [(v.name, v.type) for v in converted.graph.input] == [
        (v.name, v.type) for v in original.graph.input
    ]
    assert [(v.name, v.type) for v in converted.graph.output] == [
        (v.name, v.type) for v in original.graph.output
    ]
    onnx.checker.check_model(converted, full_check=True)
    comparison = verify_fp16(original, converted)
    assert all(out.cosine >= 0.999 for out in comparison.outputs)
    # Half-precision weights and activations: a bit-exact result would mean nothing was converted.
    assert any(out.max_abs_err > 0 for out in comparison.outputs)
    return comparison


def _fp32_ops_stay_fp32(model, ops):
    types = _types(model)
    for node in model.graph.node:
        if node.op_type in ops:
            floats = [types.get(name) for name in (*node.input, *node.output) if name]
            assert FLOAT16 not in floats, f"{node.op_type} {node.name} reads or writes float16"


# ---- tiny models -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", TINY)
def test_tiny_model_converts_runs_and_agrees(name):
    original = TINY[name]()
    converted = convert_to_fp16(original)
    _check_converted(original, converted)
    assert FLOAT16 in _types(converted).values()
    _fp32_ops_stay_fp32(converted, DEFAULT_FP32_OPS)


def test_conversion_leaves_the_input_model_alone():
    original = tiny.chain()
    before = original.SerializeToString()
    convert_to_fp16(original)
    assert original.SerializeToString() == before


def test_weights_and_activations_become_float16():
    original = tiny.chain()
    converted = convert_to_fp16(original)
    types = _types(converted)
    for node in converted.graph.node:
        if node.op_type in ("Conv", "BatchNormalization", "Gemm", "Clip"):
            assert {types[name] for name in (*node.input, *node.output)} == {FLOAT16}, node.name
    # The edges: the graph input is cast down on the way in, the output cast up on the way out.
    output = original.graph.output[0].name
    casts = [n for n in converted.graph.node if n.op_type == "Cast"]
    assert [(c.input[0], c.output[0], c.attribute[0].i) for c in casts] == [
        ("input", "input_fp16", FLOAT16),
        (f"{output}_fp16", output, FLOAT),
    ]


def test_resize_scales_roi_and_sizes_keep_their_types_and_the_output_size():
    original = resize()
    converted = convert_to_fp16(original)
    types = _types(converted)
    by_scales, by_sizes, cropped = (n for n in converted.graph.node if n.op_type == "Resize")
    assert types[by_scales.input[0]] == FLOAT16
    assert types[by_scales.input[2]] == FLOAT
    assert types[by_sizes.input[3]] == INT64
    assert types[cropped.input[1]] == FLOAT
    x = _rng("x").standard_normal((1, 4, 12, 12)).astype(np.float32)
    for name, array in _run(converted, {"x": x}).items():
        assert array.shape == _run(original, {"x": x})[name].shape


def test_a_cast_to_float32_casts_to_float16():
    converted = convert_to_fp16(uint8_image())
    cast = _node(converted, "Cast")
    assert cast.input[0] == "x" and cast.attribute[0].i == FLOAT16
    assert _types(converted)["scaled"] == FLOAT16


def test_shape_arithmetic_in_float_stays_float32():
    converted = convert_to_fp16(shape_math())
    types = _types(converted)
    assert [types[name] for name in _node(converted, "Mul").input] == [FLOAT, FLOAT]
    assert types[_node(converted, "Relu").input[0]] == FLOAT16


def test_integer_tensors_are_untouched():
    for make in (split, resize, shape_math):
        original = make()
        converted = convert_to_fp16(original)
        ints = {t.name: t for t in original.graph.initializer if t.data_type == INT64}
        assert ints
        for tensor in converted.graph.initializer:
            if tensor.name in ints:
                assert tensor == ints.pop(tensor.name)
        assert not ints


def test_if_subgraph_reads_its_outer_tensor_in_float32():
    converted = convert_to_fp16(if_branch())
    types = _types(converted)
    assert types["r"] == FLOAT
    assert types[_node(converted, "Conv").output[0]] == FLOAT16


def test_keep_fp32_ops_is_honoured():
    original = tiny.chain()
    converted = convert_to_fp16(original, keep_fp32_ops={"Relu"})
    types = _types(converted)
    relu = _node(converted, "Relu")
    assert types[relu.input[0]] == FLOAT and types[relu.output[0]] == FLOAT
    assert types[_node(converted, "Conv").output[0]] == FLOAT16
    assert types[_node(converted, "LeakyRelu").output[0]] == FLOAT16
    _fp32_ops_stay_fp32(converted, {"Relu"})
    _check_converted(original, converted)


def test_the_default_list_decides_which_ops_stay_float32():
    by_default, emptied = convert_to_fp16(mlp_softmax()), convert_to_fp16(mlp_softmax(), keep_fp32_ops=())
    assert _types(by_default)[_node(by_default, "Softmax").input[0]] == FLOAT
    assert _types(emptied)[_node(emptied, "Softmax").input[0]] == FLOAT16


def test_a_weight_read_in_both_types_is_kept_twice_not_cast():
    nodes = [helper.make_node("Add", ["x", "w"], ["a"]), helper.make_node("Mul", ["a", "w"], ["y"])]
    original = _model(nodes, [_io("x", [4])], [_io("y", [4])], [_w("w", 4, scale=1.0)])
    converted = convert_to_fp16(original, keep_fp32_ops={"Mul"})
    weights = {t.name: t.data_type for t in converted.graph.initializer}
    assert weights == {"w": FLOAT, "w_fp16": FLOAT16}
    assert not any(n.op_type == "Cast" and "w" in n.input for n in converted.graph.node)
    _check_converted(original, converted)


def test_out_of_range_weights_are_clipped_with_a_warning(caplog):
    huge = numpy_helper.from_array(np.float32([1e6, -1e6, 1.0]), "w")
    original = _model([helper.make_node("Mul", ["x", "w"], ["y"])], [_io("x", [3])], [_io("y", [3])], [huge])
    with caplog.at_level(logging.WARNING, logger="onnxprune.fp16"):
        converted = convert_to_fp16(original)
    values = numpy_helper.to_array(converted.graph.initializer[0])
    assert values.tolist() == [65504.0, -65504.0, 1.0]
    assert "clipped" in caplog.text


def test_a_weight_stripped_model_is_refused():
    with pytest.raises(ValidationError, match="no data"):
        convert_to_fp16(onnx.load(str(DATA / "resnet18.graph.onnx")))


def test_default_fp32_ops_are_onnx_ops_with_reasons():
    # A misspelt op would silently run in float16.
    for op, reason in FP32_OP_REASONS.items():
        assert onnx.defs.has(op), op
        assert reason


def test_value_info_from_shape_inference_is_retyped():
    # Rewritten models carry inferred value_info; left float32, it would contradict the float16 graph.
    original = onnx.shape_inference.infer_shapes(load("yolov8n"))
    converted = convert_to_fp16(original)
    annotated = {v.name: v.type.tensor_type.elem_type for v in converted.graph.value_info}
    conv = _node(converted, "Conv").output[0]
    softmax = _node(converted, "Softmax")
    assert annotated[conv] == FLOAT16 and annotated[softmax.output[0]] == FLOAT
    _check_converted(original, converted)


# ---- verify_fp16 -------------------------------------------------------------------------------------------


def test_verify_fp16_reports_per_output_metrics():
    original = mlp_softmax()
    comparison = verify_fp16(original, convert_to_fp16(original))
    assert [out.name for out in comparison.outputs] == ["y", "logits"]
    for out in comparison.outputs:
        assert out.passed and 0 < out.max_abs_err < 0.05 and out.max_rel_err < 0.02 and out.cosine >= 0.999


def test_verify_fp16_raises_one_line_on_disagreement():
    original = tiny.chain()
    converted = convert_to_fp16(original)
    weight = _node(converted, "Gemm").input[1]
    fc = next(t for t in converted.graph.initializer if t.name == weight)
    fc.CopyFrom(numpy_helper.from_array(-numpy_helper.to_array(fc), weight))
    with pytest.raises(VerificationError) as info:
        verify_fp16(original, converted)
    assert repr(original.graph.output[0].name) in str(info.value) and "\n" not in str(info.value)


# ---- real topologies ---------------------------------------------------------------------------------------


def _classifier_top1_agrees(comparison):
    """Top-1 agreement on every class-score output ([N, K >= 2]): FP16 must not change a decision."""
    scores = [out for out in comparison.outputs if out.top1_agreement is not None]
    assert all(out.top1_agreement == 1.0 for out in scores), [(o.name, o.top1_agreement) for o in scores]
    return scores


@pytest.mark.parametrize("name", topologies())
def test_real_topology_converts_runs_and_agrees(name):
    # BN-calibrated (input-sensitive) weights, as every test of these topologies uses. The criterion is
    # FP16's (tolerances.REDUCED_PRECISION): cosine >= 0.999 per output, the max error within 10 % of the
    # output's scale, and here also top-1 agreement on class scores. FP16 rounding alone reaches 4.5 % of
    # max|a| on these deep random-weight nets (cosine >= 0.99934), so a 2 % bound failed sound conversions.
    original = load(name)
    converted = convert_to_fp16(original)
    comparison = _check_converted(original, converted)
    if name != "yolov8n":  # detection boxes and scores in one tensor: no class-score output
        assert _classifier_top1_agrees(comparison)
    types = _types(converted)
    convs = [node for node in converted.graph.node if node.op_type == "Conv"]
    assert all(types[node.input[1]] == FLOAT16 and types[node.output[0]] == FLOAT16 for node in convs)
    _fp32_ops_stay_fp32(converted, DEFAULT_FP32_OPS)


def _swap_two_channels(weight):
    return weight[[1, 0, *range(2, len(weight))]]


def _five_significant_bits(weight):
    mantissa, exponent = np.frexp(weight.astype(np.float32))
    return np.ldexp(np.round(mantissa * 2**5) / 2**5, exponent).astype(weight.dtype)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["resnet18", "mobilenet_v2", "squeezenet1_1"])
def test_a_broken_conversion_of_a_real_topology_fails_the_criterion(name):
    """The criterion can fail: a layout bug (two output channels of the middle Conv swapped) and a lossy
    conversion (every Conv weight kept to 5 significant bits, FP16 keeps 11) are both refused, while the
    sound conversion of the same model passes."""
    original = load(name)
    converted = convert_to_fp16(original)
    _check_converted(original, converted)
    convs = [node for node in converted.graph.node if node.op_type == "Conv"]
    weights = {t.name: t for t in converted.graph.initializer}
    breakages = (([convs[len(convs) // 2]], _swap_two_channels), (convs, _five_significant_bits))
    for broken_layers, change in breakages:
        broken = onnx.ModelProto()
        broken.CopyFrom(converted)
        inits = {t.name: t for t in broken.graph.initializer}
        for node in broken_layers:
            value = change(numpy_helper.to_array(weights[node.input[1]]))
            inits[node.input[1]].CopyFrom(numpy_helper.from_array(value, node.input[1]))
        with pytest.raises(VerificationError, match="disagrees with the float32 one"):
            verify_fp16(original, broken)


QUIET = 7  # the wide Conv's channel at 5 % of the others' scale


def _wide_conv(channels: int = 2048) -> onnx.ModelProto:
    """input [1, 8, 4, 4] -> 1x1 Conv to ``channels``, one of them (QUIET) at 5 % of the others' scale."""
    rng = np.random.default_rng(5)
    values = rng.standard_normal((channels, 8, 1, 1)).astype(np.float32)
    values[QUIET] *= 0.05
    weight = numpy_helper.from_array(values, "w")
    node = helper.make_node("Conv", ["input", "w"], ["out"], name="wide")
    graph = helper.make_graph(
        [node], "wide",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 8, 4, 4])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, [1, channels, 4, 4])],
        initializer=[weight],
    )  # fmt: skip
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_one_channel_negated_among_many_fails_though_the_output_cosine_passes():
    """Negating a quiet channel (5 % of the others' scale, so within the 10 % max-error guard) among 2048
    leaves the whole output's cosine near 1: the check also asks every channel of real energy (at least
    1 % of the mean channel's RMS) to point where the float32 one does."""
    original = _wide_conv()
    converted = convert_to_fp16(original)
    assert verify_fp16(original, converted).passed
    broken = onnx.ModelProto()
    broken.CopyFrom(converted)
    weight = next(t for t in broken.graph.initializer if t.name == "w")
    value = numpy_helper.to_array(weight).copy()
    value[QUIET] *= -1
    weight.CopyFrom(numpy_helper.from_array(value, "w"))
    with pytest.raises(VerificationError, match="a channel's cosine"):
        verify_fp16(original, broken)
