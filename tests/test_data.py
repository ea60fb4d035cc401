"""Calibration data loading: every source format, and one clear error for each kind of bad data."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from onnxprune import data
from onnxprune.errors import ModelLoadError, UsageError


def image_model(channels: int = 1, batch: int | str = "N", hw: int | str = 8) -> onnx.ModelProto:
    x = helper.make_tensor_value_info("input", TensorProto.FLOAT, [batch, channels, hw, hw])
    y = helper.make_tensor_value_info("out", TensorProto.FLOAT, None)
    graph = helper.make_graph([helper.make_node("Relu", ["input"], ["out"])], "g", [x], [y])
    return helper.make_model(graph)


def two_input_model() -> onnx.ModelProto:
    a = helper.make_tensor_value_info("a", TensorProto.FLOAT, ["N", 3])
    b = helper.make_tensor_value_info("b", TensorProto.FLOAT, ["N", 3])
    y = helper.make_tensor_value_info("out", TensorProto.FLOAT, None)
    graph = helper.make_graph([helper.make_node("Add", ["a", "b"], ["out"])], "g", [a, b], [y])
    return helper.make_model(graph)


def test_npz_all_samples(tmp_path):
    x = np.random.default_rng(0).standard_normal((10, 1, 8, 8))
    np.savez(tmp_path / "c.npz", input=x)
    samples = data.load_calibration(tmp_path / "c.npz", image_model())
    assert samples["input"].dtype == np.float32 and samples["input"].shape == (10, 1, 8, 8)
    np.testing.assert_allclose(samples["input"], x, rtol=1e-6)


def test_static_batch_model_still_takes_many_samples(tmp_path):
    np.savez(tmp_path / "c.npz", input=np.ones((5, 1, 8, 8), np.float32))
    assert data.load_calibration(tmp_path / "c.npz", image_model(batch=1))["input"].shape[0] == 5
    assert data.static_batch(image_model(batch=1)) == 1 and data.static_batch(image_model()) is None


def test_polygraphy_json_feeds_are_stacked(tmp_path):
    from polygraphy.json import save_json

    rng = np.random.default_rng(1)
    feeds = [{"a": rng.standard_normal((2, 3)), "b": rng.standard_normal((2, 3))} for _ in range(3)]
    save_json(feeds, str(tmp_path / "c.json"))
    samples = data.load_calibration(tmp_path / "c.json", two_input_model())
    assert samples["a"].shape == (6, 3)
    np.testing.assert_allclose(samples["b"][4:], feeds[2]["b"], rtol=1e-6)


def test_npy_folder_single_samples_and_batches(tmp_path):
    np.save(tmp_path / "0.npy", np.zeros((1, 8, 8), np.float32))
    np.save(tmp_path / "1.npy", np.ones((3, 1, 8, 8), np.float32))
    samples = data.load_calibration(tmp_path, image_model())
    assert samples["input"].shape == (4, 1, 8, 8)
    assert samples["input"][0].sum() == 0 and samples["input"][1:].min() == 1


def test_image_folder_resized_and_normalised(tmp_path):
    image = pytest.importorskip("PIL.Image")
    image.fromarray(np.full((20, 30, 3), 255, np.uint8)).save(tmp_path / "a.png")
    image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(tmp_path / "b.jpg")
    model = image_model(channels=3, hw="S")
    samples = data.load_calibration(tmp_path, model, size=(4, 6), mean=(0.5, 0.5, 0.5), std=[0.25])
    assert samples["input"].shape == (2, 3, 4, 6)
    np.testing.assert_allclose(samples["input"][0], 2.0, atol=1e-6)
    np.testing.assert_allclose(samples["input"][1], -2.0, atol=1e-6)


def test_image_folder_uses_static_size_and_grey(tmp_path):
    image = pytest.importorskip("PIL.Image")
    image.fromarray(np.full((12, 12), 51, np.uint8)).save(tmp_path / "g.png")
    samples = data.load_calibration(tmp_path, image_model(channels=1, hw=8))
    assert samples["input"].shape == (1, 1, 8, 8)
    np.testing.assert_allclose(samples["input"], 0.2, atol=1e-6)


def test_batches_holdout_take():
    samples = {"input": np.arange(10).reshape(10, 1)}
    assert [len(b["input"]) for b in data.batches(samples, 4)] == [4, 4, 2]
    fit, held = data.split_holdout(samples, 0.25)
    assert len(fit["input"]) == 8 and held["input"][:, 0].tolist() == [8, 9]
    assert len(data.take(samples, 3)["input"]) == 3 and len(data.take(samples, None)["input"]) == 10
    with pytest.raises(UsageError):
        list(data.batches(samples, 0))
    with pytest.raises(UsageError):
        data.split_holdout(samples, 1.0)
    with pytest.raises(ModelLoadError, match="at least 2"):
        data.split_holdout({"input": np.zeros((1, 1))}, 0.5)


def test_parse_options():
    assert data.parse_size("224x160") == (224, 160) and data.parse_size("32") == (32, 32)
    assert data.parse_floats("0.485,0.456,0.406", "--calib-mean") == (0.485, 0.456, 0.406)
    for bad in ("", "2x", "0x4", "axb", "1x2x3"):
        with pytest.raises(UsageError, match="--calib-size"):
            data.parse_size(bad)
    with pytest.raises(UsageError, match="--calib-std"):
        data.parse_floats("one", "--calib-std")


def _bad_npz(tmp_path, **arrays):
    np.savez(tmp_path / "bad.npz", **arrays)
    return tmp_path / "bad.npz"


@pytest.mark.parametrize(
    ("arrays", "message"),
    [
        ({"inp": np.zeros((2, 1, 8, 8), np.float32)}, "not an input"),
        ({"input": np.zeros((2, 1, 9, 8), np.float32)}, "shape"),
        ({"input": np.zeros((2, 8, 8), np.float32)}, "shape"),
        ({"input": np.array([[[["a"] * 8] * 8]])}, "the model takes float32"),
        ({"input": np.full((2, 1, 8, 8), np.nan, np.float32)}, "NaN"),
        ({"input": np.zeros((0, 1, 8, 8), np.float32)}, "no samples"),
    ],
)
def test_bad_npz(tmp_path, arrays, message):
    with pytest.raises(ModelLoadError, match=message):
        data.load_calibration(_bad_npz(tmp_path, **arrays), image_model())


def test_bad_sources(tmp_path):
    with pytest.raises(ModelLoadError, match="not found"):
        data.load_calibration(tmp_path / "missing.npz", image_model())
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelLoadError, match="no .npy files and no images"):
        data.load_calibration(tmp_path / "empty", image_model())
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "x.png").write_bytes(b"not a png")
    pytest.importorskip("PIL")
    with pytest.raises(ModelLoadError, match="cannot read image x.png"):
        data.load_calibration(tmp_path / "broken", image_model())
    (tmp_path / "j.json").write_text(json.dumps({"not": "polygraphy"}))
    with pytest.raises(ModelLoadError):
        data.load_calibration(tmp_path / "j.json", image_model())
    with pytest.raises(ModelLoadError, match=".npy folders feed single-input"):
        data.load_calibration(_npy_dir(tmp_path), two_input_model())


def _npy_dir(tmp_path):
    folder = tmp_path / "npys"
    folder.mkdir()
    np.save(folder / "a.npy", np.zeros((2, 3), np.float32))
    return folder


def test_image_options_need_images(tmp_path):
    np.savez(tmp_path / "c.npz", input=np.zeros((2, 1, 8, 8), np.float32))
    with pytest.raises(UsageError, match="folder of images only"):
        data.load_calibration(tmp_path / "c.npz", image_model(), size=(8, 8))


@pytest.mark.parametrize("flags", ["--calib", "--image"])
def test_image_option_errors_name_the_flags_of_the_command_run(tmp_path, flags):
    image = pytest.importorskip("PIL.Image")
    image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / "a.png")
    np.savez(tmp_path / "c.npz", input=np.zeros((2, 1, 8, 8), np.float32))
    bad = [
        (tmp_path, image_model(hw="S"), {}, "give {}-size HxW"),
        (tmp_path, image_model(), {"mean": (0.1, 0.2)}, "{}-mean has 2 values"),
        (tmp_path, image_model(), {"std": (0.0,)}, "{}-std must not be 0"),
        (tmp_path / "c.npz", image_model(), {"size": (8, 8)}, "{0}-size/{0}-mean/{0}-std apply to a folder"),
    ]
    for source, model, options, expected in bad:
        with pytest.raises(UsageError) as err:
            data.load_calibration(source, model, **options, flags=flags)
        assert expected.format(flags) in str(err.value)
        assert str(err.value).count("--") == str(err.value).count(flags)  # no other command's flags
    with pytest.raises(UsageError, match=f"bad {flags}-size"):
        data.parse_size("2x", f"{flags}-size")


def test_image_folder_needs_size_for_dynamic_input(tmp_path):
    image = pytest.importorskip("PIL.Image")
    image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / "a.png")
    with pytest.raises(UsageError, match="--calib-size"):
        data.load_calibration(tmp_path, image_model(hw="S"))
    with pytest.raises(UsageError, match="--calib-mean has 2 values"):
        data.load_calibration(tmp_path, image_model(), mean=(0.1, 0.2))


def test_samples_given_as_arrays_are_checked_and_cast_as_a_files_are() -> None:
    import tiny

    model = tiny.chain()
    name = model.graph.input[0].name
    shape = [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
    cast = data.check_samples({name: np.zeros((5, *shape[1:]))}, model)  # float64, numpy's default
    assert cast[name].dtype == np.float32 and cast[name].shape == (5, *shape[1:])
    with pytest.raises(ModelLoadError, match="has shape"):
        data.check_samples({name: np.zeros((5, 1, 2, 2), np.float32)}, model)
    with pytest.raises(ModelLoadError, match="is not an input of the model"):
        data.check_samples({"nope": np.zeros((5, *shape[1:]), np.float32)}, model)
