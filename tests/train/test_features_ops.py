"""``onnxprune train`` beyond the basics: the proximal L1 step, shift augmentation, MSE distillation for
models that are not classifiers, and class folders of images as labelled data.

Tiny models (8x8 inputs, a few channels), 32 samples; needs the ``[train]`` extra (skipped, saying so,
without it), and Pillow (the ``[images]`` extra) for the class-folder tests.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
import tiny
from typer.testing import CliRunner

from onnxprune.cli import app
from onnxprune.errors import ModelLoadError, UsageError
from onnxprune.runtime import run_model
from onnxprune.train import ImageOptions, train
from onnxprune.train.dataset import load_samples
from train.test_run import dynamic, inits, quick

torch = pytest.importorskip("torch", reason="the [train] extra (torch) is not installed")
runner = CliRunner()


@pytest.fixture()
def chain(tmp_path: Path) -> dict[str, Path]:
    model = dynamic(tiny.chain(seed=1, dead=0.0))
    onnx.save(model, tmp_path / "chain.onnx")
    x = np.random.default_rng(0).normal(size=(32, 3, 8, 8)).astype(np.float32)
    np.savez(tmp_path / "x.npz", input=x)
    return {"model": tmp_path / "chain.onnx", "data": tmp_path / "x.npz"}


def gammas(path: Path) -> np.ndarray:
    model, values = onnx.load(path), inits(path)
    return np.concatenate([values[n.input[1]] for n in model.graph.node if n.op_type == "BatchNormalization"])


# ---- the proximal step ---------------------------------------------------------------------------------
def test_proximal_step_zeroes_gammas_exactly_where_the_subgradient_only_shrinks_them(
    chain: dict[str, Path], tmp_path: Path
) -> None:
    runs = {}
    for step in ("proximal", "subgradient"):
        out = tmp_path / f"{step}.onnx"
        options = quick(epochs=3, l1_gamma=1.0, lr=0.1, l1_step=step, schedule="constant")
        train(chain["model"], out, chain["data"], teacher=chain["model"], options=options)
        runs[step] = gammas(out)
    before = np.abs(gammas(chain["model"]))
    assert before.min() > 0.4  # dead=0.0: no gamma starts at zero
    assert (runs["proximal"] == 0).mean() > 0.2
    assert (runs["subgradient"] == 0).sum() == 0  # it oscillates around 0 instead
    assert np.abs(runs["subgradient"]).sum() < 0.8 * before.sum()  # though it does shrink them


# ---- shift augmentation --------------------------------------------------------------------------------
def test_shift_moves_each_image_by_at_most_two_pixels_and_leaves_other_inputs() -> None:
    from onnxprune.train import augment

    x = torch.arange(4 * 2 * 6 * 6, dtype=torch.float32).reshape(4, 2, 6, 6)
    ids = torch.arange(4)
    moved, same = augment.shift([x, ids], np.random.default_rng(3))
    assert same is ids
    moves = np.random.default_rng(3).integers(-2, 3, size=(4, 2))  # the same draws
    assert np.abs(moves).max() <= 2 and np.any(moves != 0)
    for i, (dy, dx) in enumerate(moves):
        for r in range(6):
            for c in range(6):  # replicate padding: the nearest row/column inside the image
                src = (min(max(r - dy, 0), 5), min(max(c - dx, 0), 5))
                assert torch.equal(moved[i, :, r, c], x[i, :, src[0], src[1]])
    again, _ = augment.shift([x, ids], np.random.default_rng(3))
    assert torch.equal(moved, again)  # from the generator alone: a resumed run repeats


def test_augmented_distillation_differs_and_repeats(chain: dict[str, Path], tmp_path: Path) -> None:
    out = {name: tmp_path / f"{name}.onnx" for name in ("plain", "shift", "shift2")}
    for name, path in out.items():
        options = quick(epochs=2, augment="none" if name == "plain" else "shift", temperature=4.0)
        train(chain["model"], path, chain["data"], teacher=chain["model"], options=options)
    plain, shifted, again = (inits(p) for p in out.values())
    assert all(np.array_equal(shifted[k], again[k]) for k in shifted)
    assert any(not np.allclose(shifted[k], plain[k]) for k in shifted)


def test_augment_is_validated(chain: dict[str, Path], tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="--augment"):
        train(chain["model"], tmp_path / "o.onnx", chain["data"], teacher=chain["model"],
              options=quick(augment="flip"))  # fmt: skip


# ---- MSE distillation ----------------------------------------------------------------------------------
def two_outputs(seed: int) -> onnx.ModelProto:
    """A detector-like model: a dense map [N, 4, 8, 8] and logits [N, 10]."""
    n = tiny.Net(seed, dead=0.0)
    x = n.cbr(n.cbr("input", 3, 8), 8, 8)
    return dynamic(n.model([n.conv(x, 8, 4, k=1, bias=True), n.head(x, 8)]))


def test_mse_distillation_pulls_every_output_towards_the_teacher(
    chain: dict[str, Path], tmp_path: Path
) -> None:
    teacher, student = tmp_path / "teacher.onnx", tmp_path / "student.onnx"
    onnx.save(two_outputs(seed=1), teacher)
    onnx.save(two_outputs(seed=2), student)  # same graph, other weights
    out = tmp_path / "o.onnx"
    options = quick(epochs=6, lr=0.01, optimizer="sgd", augment="none", holdout=0.0)
    result = train(student, out, chain["data"], teacher=teacher, options=options)
    x = dict(np.load(chain["data"]))
    want = run_model(onnx.load(teacher), x)

    def errors(path: Path) -> list[float]:
        got = run_model(onnx.load(path), x)
        return [float(np.mean((got[k] - want[k]) ** 2)) for k in want]

    before, after = errors(student), errors(out)
    assert len(before) == 2 and all(a < 0.7 * b for a, b in zip(after, before, strict=True)), (before, after)
    assert result.history[-1]["loss"] < result.history[1]["loss"]
    assert result.kinds == [f"{n}: map" for n in want][:1] + [f"{list(want)[1]}: scores"]


def test_the_loss_sums_each_outputs_term_by_its_kind() -> None:
    from onnxprune.train.kinds import OutputKind
    from onnxprune.train.losses import DistillLoss

    a, b = torch.randn(4, 3, 2, 2), torch.randn(4, 10)
    ta, tb = torch.randn(4, 3, 2, 2), torch.randn(4, 10)
    kinds = [OutputKind("map", "map"), OutputKind("logits", "scores")]
    loss = DistillLoss(kinds, {"map": 2.0}, temperature=4.0)
    kl = torch.nn.functional.kl_div(
        torch.log_softmax(b / 4, 1), torch.log_softmax(tb / 4, 1), log_target=True, reduction="batchmean"
    )
    expected = torch.mean((a - ta) ** 2) / 2.0 + 16 * kl
    assert torch.allclose(loss({"map": a, "logits": b}, {"map": ta, "logits": tb}), expected)


def test_kl_on_a_model_without_logits_is_one_line(chain: dict[str, Path], tmp_path: Path) -> None:
    model = tmp_path / "two.onnx"
    onnx.save(two_outputs(seed=1), model)
    args = ["train", str(model), "-o", str(tmp_path / "o.onnx"), "--data", str(chain["data"]), "--teacher",
            str(model), "--distill", "kl", "--batch", "8"]  # fmt: skip
    result = runner.invoke(app, args)
    assert result.exit_code == 2 and "--distill kl needs class scores" in result.output
    assert "Traceback" not in result.output and not (tmp_path / "o.onnx").exists()


# ---- class folders ---------------------------------------------------------------------------------------
@pytest.fixture()
def classes(tmp_path: Path) -> Path:
    image = pytest.importorskip("PIL.Image", reason="Pillow (the [images] extra) is not installed")
    rng = np.random.default_rng(0)
    root = tmp_path / "classes"
    for k, name in enumerate(("zebra", "cat", "dog")):  # sorted: cat 0, dog 1, zebra 2
        (root / name).mkdir(parents=True)
        for i in range(4 + k):
            pixels = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
            image.fromarray(pixels).save(root / name / f"{i}.png")
    return root


def test_class_folders_give_sorted_labels_and_normalised_pixels(
    chain: dict[str, Path], classes: Path
) -> None:
    model = onnx.load(chain["model"])
    samples, labels = load_samples(classes, model, ImageOptions(mean=(0.5,), std=(0.25,)))
    assert labels is not None and labels.tolist() == [0] * 5 + [1] * 6 + [2] * 4  # cat 5, dog 6, zebra 4
    x = samples["input"]
    assert x.shape == (15, 3, 8, 8) and x.dtype == np.float32
    from PIL import Image

    first = np.asarray(Image.open(classes / "cat" / "0.png"), dtype=np.float64) / 255.0
    assert np.allclose(x[0], ((first - 0.5) / 0.25).transpose(2, 0, 1), atol=1e-6)


def test_cli_trains_on_class_folders_and_names_the_classes(chain: dict[str, Path], classes: Path) -> None:
    out = classes.parent / "o.onnx"
    args = [
        "train",
        str(chain["model"]),
        "-o",
        str(out),
        "--data",
        str(classes),
        "--eval",
        str(classes),
        "--image-mean",
        "0.5",
        "--image-std",
        "0.25",
        "--batch",
        "8",
        "--epochs",
        "2",
        "--json",
    ]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    import json

    payload = json.loads(result.output)
    assert payload["classes"] == ["cat", "dog", "zebra"]
    assert payload["epochs"][-1]["accuracy"] is not None and out.exists()


def test_class_folders_beside_files_are_refused(chain: dict[str, Path], classes: Path) -> None:
    (classes / "stray.png").write_bytes((classes / "cat" / "0.png").read_bytes())
    with pytest.raises(ModelLoadError, match="mixes class folders and files"):
        load_samples(classes, onnx.load(chain["model"]))


def test_image_options_on_an_npz_are_a_usage_error(chain: dict[str, Path]) -> None:
    with pytest.raises(UsageError, match="--image-size"):
        load_samples(chain["data"], onnx.load(chain["model"]), ImageOptions(mean=(0.5,)))


@pytest.mark.parametrize(
    ("option", "value", "expected"),
    [("--image-size", "2x", "bad --image-size '2x'"), ("--image-std", "0", "--image-std must not be 0")],
)
def test_bad_image_options_name_trains_flags(
    chain: dict[str, Path], classes: Path, option: str, value: str, expected: str
) -> None:
    args = ["train", str(chain["model"]), "-o", str(classes.parent / "o.onnx"), "--data", str(classes)]
    result = runner.invoke(app, [*args, option, value])
    assert result.exit_code == 2 and expected in result.output and "--calib" not in result.output
    assert not (classes.parent / "o.onnx").exists()


def test_the_teachers_outputs_come_from_one_session_over_all_batches(monkeypatch: pytest.MonkeyPatch) -> None:
    import onnxprune.train.prepare as prepare
    from onnxprune.runtime import ort_session

    model = dynamic(tiny.chain())
    name = model.graph.input[0].name
    shape = [d.dim_value or 1 for d in model.graph.input[0].type.tensor_type.shape.dim]
    samples = {name: np.random.default_rng(0).normal(size=(600, *shape[1:])).astype(np.float32)}
    made: list[object] = []
    monkeypatch.setattr(prepare, "ort_session", lambda m: made.append(m) or ort_session(m))
    outputs = prepare.teacher_outputs(model, samples)
    assert len(made) == 1  # 600 samples are many batches
    (output,) = [o.name for o in model.graph.output]
    assert outputs[output].shape[0] == 600
    alone = run_model(model, {name: samples[name][:5]})[output]
    np.testing.assert_allclose(outputs[output][:5], alone, rtol=1e-5, atol=1e-6)
