"""verify.py: inputs, both comparisons, the `check` entry point and its report, on tiny models built here."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from rich.console import Console

from onnxprune import inputs, runtime, verify
from onnxprune.errors import ModelLoadError, UsageError, ValidationError, VerificationError

FLOAT = TensorProto.FLOAT


def _model(nodes, inputs, outputs, weights=()):
    graph = helper.make_graph(nodes, "g", inputs, outputs, initializer=list(weights))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def _tensor(name, dims, elem=FLOAT):
    return helper.make_tensor_value_info(name, elem, dims)


def _weights(shape, seed):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def conv_net(filters=4, weight_delta=0.0, bias_delta=0.0, scale=1.0):
    """x[1,3,8,8] -> Conv(3x3) -> Relu -> y[1,filters,6,6]."""
    w = _weights((filters, 3, 3, 3), 1) * np.float32(scale)
    b = (_weights((filters,), 2) + np.float32(bias_delta)) * np.float32(scale)
    w.flat[0] += weight_delta
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"]), helper.make_node("Relu", ["c"], ["y"])]
    init = [numpy_helper.from_array(w, "w"), numpy_helper.from_array(b, "b")]
    return _model(nodes, [_tensor("x", [1, 3, 8, 8])], [_tensor("y", [1, filters, 6, 6])], init)


def multi_output(delta_b=0.0):
    """Two conv branches and a pooled head: y1 and pooled read w_a, y2 reads w_b."""
    w_a, w_b = _weights((4, 3, 1, 1), 3), _weights((2, 3, 1, 1), 4)
    w_b.flat[0] += delta_b
    nodes = [
        helper.make_node("Conv", ["x", "w_a"], ["y1"]),
        helper.make_node("Conv", ["x", "w_b"], ["y2"]),
        helper.make_node("GlobalAveragePool", ["y1"], ["pooled"]),
    ]
    outputs = [_tensor("y1", [1, 4, 5, 5]), _tensor("y2", [1, 2, 5, 5]), _tensor("pooled", [1, 4, 1, 1])]
    init = [numpy_helper.from_array(w_a, "w_a"), numpy_helper.from_array(w_b, "w_b")]
    return _model(nodes, [_tensor("x", [1, 3, 5, 5])], outputs, init)


def dynamic():
    """x[N,3,H,W] -> Conv(3x3, pad 1) -> y[N,4,H,W]."""
    w = numpy_helper.from_array(_weights((4, 3, 3, 3), 5), "w")
    node = helper.make_node("Conv", ["x", "w"], ["y"], pads=[1, 1, 1, 1])
    return _model([node], [_tensor("x", ["N", 3, "H", "W"])], [_tensor("y", ["N", 4, "H", "W"])], [w])


def int_and_bool():
    """y = Where(keep, Gather(x, idx, axis=1), 0): a float, an int64 and a bool input sharing dim N."""
    zero = numpy_helper.from_array(np.zeros((), np.float32), "zero")
    nodes = [
        helper.make_node("Gather", ["x", "idx"], ["g"], axis=1),
        helper.make_node("Where", ["keep", "g", "zero"], ["y"]),
    ]
    inputs = [
        _tensor("x", ["N", 8]),
        _tensor("idx", [2], TensorProto.INT64),
        _tensor("keep", ["N", 2], TensorProto.BOOL),
    ]
    return _model(nodes, inputs, [_tensor("y", ["N", 2])], [zero])


def classifier(sign=1.0):
    """x[batch,3,4,4] -> Flatten -> Gemm -> logits[batch,1000]."""
    w = numpy_helper.from_array(sign * _weights((48, 1000), 6), "w")
    nodes = [helper.make_node("Flatten", ["x"], ["f"]), helper.make_node("Gemm", ["f", "w"], ["logits"])]
    return _model(nodes, [_tensor("x", ["batch", 3, 4, 4])], [_tensor("logits", ["batch", 1000])], [w])


def half_input():
    """x[2,3] float16 -> Cast -> y float32."""
    node = helper.make_node("Cast", ["x"], ["y"], to=FLOAT)
    return _model([node], [_tensor("x", [2, 3], TensorProto.FLOAT16)], [_tensor("y", [2, 3])])


def times(k):
    """y = x * k, to make all-zero outputs."""
    const = numpy_helper.from_array(np.array(k, np.float32), "k")
    return _model(
        [helper.make_node("Mul", ["x", "k"], ["y"])], [_tensor("x", [2, 3])], [_tensor("y", [2, 3])], [const]
    )


MODELS = {
    "conv_net": conv_net,
    "multi_output": multi_output,
    "dynamic": dynamic,
    "int_and_bool": int_and_bool,
    "classifier": classifier,
    "half_input": half_input,
}


def _save(model, path):
    onnx.save(model, str(path))
    return path


# ---- identical, tampered, tolerances -----------------------------------------------------------------------


@pytest.mark.parametrize("name", MODELS)
def test_identical_models_pass(name):
    model = MODELS[name]()
    result = verify.compare(model, model, feeds=verify.make_inputs(model, iterations=2), atol=0.0, rtol=0.0)
    assert result.passed and result.iterations == 2
    assert [o.name for o in result.outputs] == [o.name for o in model.graph.output]
    for out in result.outputs:
        assert out.max_abs_err == 0.0 and out.max_rel_err == 0.0 and out.cosine == pytest.approx(1.0)


def test_tampered_weight_fails_and_metrics_show_it():
    reference, tampered = conv_net(), conv_net(weight_delta=0.5)
    feeds = verify.make_inputs(reference, iterations=3, seed=1)
    (out,) = verify.compare(reference, tampered, feeds=feeds).outputs
    expected = [runtime.run_model(tampered, f)["y"] - runtime.run_model(reference, f)["y"] for f in feeds]
    assert not out.passed and "values off" in out.reason
    assert out.max_abs_err == pytest.approx(max(np.abs(d).max() for d in expected), rel=1e-5)
    assert 0.0 < out.cosine < 1.0 and out.top1_agreement is None


def test_tolerances_decide_a_small_perturbation():
    # A bias shift of 1e-4 moves every positive output by 1e-4 (and Relu's zeros by at most that).
    reference, shifted = conv_net(), conv_net(bias_delta=1e-4)
    feeds = verify.make_inputs(reference)
    loose = verify.compare(reference, shifted, feeds=feeds, atol=1e-3, rtol=0.0)
    tight = verify.compare(reference, shifted, feeds=feeds, atol=1e-5, rtol=0.0)
    assert loose.passed and not tight.passed
    assert tight.outputs[0].max_abs_err == pytest.approx(1e-4, rel=1e-2)
    assert (tight.atol, tight.rtol, tight.criterion) == (1e-5, 0.0, "elementwise")


def test_rtol_is_relative_to_each_reference_value():
    # Doubling weights and bias doubles every output exactly (powers of two commute with float rounding),
    # so |a - b| == |a| everywhere: rtol 1 passes, anything less fails.
    reference, doubled = conv_net(), conv_net(scale=2.0)
    feeds = verify.make_inputs(reference, iterations=2)
    assert verify.compare(reference, doubled, feeds=feeds, atol=0.0, rtol=1.0).passed
    assert not verify.compare(reference, doubled, feeds=feeds, atol=0.0, rtol=0.99).passed


def test_multi_output_fails_only_the_touched_output():
    reference = multi_output()
    result = verify.compare(reference, multi_output(delta_b=0.3), feeds=verify.make_inputs(reference))
    assert {o.name: o.passed for o in result.outputs} == {"y1": True, "y2": False, "pooled": True}
    assert not result.passed


def test_different_output_shapes_fail_cleanly():
    result = verify.compare(conv_net(4), conv_net(3), feeds=verify.make_inputs(conv_net()))
    (out,) = result.outputs
    assert not out.passed and out.reason == "shape 1x4x6x6 vs 1x3x6x6"
    assert (out.reference_shape, out.candidate_shape) == ((1, 4, 6, 6), (1, 3, 6, 6))
    assert out.max_abs_err is None and out.cosine is None
    json.dumps(result.to_dict(), allow_nan=False)


def test_outputs_only_one_model_has_fail():
    reference = multi_output()
    fewer = onnx.ModelProto()
    fewer.CopyFrom(reference)
    del fewer.graph.output[2]
    result = verify.compare(reference, fewer, feeds=verify.make_inputs(reference))
    assert [(o.name, o.passed, o.reason) for o in result.outputs][2] == (
        "pooled",
        False,
        "missing from the candidate",
    )


def test_nan_always_fails_and_serialises_as_null():
    node = helper.make_node("Log", ["x"], ["y"])  # N(0, 1) inputs: about half the logs are NaN
    model = _model([node], [_tensor("x", [4, 4])], [_tensor("y", [4, 4])])
    result = verify.compare(model, model, feeds=verify.make_inputs(model), atol=1.0, rtol=1.0)
    assert not result.passed
    out = json.loads(json.dumps(result.to_dict(), allow_nan=False))["outputs"][0]
    assert out["max_abs_err"] is None and out["passed"] is False


def test_all_zero_outputs():
    zero, one = times(0.0), times(1.0)
    feeds = verify.make_inputs(zero)
    (same,) = verify.compare(zero, zero, feeds=feeds, atol=0.0, rtol=0.0).outputs
    assert same.passed and same.cosine == 1.0 and same.max_rel_err == 0.0
    (differ,) = verify.compare(zero, one, feeds=feeds).outputs
    assert not differ.passed and differ.cosine == 0.0 and np.isfinite(differ.max_rel_err)


# ---- top-1 and to_dict -------------------------------------------------------------------------------------


def test_top1_only_for_class_scores():
    model = classifier()
    feeds = verify.make_inputs(model, shapes={"x": (8, 3, 4, 4)}, iterations=2)
    same = verify.compare(model, model, feeds=feeds)
    assert same.outputs[0].top1_agreement == 1.0 and same.outputs[0].reference_shape == (8, 1000)
    flipped = classifier(sign=-1.0)
    agree = [
        runtime.run_model(model, f)["logits"].argmax(-1) == runtime.run_model(flipped, f)["logits"].argmax(-1)
        for f in feeds
    ]
    out = verify.compare(model, flipped, feeds=feeds).outputs[0]
    assert out.top1_agreement == pytest.approx(np.concatenate(agree).mean())
    assert out.cosine == pytest.approx(-1.0)
    pooled = verify.compare(multi_output(), multi_output(), feeds=verify.make_inputs(multi_output()))
    assert all(o.top1_agreement is None for o in pooled.outputs)


def test_to_dict_is_plain_json():
    model = classifier()
    result = verify.compare(model, classifier(sign=-1.0), feeds=verify.make_inputs(model, iterations=2))
    data = json.loads(json.dumps(result.to_dict(), allow_nan=False))
    assert data["passed"] is False and data["iterations"] == 2 and data["criterion"] == "elementwise"
    out = data["outputs"][0]
    assert out["reference_shape"] == [1, 1000] and isinstance(out["max_abs_err"], float)
    assert set(out) == {
        "name",
        "reference_shape",
        "candidate_shape",
        "max_abs_err",
        "max_rel_err",
        "cosine",
        "top1_agreement",
        "passed",
        "reason",
        "noise",
        "allowed",
        "sensitivity",
        "error_per_change",
        "channel_cosine",
    }


# ---- exactness and the relative helpers --------------------------------------------------------------------


def test_relative_error_is_relative_to_the_reference_scale():
    a, b = np.array([1000.0, 1e-3]), np.array([1000.0, 1.1e-3])
    assert verify.max_relative_error(a, b) == pytest.approx(1e-4 / 1000.0)
    verify.assert_close_relative(a, b)  # element-wise, 1e-3 vs 1.1e-3 would be a 10% error
    assert not np.allclose(b, a, rtol=1e-5, atol=0.0)
    with pytest.raises(AssertionError, match="max\\|a-b\\|"):
        verify.assert_close_relative(a, a + 0.1)
    with pytest.raises(AssertionError):
        verify.assert_close_relative(a, np.array([np.nan, 1e-3]))
    assert verify.max_relative_error(np.zeros(3), np.zeros(3)) == 0.0


def test_exactness_uses_the_scale_aware_criterion():
    reference = conv_net()
    feeds = verify.make_inputs(reference, iterations=2)
    scale = max(np.abs(runtime.run_model(reference, f)["y"]).max() for f in feeds)
    close = verify.exactness(reference, conv_net(bias_delta=float(scale) * 2e-6), feeds=feeds)
    far = verify.exactness(reference, conv_net(bias_delta=float(scale) * 1e-4), feeds=feeds)
    assert close.passed and close.criterion == "scale" and (close.rtol, close.atol) == (1e-5, 1e-6)
    assert not far.passed and "max|a|" in far.outputs[0].reason
    assert far.outputs[0].max_rel_err == pytest.approx(1e-4, rel=0.05)


# ---- random inputs -----------------------------------------------------------------------------------------


def test_random_inputs_are_seeded_and_typed():
    model = int_and_bool()
    first, again = verify.make_inputs(model, seed=3), verify.make_inputs(model, seed=3)
    other = verify.make_inputs(model, seed=4)
    assert all(np.array_equal(first[0][k], again[0][k]) for k in first[0])
    assert not np.array_equal(first[0]["x"], other[0]["x"])
    feed = verify.make_inputs(model, iterations=50)[-1]
    assert feed["x"].dtype == np.float32 and feed["x"].min() < 0 < feed["x"].max()
    assert feed["idx"].dtype == np.int64 and feed["idx"].min() >= 0 and feed["idx"].max() < inputs.INT_HIGH
    assert feed["keep"].dtype == np.bool_
    assert verify.make_inputs(half_input())[0]["x"].dtype == np.float16
    with pytest.raises(UsageError, match="at least 1"):
        verify.make_inputs(model, iterations=0)
    assert verify.compare(model, model, feeds=verify.make_inputs(model, iterations=3)).passed


def test_dynamic_dims_get_defaults_or_the_given_shapes():
    model = dynamic()
    assert verify.make_inputs(model)[0]["x"].shape == (1, 3, 224, 224)
    feeds = verify.make_inputs(model, shapes=verify.parse_shapes(["x:2x3x16x20"]))
    assert feeds[0]["x"].shape == (2, 3, 16, 20)
    assert verify.compare(model, model, feeds=feeds).outputs[0].reference_shape == (2, 4, 16, 20)
    # A dim_param set through one input sizes the others that share it; rank-2 dynamic dims default to 1.
    feed = verify.make_inputs(int_and_bool(), shapes={"x": (5, 8)})[0]
    assert feed["keep"].shape == (5, 2)
    assert verify.make_inputs(classifier())[0]["x"].shape == (1, 3, 4, 4)
    # Defaults bind too: S is spatial (224) in x, so the rank-1 v that shares it gets 224, not a batch of 1.
    inputs = [_tensor("x", [1, 3, "S", "S"]), _tensor("v", ["S"])]
    shared = _model([helper.make_node("Add", ["x", "v"], ["y"])], inputs, [_tensor("y", [1, 3, "S", "S"])])
    assert verify.make_inputs(shared)[0]["v"].shape == (224,)


@pytest.mark.parametrize(
    ("shapes", "match"),
    [
        ({"y": (1, 3, 8, 8)}, "not an input"),
        ({"x": (1, 4, 8, 8)}, "does not fit"),
        ({"x": (1, 3, 8)}, "does not fit"),
    ],
)
def test_shapes_that_do_not_fit_the_model_are_usage_errors(shapes, match):
    with pytest.raises(UsageError, match=match):
        verify.make_inputs(dynamic(), shapes=shapes)


def test_an_input_without_a_shape_needs_one():
    model = _model([helper.make_node("Relu", ["x"], ["y"])], [_tensor("x", ["N"])], [_tensor("y", ["N"])])
    model.graph.input[0].type.tensor_type.ClearField("shape")  # legal, though onnx.checker wants one
    with pytest.raises(UsageError, match="--shape x:DIMS"):
        verify.make_inputs(model)
    assert verify.make_inputs(model, shapes={"x": (2, 5)})[0]["x"].shape == (2, 5)


def test_parse_shapes():
    assert verify.parse_shapes(["x:1x3x224x224", "input:0:[2,3]", "y:7"]) == {
        "x": (1, 3, 224, 224),
        "input:0": (2, 3),
        "y": (7,),
    }
    for bad in ["x", "x:", "x:1x", "x:1xax3", ":1x2", "x:0x3"]:
        with pytest.raises(UsageError):
            verify.parse_shapes([bad])
    with pytest.raises(UsageError, match="second shape"):
        verify.parse_shapes(["x:1", "x:2"])


def test_initializers_listed_as_inputs_are_not_fed():
    model = conv_net()
    model.graph.input.extend([_tensor("w", [4, 3, 3, 3]), _tensor("b", [4])])  # the IR < 4 convention
    assert list(verify.make_inputs(model)[0]) == ["x"]


# ---- the user's data ---------------------------------------------------------------------------------------


def test_npz_is_one_feed_cast_to_the_input_dtype(tmp_path):
    model = conv_net()
    x = np.random.default_rng(9).standard_normal((1, 3, 8, 8))  # float64, as numpy makes it
    np.savez(tmp_path / "in.npz", x=x)
    (feed,) = verify.make_inputs(model, inputs_path=tmp_path / "in.npz", iterations=5)
    assert feed["x"].dtype == np.float32 and np.array_equal(feed["x"], x.astype(np.float32))
    assert verify.compare(model, model, feeds=[feed]).passed


@pytest.mark.parametrize(
    ("arrays", "match"),
    [
        ({"x": np.zeros((1, 3, 8, 8)), "mask": np.zeros(2)}, "'mask' is not an input of the model"),
        ({"input": np.zeros((1, 3, 8, 8))}, "'input' is not an input of the model"),
        ({}, "no data for input 'x'"),
        ({"x": np.zeros((1, 3, 9, 8))}, "has shape 1x3x9x8, the model takes 1x3x8x8"),
        ({"x": np.zeros((1, 3, 8, 8), dtype=np.complex64)}, "is complex64"),
    ],
)
def test_npz_that_does_not_fit_gives_one_line(tmp_path, arrays, match):
    np.savez(tmp_path / "in.npz", **arrays)
    with pytest.raises(ModelLoadError, match=match) as info:
        verify.make_inputs(conv_net(), inputs_path=tmp_path / "in.npz")
    assert "\n" not in str(info.value) and "in.npz, feed 0" in str(info.value)


def test_unreadable_inputs_files(tmp_path):
    (tmp_path / "bad.npz").write_bytes(b"not a zip")
    (tmp_path / "bad.json").write_text("{ nope")
    (tmp_path / "in.txt").write_text("1 2 3")
    for name in ["missing.npz", "bad.npz", "bad.json", "in.txt"]:
        with pytest.raises(ModelLoadError) as info:
            verify.make_inputs(conv_net(), inputs_path=tmp_path / name)
        assert "\n" not in str(info.value) and name in str(info.value)


POLYGRAPHY = Path(sys.executable).with_name("polygraphy")


@pytest.mark.skipif(not POLYGRAPHY.exists() and not shutil.which("polygraphy"), reason="no polygraphy CLI")
def test_polygraphy_saved_inputs(tmp_path):
    from polygraphy.json import load_json, save_json

    model = int_and_bool()
    _save(model, tmp_path / "m.onnx")
    cli = str(POLYGRAPHY) if POLYGRAPHY.exists() else "polygraphy"
    shapes = ["--input-shapes", "x:[2,8]", "idx:[2]", "keep:[2,2]", "--val-range", "idx:[0,7]"]
    run = [cli, "run", str(tmp_path / "m.onnx"), "--onnxrt", "--iterations", "3", "--save-inputs"]
    subprocess.run([*run, str(tmp_path / "cli.json"), *shapes], check=True, capture_output=True)
    feeds = verify.make_inputs(model, inputs_path=tmp_path / "cli.json")
    assert len(feeds) == 3 and feeds[0]["x"].shape == (2, 8) and feeds[0]["idx"].dtype == np.int64
    assert verify.compare(model, model, feeds=feeds).passed
    # save_json of a list of feed dicts writes the very file the CLI wrote; and a single feed loads too.
    save_json(load_json(str(tmp_path / "cli.json")), str(tmp_path / "ours.json"))
    assert (tmp_path / "ours.json").read_text() == (tmp_path / "cli.json").read_text()
    save_json(dict(feeds[1]), str(tmp_path / "one.json"))
    (again,) = verify.make_inputs(model, inputs_path=tmp_path / "one.json")
    assert all(np.array_equal(again[k], feeds[1][k]) for k in feeds[1])


def test_polygraphy_json_round_trip(tmp_path):
    from polygraphy.json import save_json

    model = dynamic()
    feeds = verify.make_inputs(model, iterations=2, shapes={"x": (1, 3, 5, 5)})
    save_json(feeds, str(tmp_path / "in.json"))
    loaded = verify.make_inputs(model, inputs_path=tmp_path / "in.json")
    assert len(loaded) == 2 and all(
        np.array_equal(a["x"], b["x"]) for a, b in zip(loaded, feeds, strict=True)
    )
    save_json([{"x": np.zeros((1, 3, 5, 5), np.float32), "y": np.zeros(1)}], str(tmp_path / "extra.json"))
    with pytest.raises(ModelLoadError, match="extra.json, feed 0: 'y' is not an input"):
        verify.make_inputs(model, inputs_path=tmp_path / "extra.json")


# ---- running: errors, output, check_models, report ---------------------------------------------------------


def test_models_with_different_inputs_are_refused():
    other = dynamic()
    other.graph.input[0].name = "image"
    other.graph.node[0].input[0] = "image"
    with pytest.raises(VerificationError, match="different inputs: x vs image"):
        verify.compare(dynamic(), other, feeds=verify.make_inputs(dynamic(), shapes={"x": (1, 3, 4, 4)}))


def test_onnx_runtime_failures_are_one_line_validation_errors():
    model = conv_net()
    broken = onnx.ModelProto()
    broken.CopyFrom(model)
    broken.graph.node[1].op_type = "NoSuchOp"
    with pytest.raises(ValidationError, match="cannot load the candidate model") as info:
        verify.compare(model, broken, feeds=verify.make_inputs(model))
    assert "\n" not in str(info.value)
    too_big = [{"x": np.zeros((1, 3, 9, 9), np.float32)}]  # compare trusts its feeds; ORT does not
    with pytest.raises(ValidationError, match="inference failed"):
        verify.compare(model, model, feeds=too_big)


def test_compare_prints_nothing_on_stdout(capfd):
    model = dynamic()
    feeds = verify.make_inputs(model, iterations=3, shapes={"x": (1, 3, 4, 4)})
    assert verify.compare(model, model, feeds=feeds, progress=True).passed
    assert capfd.readouterr().out == ""


def test_check_models_from_paths(tmp_path):
    reference, other = _save(dynamic(), tmp_path / "a.onnx"), _save(dynamic(), tmp_path / "b.onnx")
    result = verify.check_models(reference, other, iterations=2, seed=5, shapes=["x:1x3x6x6"], atol=0, rtol=0)
    assert result.passed and result.iterations == 2 and result.outputs[0].reference_shape == (1, 4, 6, 6)
    tampered = _save(conv_net(weight_delta=1.0), tmp_path / "c.onnx")
    assert not verify.check_models(_save(conv_net(), tmp_path / "d.onnx"), tampered).passed


def test_check_models_refuses_missing_and_corrupt_files(tmp_path):
    good = _save(conv_net(), tmp_path / "good.onnx")
    (tmp_path / "corrupt.onnx").write_bytes(b"\x08\x07garbage\xff\xff\xff")
    with pytest.raises(ModelLoadError, match="model not found"):
        verify.check_models(good, tmp_path / "missing.onnx")
    with pytest.raises(ModelLoadError, match="corrupt.onnx") as info:
        verify.check_models(tmp_path / "corrupt.onnx", good)
    assert "\n" not in str(info.value)
    with pytest.raises(UsageError):
        verify.check_models(good, good, shapes=["x=1x3x8x8"])


def test_render_comparison_has_a_row_per_output():
    reference = multi_output()
    result = verify.compare(reference, multi_output(delta_b=0.3), feeds=verify.make_inputs(reference))
    console = Console(record=True, width=200)
    console.print(verify.render_comparison(result, "pruned vs original"))
    text = console.export_text()
    assert "pruned vs original" in text and "1x4x5x5" in text and "|a-b| <= 1e-05 + 1e-05 * |a|" in text
    rows = [line for line in text.splitlines() if line.strip("│ ").startswith(("y1", "y2", "pooled"))]
    assert len(rows) == 3 and "FAIL" in rows[1] and "pass" in rows[0] and "pass" in rows[2]


def test_run_model_and_ort_session():
    model = multi_output()
    feed = verify.make_inputs(model)[0]
    outputs = runtime.run_model(model, feed)
    assert list(outputs) == ["y1", "y2", "pooled"]
    np.testing.assert_allclose(
        outputs["pooled"], outputs["y1"].mean(axis=(2, 3), keepdims=True), rtol=1e-5, atol=1e-6
    )
    assert runtime.ort_session(model).get_providers() == ["CPUExecutionProvider"]
