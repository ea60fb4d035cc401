"""sparsity: weights through Cast/Transpose/DequantizeLinear, eligibility, im2col, the stage end to end."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnx_graphsurgeon as gs
import pytest
import sparse_models
from onnx import numpy_helper

from onnxprune import api, runtime
from onnxprune.errors import ModelLoadError, VerificationError
from onnxprune.sparsity import (
    NothingToSparsify,
    SparsifyOptions,
    holds_24,
    pattern,
    sparsify,
    sparsify_model,
    survey,
)
from onnxprune.sparsity.apply import post_check
from onnxprune.sparsity.gram import unfold
from onnxprune.sparsity.layers import MIN_CHANNELS, layout_of
from onnxprune.sparsity.weights import resolve

SMALL = SparsifyOptions(min_channels=16)


def _layer_weights(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    """Each Conv/Gemm/MatMul's weight as the layer sees it, read from the model itself."""
    graph = gs.import_onnx(model)
    return {n.name: resolve(n).values() for n in graph.nodes if n.op in ("Conv", "Gemm", "MatMul")}


def _inputs(seed: int) -> dict[str, np.ndarray]:
    return {"input": np.random.default_rng(seed).normal(size=(2, 16, 8, 8)).astype(np.float32)}


def test_every_route_is_followed_and_every_decline_has_its_reason() -> None:
    layers = {layer.name: layer for layer in survey(sparse_models.routes(), SMALL)[0]}
    assert sorted(n for n, layer in layers.items() if layer.eligible) == sorted(sparse_models.ELIGIBLE)
    assert layers["/mm/MatMul"].weight.chain == ["Transpose"]
    assert layers["/fp16/Gemm"].weight.chain == ["Cast"]
    assert layers["/qdq/Gemm"].weight.chain == ["DequantizeLinear"]
    assert "depthwise" in layers["/dw/Conv"].reason
    assert "C=24 not a multiple of 16" in layers["/c24/Conv"].reason
    declined = {layer.name: layer.reason for layer in survey(sparse_models.declines(), SMALL)[0]}
    assert "computed at run time by Relu" in declined["/runtime/MatMul"]
    assert "shared with MatMul '/shared2/MatMul'" in declined["/shared1/MatMul"]
    assert declined["/f64/MatMul"].startswith("float64 weight")
    assert declined["/int/MatMul"].startswith("int32 weight")


def test_size_floor_counts_a_3x3_kernel_as_nine_times_its_channels() -> None:
    layers = {
        layer.name: layer for layer in survey(sparse_models.routes(), SparsifyOptions(min_channels=144))[0]
    }
    assert layers["/a/Conv"].eligible is False  # 3x3, C=16: C*9 = 144 is enough but K = 32 is not
    layers = {
        layer.name: layer for layer in survey(sparse_models.routes(), SparsifyOptions(min_channels=32))[0]
    }
    assert layers["/a/Conv"].eligible  # C*9 = 144 >= 32, K = 32
    assert "C=32, K=24" in layers["/b/Conv"].reason  # 1x1: C counts once, K = 24 < 32
    assert MIN_CHANNELS == 256


def test_layers_and_exclude_select_by_name() -> None:
    options = SparsifyOptions(min_channels=16, layers=["/*/Conv"], exclude=["/b/*"])
    layers = {layer.name: layer for layer in survey(sparse_models.routes(), options)[0]}
    assert [n for n, layer in layers.items() if layer.eligible] == ["/a/Conv"]
    assert layers["/b/Conv"].reason == "excluded by --exclude '/b/*'"
    assert layers["/mm/MatMul"].reason == "not selected by --layers"


def test_sparsify_makes_claimed_layers_24_in_their_stored_form_and_leaves_the_rest() -> None:
    model = sparse_models.routes()
    before = _layer_weights(model)
    result = sparsify_model(model, SMALL)
    after = _layer_weights(result.model)
    graph = gs.import_onnx(result.model)
    nodes = {n.name: n for n in graph.nodes}
    for name, weight in after.items():
        layout = layout_of(nodes[name], weight)
        if name in sparse_models.ELIGIBLE:
            assert pattern.is_24(weight, layout), name
            assert not pattern.is_24(before[name], layout), name
        else:
            np.testing.assert_array_equal(weight, before[name])
    stored = {t.name: numpy_helper.to_array(t) for t in result.model.graph.initializer}
    assert any(v.dtype == np.float16 for v in stored.values())  # the FP16 weight stays FP16
    assert any(v.dtype == np.int8 and v.ndim == 2 for v in stored.values())  # the int8 weight stays int8
    assert result.report["sparsified"] == len(sparse_models.ELIGIBLE)
    # The outputs moved (2:4 is not exact), and the model is input-sensitive: two inputs differ clearly.
    a, b = runtime.run_model(model, _inputs(0)), runtime.run_model(model, _inputs(1))
    name = next(iter(a))
    assert np.abs(a[name] - b[name]).max() > 1e-2 * np.abs(a[name]).max()
    assert not np.allclose(runtime.run_model(result.model, _inputs(0))[name], a[name])
    assert result.report["fidelity"]["data"].startswith("seeded random inputs")


def test_int8_weights_pruned_to_their_zero_point() -> None:
    result = sparsify_model(sparse_models.routes(), SMALL)
    graph = gs.import_onnx(result.model)
    dq = next(n for n in graph.nodes if n.op == "DequantizeLinear")
    q, zero = dq.inputs[0].values, dq.inputs[2].values
    weight = _layer_weights(result.model)["/qdq/Gemm"]
    assert ((weight == 0) == (q == zero[:, None])).all()
    assert (weight == 0).sum() >= weight.size // 2


def test_output_file_holds_one_copy_of_each_weight(tmp_path: Path) -> None:
    source = tmp_path / "in.onnx"
    onnx.save(sparse_models.routes(), source)
    result = sparsify(source, tmp_path / "out.onnx", SMALL)
    size_in, size_out = source.stat().st_size, result.output.stat().st_size
    assert abs(size_out - size_in) <= 0.01 * size_in, (size_in, size_out)
    assert holds_24(onnx.load(result.output)) and not holds_24(onnx.load(source))


def test_nothing_eligible_is_reported_and_nothing_written(tmp_path: Path) -> None:
    source, output = tmp_path / "in.onnx", tmp_path / "out.onnx"
    onnx.save(sparse_models.routes(), source)
    with pytest.raises(NothingToSparsify, match="none of its 7 Conv/Gemm/MatMul layers is eligible") as err:
        sparsify(source, output)  # the default floor, 256 channels
    assert "\n" not in str(err.value) and "too small to speed up" in str(err.value)
    assert not output.exists()
    result = sparsify_model(sparse_models.routes(), SparsifyOptions())  # in memory: a report, not an error
    assert result.report["sparsified"] == 0 and "fidelity" not in result.report


def test_post_check_refuses_a_layer_that_is_not_24() -> None:
    result = sparsify_model(sparse_models.routes(), SMALL)
    broken = onnx.ModelProto()
    broken.CopyFrom(result.model)
    graph = gs.import_onnx(broken)
    conv = next(n for n in graph.nodes if n.name == "/a/Conv")
    conv.inputs[1].values = np.ones(conv.inputs[1].shape, np.float32)
    with pytest.raises(VerificationError, match="'/a/Conv' claimed 2:4 has .* groups of four"):
        post_check(gs.export_onnx(graph), ["/a/Conv"])


@pytest.mark.parametrize(
    "attrs",
    [{"pads": [1, 1, 1, 1]}, {"strides": [2, 2], "pads": [0, 1, 1, 0]}, {"dilations": [2, 2]},
     {"auto_pad": "SAME_UPPER", "strides": [2, 2]}, {"auto_pad": "SAME_LOWER"}],
)  # fmt: skip
def test_im2col_columns_reproduce_the_conv(attrs: dict) -> None:
    """The unfolded inputs times the (r, s, c)-ordered rows are the Conv's output: what the Gram sees."""
    model = sparse_models.conv_only(**attrs)
    x = _inputs(2)["input"]
    want = next(iter(runtime.run_model(model, {"input": x}).values()))
    graph = gs.import_onnx(model)
    conv = graph.nodes[0]
    rows = layout_of(conv, conv.inputs[1].values).to_rows(conv.inputs[1].values)
    got = unfold(conv, x) @ rows.T  # [N*Ho*Wo, K]
    n, k, ho, wo = want.shape
    np.testing.assert_allclose(got.reshape(n, ho, wo, k).transpose(0, 3, 1, 2), want, rtol=1e-4, atol=1e-4)


def test_calibrated_selection_beats_magnitude_on_held_out_data() -> None:
    model = sparse_models.routes()
    samples = sparse_models.correlated_samples(96)
    plain = sparsify_model(model, SMALL)
    calibrated = sparsify_model(model, SparsifyOptions(min_channels=16, calib=samples, batch=16))
    report = calibrated.report
    assert (
        report["method"] == "sparsegpt" and report["fidelity"]["data"] == "held-out calibration samples (24)"
    )
    for row in report["layers"]:
        if row["sparsified"]:
            assert row["output_error"] < row["magnitude_output_error"], row["node"]
    held = {"input": samples["input"][-24:]}
    reference = next(iter(runtime.run_model(model, held).values()))

    def error(m: onnx.ModelProto) -> float:
        return float(np.linalg.norm(next(iter(runtime.run_model(m, held).values())) - reference))

    assert error(calibrated.model) < error(plain.model)
    post_check(calibrated.model, sparse_models.ELIGIBLE)


def test_calibration_data_must_fit_the_model(tmp_path: Path) -> None:
    bad = tmp_path / "bad.npz"
    np.savez(bad, input=np.zeros((8, 3, 8, 8), np.float32))
    with pytest.raises(ModelLoadError, match="input 'input' has shape 8x3x8x8, the model takes"):
        sparsify_model(sparse_models.routes(), SparsifyOptions(min_channels=16, calib=bad))
    with pytest.raises(ModelLoadError, match="lack input 'input'"):
        sparsify_model(
            sparse_models.routes(), SparsifyOptions(min_channels=16, calib={"x": np.zeros((4, 1))})
        )


def test_prune_then_sparsify() -> None:
    import tiny

    model = tiny.chain()
    result = api.prune_model(model, api.PlanOptions(ratio=0.3), api.VerifyOptions(enabled=False),
                             sparsify=SparsifyOptions(min_channels=8))  # fmt: skip
    report = result.report["sparsity"]
    assert report["sparsified"] >= 1
    post_check(result.pruned, [row["node"] for row in report["layers"] if row["sparsified"]])


def test_magnitude_selection_measured_on_calibration_data() -> None:
    samples = sparse_models.correlated_samples(32)
    options = SparsifyOptions(min_channels=16, calib=samples, selection="magnitude", batch=8)
    report = sparsify_model(sparse_models.routes(), options).report
    assert report["method"] == "magnitude"
    assert report["fidelity"]["data"] == "held-out calibration samples (8)"
    rows = [row for row in report["layers"] if row["sparsified"]]
    assert all(row["output_error"] == pytest.approx(row["magnitude_output_error"], rel=1e-5) for row in rows)


@pytest.mark.parametrize(
    ("options", "message"),
    [(SparsifyOptions(selection="sparsegpt"), "needs calibration data"),
     (SparsifyOptions(selection="best"), "--selection must be one of"),
     (SparsifyOptions(holdout=1.0), "held-out fraction"),
     (SparsifyOptions(min_channels=0), "--min-channels")],
)  # fmt: skip
def test_bad_options_are_usage_errors(options: SparsifyOptions, message: str) -> None:
    from onnxprune.errors import UsageError

    with pytest.raises(UsageError, match=message):
        sparsify_model(sparse_models.routes(), options)
