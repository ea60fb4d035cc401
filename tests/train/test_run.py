"""``onnxprune train``: conversion and its check, sparsity training, distillation, checkpoints, write-back.

Torch-free parts (options, data files, the missing-extra message) always run; the rest needs the ``[train]``
extra and is skipped, saying so, without it. Tiny models (8x8 inputs, a few channels), 32 samples.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
import tiny
from onnx import helper
from typer.testing import CliRunner

from onnxprune.cli import app
from onnxprune.errors import CapabilityError, ModelLoadError, UsageError, VerificationError
from onnxprune.runtime import run_model
from onnxprune.train import TrainingInterrupted, TrainOptions, train
from onnxprune.train.dataset import load_labels, load_samples

HAS_TORCH = True
try:
    import torch  # noqa: F401
except ImportError:
    HAS_TORCH = False
needs_torch = pytest.mark.skipif(not HAS_TORCH, reason="the [train] extra (torch) is not installed")
runner = CliRunner()


def dynamic(model: onnx.ModelProto, size: int = 8) -> onnx.ModelProto:
    """The model with a dynamic batch axis and a small image (training feeds batches)."""
    model.graph.input[0].type.tensor_type.shape.dim[0].dim_param = "N"
    for d, n in zip(model.graph.input[0].type.tensor_type.shape.dim[2:], (size, size), strict=True):
        d.dim_value = n
    del model.graph.value_info[:]
    for out in model.graph.output:
        out.type.tensor_type.ClearField("shape")
    return onnx.shape_inference.infer_shapes(model)


@pytest.fixture()
def files(tmp_path: Path) -> dict[str, Path]:
    rng = np.random.default_rng(0)
    model = dynamic(tiny.chain(seed=1, dead=0.0))
    path = tmp_path / "chain.onnx"
    onnx.save(model, path)
    x = rng.normal(size=(32, 3, 8, 8)).astype(np.float32)
    y = rng.integers(0, 10, 32)
    np.savez(tmp_path / "train.npz", x=x, y=y)
    np.savez(tmp_path / "unlabelled.npz", input=x)
    return {"model": path, "data": tmp_path / "train.npz", "unlabelled": tmp_path / "unlabelled.npz"}


def quick(**kw: object) -> TrainOptions:
    return TrainOptions(**{"epochs": 1, "batch": 8, "lr": 0.05, "progress": False, **kw})  # type: ignore[arg-type]


def inits(path: Path) -> dict[str, np.ndarray]:
    return {t.name: onnx.numpy_helper.to_array(t) for t in onnx.load(path).graph.initializer}


# ---- torch-free --------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "bad",
    [
        {"epochs": 0},
        {"batch": 1},
        {"lr": 0.0},
        {"l1_gamma": -1.0},
        {"optimizer": "rmsprop"},
        {"batch_norm": "train"},
        {"schedule": "step"},
    ],
)
def test_bad_options_are_usage_errors(bad: dict, files: dict[str, Path], tmp_path: Path) -> None:
    with pytest.raises(UsageError):
        train(files["model"], tmp_path / "out.onnx", files["data"], options=quick(**bad))
    assert not (tmp_path / "out.onnx").exists()


def test_labels_and_teacher_together_are_refused(files: dict[str, Path], tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="--labels and --teacher"):
        train(
            files["model"], tmp_path / "o.onnx", files["data"], labels=files["data"], teacher=files["model"]
        )


def test_output_may_not_overwrite_the_input(files: dict[str, Path]) -> None:
    with pytest.raises(UsageError, match="overwrite"):
        train(files["model"], files["model"], files["data"], options=quick())


def test_missing_torch_names_the_extra(files: dict[str, Path], tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "torch", None)  # `import torch` now raises ImportError
    with pytest.raises(CapabilityError, match=r"onnxprune\[train\]"):
        train(files["model"], tmp_path / "o.onnx", files["data"], options=quick())
    result = runner.invoke(app, ["train", str(files["model"]), "-o", str(tmp_path / "o.onnx"),
                                 "--data", str(files["data"])])  # fmt: skip
    assert result.exit_code == 1 and "onnxprune[train]" in result.output and "Traceback" not in result.output


def test_samples_and_labels_from_files(files: dict[str, Path], tmp_path: Path) -> None:
    model = onnx.load(files["model"])
    samples, labels = load_samples(files["data"], model)
    assert list(samples) == ["input"] and samples["input"].shape == (32, 3, 8, 8)
    assert labels is not None and labels.shape == (32,)
    assert load_samples(files["unlabelled"], model)[1] is None
    np.save(tmp_path / "few.npy", np.arange(5))
    with pytest.raises(ModelLoadError, match="5 labels for 32 samples"):
        load_labels(tmp_path / "few.npy", 32)
    np.save(tmp_path / "float.npy", np.zeros(32, np.float32))
    with pytest.raises(ModelLoadError, match="integer"):
        load_labels(tmp_path / "float.npy", 32)
    np.savez(tmp_path / "wrong.npz", x=np.zeros((4, 3, 5, 5), np.float32))
    with pytest.raises(ModelLoadError, match="shape"):
        load_samples(tmp_path / "wrong.npz", model)


def test_no_labels_and_no_teacher_is_a_usage_error(files: dict[str, Path], tmp_path: Path) -> None:
    if not HAS_TORCH:
        pytest.skip("the [train] extra (torch) is not installed")
    with pytest.raises(UsageError, match="no labels"):
        train(files["model"], tmp_path / "o.onnx", files["unlabelled"], options=quick())


# ---- with torch --------------------------------------------------------------------------------------
@needs_torch
@pytest.mark.parametrize("name", sorted(tiny.REGISTRY))
def test_conversion_matches_onnx_runtime(name: str) -> None:
    import torch

    from onnxprune.train.check import check_conversion
    from onnxprune.train.torchgraph import OnnxModule

    model = dynamic(tiny.REGISTRY[name](seed=2, dead=0.0), size=16)
    module = OnnxModule(model)
    rng = np.random.default_rng(0)
    feed = {"input": rng.normal(size=(4, 3, 16, 16)).astype(np.float32)}
    other = {"input": rng.normal(size=(4, 3, 16, 16)).astype(np.float32)}
    a, b = run_model(model, feed), run_model(model, other)
    name0 = model.graph.output[0].name
    assert np.abs(a[name0] - b[name0]).max() > 1e-2 * np.abs(a[name0]).max()  # input-sensitive data
    assert check_conversion(module, model, feed, torch.device("cpu")) < 1e-5


@needs_torch
def test_the_noise_floor_is_the_modules_own_float32_error_and_a_whole_drift_is_still_refused(
    monkeypatch,
) -> None:
    """``float32_noise``: max|float32 - float64| of the module, small and nonzero, the module left float32.
    It widens the whole-graph bound to the computation's own rounding, not to a drift: a module whose
    whole output is 1% off (every op right alone, the float64 copy as wrong) is still refused."""
    import torch

    from onnxprune.train.check import check_conversion, float32_noise
    from onnxprune.train.torchgraph import OnnxModule

    model = dynamic(tiny.residual(seed=2, dead=0.0), size=16)
    module, device = OnnxModule(model).eval(), torch.device("cpu")
    feed = {"input": np.random.default_rng(0).normal(size=(4, 3, 16, 16)).astype(np.float32)}
    with torch.no_grad():
        outputs = {k: v.numpy() for k, v in module.run({"input": torch.from_numpy(feed["input"])}).items()}
    noise = float32_noise(module, feed, outputs, device)
    (name,) = outputs
    scale = float(np.abs(outputs[name]).max())
    assert 0 < noise[name] < 1e-5 * scale and next(module.parameters()).dtype == torch.float32
    run = OnnxModule.run
    monkeypatch.setattr(OnnxModule, "run", lambda self, feed, keep_all=False, keep=(): {
        k: v * 1.01 for k, v in run(self, feed, keep_all, keep).items()})  # fmt: skip
    with pytest.raises(VerificationError, match="differs from ONNX Runtime on output"):
        check_conversion(module, model, feed, device)


@needs_torch
def test_a_wrong_conversion_is_refused_naming_the_op(
    files: dict[str, Path], tmp_path: Path, monkeypatch
) -> None:
    from onnxprune.train import ops

    monkeypatch.setitem(ops.OPS, "LeakyRelu", lambda node, xs: xs[0] * 1.001)
    with pytest.raises(VerificationError, match="LeakyRelu node"):
        train(files["model"], tmp_path / "o.onnx", files["data"], options=quick())
    assert not (tmp_path / "o.onnx").exists()


@needs_torch
def test_an_unsupported_op_is_refused_naming_it(tmp_path: Path) -> None:
    from onnxprune.train.ops import UnsupportedOpError

    model = dynamic(tiny.chain(seed=1, dead=0.0))
    last = model.graph.output[0].name
    model.graph.node.append(helper.make_node("LRN", [last], ["hard"], name="/head/LRN", size=3))
    model.graph.output[0].name = "hard"
    onnx.save(model, tmp_path / "m.onnx")
    np.savez(tmp_path / "d.npz", x=np.ones((4, 3, 8, 8), np.float32), y=np.zeros(4, np.int64))
    with pytest.raises(UnsupportedOpError, match="LRN.*'/head/LRN'"):
        train(tmp_path / "m.onnx", tmp_path / "o.onnx", tmp_path / "d.npz", options=quick())


@needs_torch
def test_sparsity_training_keeps_the_graph_and_shrinks_gammas(files: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "slim.onnx"
    result = train(
        files["model"],
        out,
        files["data"],
        options=quick(epochs=3, l1_gamma=0.05, lr=0.1, schedule="constant", l1_step="subgradient"),
    )
    before, after = onnx.load(files["model"]), onnx.load(out)
    assert [(n.name, n.op_type) for n in after.graph.node] == [(n.name, n.op_type) for n in before.graph.node]
    assert [i.name for i in after.graph.input] == [i.name for i in before.graph.input]
    assert [o.name for o in after.graph.output] == [o.name for o in before.graph.output]
    assert result.batch_norms == 3 and result.export_error < 1e-5
    bn_gammas = [n.input[1] for n in before.graph.node if n.op_type == "BatchNormalization"]
    old, new = inits(files["model"]), inits(out)
    assert sum(np.abs(new[g]).sum() for g in bn_gammas) < 0.8 * sum(np.abs(old[g]).sum() for g in bn_gammas)
    means = [n.input[3] for n in before.graph.node if n.op_type == "BatchNormalization"]
    assert all(not np.array_equal(old[m], new[m]) for m in means)  # running statistics were updated
    assert [h["epoch"] for h in result.history] == [0, 1, 2, 3]  # 0: before training
    assert result.history[-1]["gamma_small"] >= result.history[0]["gamma_small"]


def _with_bn_statistics_of(path: Path, data: Path, out: Path, variance_scale: float) -> Path:
    """The model with every BN's running statistics measured on ``data`` (variance times the scale), BN
    by BN in graph order (each one's statistics change what reaches the next)."""
    model = onnx.load(path)
    bns = [n for n in model.graph.node if n.op_type == "BatchNormalization"]
    arrays = {t.name: t for t in model.graph.initializer}
    feed = {model.graph.input[0].name: dict(np.load(data))["x"]}
    for n in bns:
        probe = onnx.helper.make_model(model.graph, opset_imports=model.opset_import)
        probe.graph.output.append(onnx.helper.make_tensor_value_info(n.input[0], 1, None))
        a = run_model(probe, feed)[n.input[0]].astype(np.float64)
        axes = (0, *range(2, a.ndim))
        arrays[n.input[3]].CopyFrom(onnx.numpy_helper.from_array(a.mean(axes).astype(np.float32), n.input[3]))
        var = (a.var(axes) * variance_scale).astype(np.float32)
        arrays[n.input[4]].CopyFrom(onnx.numpy_helper.from_array(var, n.input[4]))
    onnx.save(model, out)
    return out


@needs_torch
@pytest.mark.parametrize(("mode", "variance_scale", "want"), [
    ("auto", 1.0, "frozen"), ("auto", 10.0, "update"), ("frozen", 10.0, "frozen"), ("update", 1.0, "update"),
])  # fmt: skip
def test_fine_tuning_keeps_bn_statistics_that_still_describe_the_data(
    mode: str, variance_scale: float, want: str, files: dict[str, Path], tmp_path: Path
) -> None:
    """Statistics that match the data stay (a few samples must not re-estimate what the original learnt
    on its whole training set); statistics a prune moved (variances off 10x) are updated; scale and bias
    train either way."""
    source = _with_bn_statistics_of(files["model"], files["data"], tmp_path / "m.onnx", variance_scale)
    out = tmp_path / "t.onnx"
    result = train(source, out, files["data"], options=quick(epochs=2, batch_norm=mode))
    assert result.options["batch_norm"] == want
    assert (result.bn_drift is not None) == (mode == "auto")
    if mode == "auto":
        assert (result.bn_drift < 0.1) if variance_scale == 1.0 else (result.bn_drift > 1.0)
    before = onnx.load(source)
    old, new = inits(source), inits(out)
    bns = [n for n in before.graph.node if n.op_type == "BatchNormalization"]
    changed = [not np.array_equal(old[name], new[name]) for n in bns for name in n.input[3:5]]
    assert all(changed) if want == "update" else not any(changed)
    assert any(not np.array_equal(old[n.input[1]], new[n.input[1]]) for n in bns)  # gammas trained


@needs_torch
@pytest.mark.slow
def test_distillation_brings_a_pruned_model_back_towards_its_teacher(
    files: dict[str, Path], tmp_path: Path
) -> None:
    from onnxprune import api

    pruned = tmp_path / "p.onnx"
    api.prune(files["model"], pruned, api.PlanOptions(ratio=0.5, round_to=1, min_keep=1))
    out = tmp_path / "d.onnx"
    result = train(
        pruned,
        out,
        files["unlabelled"],
        teacher=files["model"],
        options=quick(
            epochs=4, lr=0.02, schedule="constant", optimizer="sgd", temperature=1.0, augment="none"
        ),
    )
    x = dict(np.load(files["unlabelled"]))
    teacher = run_model(onnx.load(files["model"]), x)
    name = next(iter(teacher))

    def kl(path: Path) -> float:
        t, s = teacher[name], run_model(onnx.load(path), x)[name]
        p = np.exp(t - t.max(1, keepdims=True))
        p /= p.sum(1, keepdims=True)
        log_q = (
            s - s.max(1, keepdims=True) - np.log(np.exp(s - s.max(1, keepdims=True)).sum(1, keepdims=True))
        )
        return float((p * (np.log(p) - log_q)).sum(1).mean())

    assert kl(out) < 0.8 * kl(pruned)  # measured: 0.0143 -> 0.0085
    assert result.history[-1]["loss"] < result.history[1]["loss"]


@needs_torch
def test_same_seed_same_model(files: dict[str, Path], tmp_path: Path) -> None:
    a, b = tmp_path / "a.onnx", tmp_path / "b.onnx"
    train(files["model"], a, files["data"], options=quick())
    train(files["model"], b, files["data"], options=quick())
    first, second = inits(a), inits(b)
    assert all(np.array_equal(first[k], second[k]) for k in first)
    assert any(not np.array_equal(first[k], v) for k, v in inits(files["model"]).items())


@needs_torch
@pytest.mark.slow
def test_ctrl_c_keeps_the_checkpoint_and_resume_continues_exactly(
    files: dict[str, Path], tmp_path: Path, monkeypatch
) -> None:
    from onnxprune.train import loop

    real = loop.save_checkpoint

    def save_then_interrupt(path, module, optimizer, epoch, history, best):  # type: ignore[no-untyped-def]
        real(path, module, optimizer, epoch, history, best)
        if epoch == 1:
            raise KeyboardInterrupt

    monkeypatch.setattr(loop, "save_checkpoint", save_then_interrupt)
    out = tmp_path / "o.onnx"
    with pytest.raises(TrainingInterrupted, match="--resume"):
        train(files["model"], out, files["data"], options=quick(epochs=2))
    assert not out.exists() and (tmp_path / "o.onnx.ckpt").is_file()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temporary left
    monkeypatch.setattr(loop, "save_checkpoint", real)
    resumed = train(files["model"], out, files["data"], options=quick(epochs=2, resume=True))
    assert [h["epoch"] for h in resumed.history] == [0, 1, 2] and out.exists()
    straight = tmp_path / "straight.onnx"
    train(files["model"], straight, files["data"], options=quick(epochs=2))
    want, got = inits(straight), inits(out)
    assert all(np.array_equal(want[k], got[k]) for k in want)


@needs_torch
def test_resume_refuses_another_models_checkpoint(files: dict[str, Path], tmp_path: Path) -> None:
    kept = tmp_path / "kept.ckpt"  # one named by the user stays after the run
    train(files["model"], tmp_path / "o.onnx", files["data"], options=quick(checkpoint=kept))
    other = tmp_path / "other.onnx"
    onnx.save(dynamic(tiny.concat(seed=1, dead=0.0)), other)
    opts = quick(resume=True, checkpoint=kept)
    with pytest.raises(UsageError, match="another model"):
        train(other, tmp_path / "p.onnx", files["unlabelled"], teacher=other, options=opts)


@needs_torch
def test_trained_model_replays_an_earlier_prune_report(files: dict[str, Path], tmp_path: Path) -> None:
    from onnxprune import api
    from onnxprune.planning import load_plan

    pruned = api.prune(
        files["model"], tmp_path / "p.onnx", api.PlanOptions(ratio=0.5, round_to=1, min_keep=1)
    )
    (tmp_path / "r.json").write_text(__import__("json").dumps(pruned.report))
    train(files["model"], tmp_path / "t.onnx", files["data"], options=quick())
    plan = load_plan(tmp_path / "r.json")
    replayed = api.prune(tmp_path / "t.onnx", tmp_path / "tp.onnx", api.PlanOptions(replay=plan))
    assert replayed.report["macs"]["after"] == pruned.report["macs"]["after"]
    assert [g["kept"] for g in replayed.report["groups"]] == [g["kept"] for g in pruned.report["groups"]]


@needs_torch
def test_cli_trains_with_eval_and_prints_the_table(files: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "o.onnx"
    result = runner.invoke(app, ["train", str(files["model"]), "-o", str(out), "--data", str(files["data"]),
                                 "--eval", str(files["data"]), "--batch", "8", "--epochs", "1"])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "eval accuracy" in result.output and "BatchNormalization kept" in result.output and out.exists()
    assert "mean loss" in result.output, "the epoch's mean, not the last batch's loss"
    assert not (tmp_path / "o.onnx.ckpt").exists(), "the default checkpoint goes once the run succeeded"
    bad = runner.invoke(app, ["train", str(files["model"]), "-o", str(out), "--data", str(files["data"]),
                              "--epochs", "0"])  # fmt: skip
    assert bad.exit_code == 2 and "--epochs" in bad.output


@needs_torch
@pytest.mark.parametrize(("teacher_scale", "want"), [(10.0, "frozen"), (1.0, "update")])
def test_with_a_teacher_only_the_drift_beyond_the_teachers_updates_bn_statistics(
    teacher_scale: float, want: str, files: dict[str, Path], tmp_path: Path
) -> None:
    """Statistics learnt on other data are off in the original too (the PP-OCRv5 detector on rendered
    pages: drift 2.49 unpruned and pruned); updating them moves the student away from its teacher. The
    student's statistics are off 10x in both cases; only a teacher whose own are not makes that a drift."""
    student = _with_bn_statistics_of(files["model"], files["data"], tmp_path / "s.onnx", 10.0)
    teacher = _with_bn_statistics_of(files["model"], files["data"], tmp_path / "t.onnx", teacher_scale)
    out = tmp_path / "out.onnx"
    result = train(student, out, files["unlabelled"], teacher=teacher, options=quick(epochs=1, holdout=0.25))
    assert result.options["batch_norm"] == want
    assert result.bn_drift is not None
    assert (abs(result.bn_drift) < 0.05) if want == "frozen" else (result.bn_drift > 1.0)


def test_micro_batches_split_a_batch_into_parts_that_fit_never_below_two_samples() -> None:
    from onnxprune.train.loop import MICRO_BATCH_VALUES, micro_batches

    def sizes(count: int, per_sample: int) -> list[int]:
        parts = micro_batches(count, per_sample)
        assert np.array_equal(np.concatenate(parts), np.arange(count))
        return [len(p) for p in parts]

    assert sizes(16, 3 * 48 * 320) == [16]  # a batch of text lines: one pass
    det = sizes(16, 3 * 640 * 640)  # three 640x640 images fit
    assert max(det) * 3 * 640 * 640 <= MICRO_BATCH_VALUES and min(det) >= 2 and len(det) == 6
    assert sizes(3, MICRO_BATCH_VALUES) == [3]  # one sample fits: still two or more per pass
    assert sizes(4, MICRO_BATCH_VALUES) == [2, 2]


@needs_torch
@pytest.mark.parametrize("labels", [False, True])
def test_micro_batches_give_the_whole_batchs_step(
    labels: bool, files: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Gradients accumulated over micro-batches, each weighted by its share, are the batch's: the same
    weights after an epoch (BN frozen: its statistics do not depend on the batch)."""
    from onnxprune.train import loop

    # SGD: a step proportional to the gradient (Adam would hide a wrongly scaled one).
    options = quick(epochs=1, batch_norm="frozen", augment="none", holdout=0.0, optimizer="sgd")
    # Distilled: a student whose BN statistics are off, so that it has something to learn.
    student = _with_bn_statistics_of(files["model"], files["data"], tmp_path / "s.onnx", 3.0)
    extra = {"labels": files["data"]} if labels else {"teacher": files["model"]}
    source, data = (files["model"], files["data"]) if labels else (student, files["unlabelled"])
    whole, split = tmp_path / "whole.onnx", tmp_path / "split.onnx"
    train(source, whole, data, options=options, **extra)  # type: ignore[arg-type]
    monkeypatch.setattr(loop, "MICRO_BATCH_VALUES", 2 * 3 * 8 * 8)  # two samples per pass
    train(source, split, data, options=options, **extra)  # type: ignore[arg-type]
    a, b = inits(whole), inits(split)
    changed = [name for name in a if not np.array_equal(a[name], inits(source)[name])]
    assert changed, "training moved no weight: the comparison would say nothing"
    for name in a:
        np.testing.assert_allclose(a[name], b[name], rtol=1e-4, atol=1e-6, err_msg=name)
