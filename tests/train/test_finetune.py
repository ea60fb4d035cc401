"""``finetune()``: the pruned model distilled from its original in memory, within a time budget, with a
held-out share for early stopping; and ``train``'s held-out fidelity and early stopping."""

from __future__ import annotations

import importlib
from pathlib import Path

import numpy as np
import onnx
import pytest
import tiny

from onnxprune import api
from onnxprune.errors import UsageError
from onnxprune.runtime import run_model
from train.test_run import dynamic

torch = pytest.importorskip("torch", reason="the [train] extra (torch) is not installed")

from onnxprune.train import TrainOptions, finetune  # noqa: E402


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> tuple[onnx.ModelProto, onnx.ModelProto, dict]:
    tmp = tmp_path_factory.mktemp("finetune")
    original = dynamic(tiny.residual(seed=3, dead=0.0))
    onnx.save(original, tmp / "m.onnx")
    result = api.prune(tmp / "m.onnx", tmp / "p.onnx", api.PlanOptions(ratio=0.5, round_to=1, min_keep=1))
    x = np.random.default_rng(0).normal(size=(96, 3, 8, 8)).astype(np.float32)
    a, b = run_model(original, {"input": x[:8]}), run_model(original, {"input": x[8:16]})
    out = original.graph.output[0].name
    assert np.abs(a[out] - b[out]).max() > 1e-2 * np.abs(a[out]).max()  # input-sensitive
    return original, result.pruned, {"input": x}


def test_finetune_returns_a_checked_model_and_its_report(models: tuple) -> None:
    original, pruned, samples = models
    options = TrainOptions(progress=False, batch=8, lr=3e-3)
    tuned, report = finetune(original, pruned, samples, minutes=0.2, holdout=0.25, options=options)
    assert [n.name for n in tuned.graph.node] == [n.name for n in pruned.graph.node]
    assert report["held_out"] == 24 and report["kinds"] == [f"{original.graph.output[0].name}: scores"]
    assert report["epochs"] >= 1 and report["planned_epochs"] >= 1
    assert report["step_seconds"] > 0 and report["export_error"] < 1e-4
    before, after = report["before"]["holdout_loss"], report["after"]["holdout_loss"]
    assert after <= before  # the best epoch is kept, the input (epoch 0) included
    # the report's held-out measures are the written model's, on the held-out samples
    held = {"input": samples["input"][72:]}
    name = original.graph.output[0].name
    teacher, student = run_model(original, held)[name], run_model(tuned, held)[name]
    agree = float((teacher.argmax(1) == student.argmax(1)).mean())
    assert agree == pytest.approx(report["after"]["fidelity"][name]["top1_agreement"])


def test_distillation_from_the_original_moves_the_pruned_model_towards_it(models: tuple) -> None:
    original, pruned, samples = models
    options = TrainOptions(progress=False, batch=8, lr=3e-3, epochs=6, patience=6)
    tuned, report = finetune(original, pruned, samples, minutes=5.0, holdout=0.25, options=options)
    before, after = report["before"]["holdout_loss"], report["after"]["holdout_loss"]
    assert report["best_epoch"] > 0 and after < 0.7 * before, (before, after)


def test_finetune_refuses_sparsity_and_bad_budgets(models: tuple) -> None:
    original, pruned, samples = models
    with pytest.raises(UsageError, match="l1_gamma"):
        finetune(original, pruned, samples, 1.0, options=TrainOptions(l1_gamma=0.1))
    with pytest.raises(UsageError, match="--minutes"):
        finetune(original, pruned, samples, 0.0)
    with pytest.raises(UsageError, match="--holdout"):
        finetune(original, pruned, samples, 1.0, holdout=1.0)
    with pytest.raises(UsageError, match="--ctc-weight must be >= 0"):
        finetune(original, pruned, samples, 1.0, options=TrainOptions(ctc_weight=-1.0))


def test_the_best_epoch_is_kept(models: tuple) -> None:
    """A learning rate far too high makes every epoch worse than the input (or NaN): epoch 0 is kept."""
    original, pruned, samples = models
    options = TrainOptions(progress=False, batch=8, lr=1e3, optimizer="sgd", schedule="constant", epochs=3)
    tuned, report = finetune(original, pruned, samples, minutes=5.0, holdout=0.25, options=options)
    assert report["best_epoch"] == 0 and report["epochs"] == 3
    x = {"input": samples["input"][:8]}
    name = pruned.graph.output[0].name
    np.testing.assert_allclose(run_model(tuned, x)[name], run_model(pruned, x)[name], rtol=1e-5, atol=1e-5)


def test_early_stopping_waits_for_the_second_half_of_the_schedule(tmp_path: Path, models: tuple) -> None:
    from onnxprune.train import train

    original, pruned, samples = models
    onnx.save(original, tmp_path / "m.onnx")
    onnx.save(pruned, tmp_path / "p.onnx")
    np.savez(tmp_path / "x.npz", input=samples["input"])
    options = TrainOptions(progress=False, batch=8, lr=1e3, optimizer="sgd", epochs=8, patience=2)
    result = train(tmp_path / "p.onnx", tmp_path / "t.onnx", tmp_path / "x.npz", teacher=tmp_path / "m.onnx",
                   options=options)  # fmt: skip
    # no stop in epochs 1-3; epoch 4 ends at half of the schedule: 4 and 5 are the two without improvement
    assert [h["epoch"] for h in result.history] == list(range(6)) and result.best_epoch == 0
    assert result.stopped == "no held-out improvement for 2 epochs"


def test_finetune_refuses_samples_that_do_not_match_and_a_missing_extra(
    models: tuple, monkeypatch: pytest.MonkeyPatch
) -> None:
    import sys

    from onnxprune.errors import CapabilityError, ModelLoadError

    original, pruned, samples = models
    with pytest.raises(ModelLoadError, match="input"):
        finetune(original, pruned, {"input": np.zeros((8, 5, 8, 8), np.float32)}, 1.0)
    with pytest.raises(ModelLoadError):
        finetune(original, pruned, {"other": samples["input"]}, 1.0)
    monkeypatch.setitem(sys.modules, "torch", None)  # `import torch` now raises ImportError
    with pytest.raises(CapabilityError, match=r"onnxprune\[train\]"):
        finetune(original, pruned, samples, 1.0)


def test_a_budget_runs_until_its_deadline_and_the_rate_follows_the_clock(
    models: tuple, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A fake clock: every step takes 1 s, the budget is 30 s; the rates fall from lr to ~0 with the time."""
    from onnxprune.train import loop

    now = [0.0]
    rates: list[float] = []
    real_set_lr = loop._set_lr

    def tick() -> float:
        now[0] += 0.1
        return now[0]

    def set_lr(optimizer, options, done):  # type: ignore[no-untyped-def]
        now[0] += 1.0
        rates.append(real_set_lr(optimizer, options, done))
        return rates[-1]

    monkeypatch.setattr(loop.time, "perf_counter", tick)
    monkeypatch.setattr(loop, "_set_lr", set_lr)
    original, pruned, samples = models
    options = TrainOptions(progress=False, batch=8, lr=1e-3, holdout=0.0)
    tuned, report = finetune(original, pruned, samples, minutes=0.5, holdout=0.0, options=options)
    assert 20 <= len(rates) <= 30  # the steps that fit 30 s of the fake clock, whatever the plan said
    assert rates[0] == pytest.approx(1e-3, rel=0.05) and rates[-1] < 0.05 * rates[0]
    assert all(a >= b for a, b in zip(rates, rates[1:], strict=False))


def test_prune_finetunes_and_the_verdict_judges_the_tuned_model(models: tuple, tmp_path: Path) -> None:
    """``prune --finetune-minutes``: calibration, then distillation on the fitted share; the verdict and
    the written model are the tuned ones, and the tail the verdict is measured on was never trained on."""
    original, _, samples = models
    onnx.save(original, tmp_path / "m.onnx")
    options = api.PlanOptions(ratio=0.5, round_to=1, min_keep=1, compensate="calib")
    calib = api.CalibRequest(samples=samples)
    result = api.prune(
        tmp_path / "m.onnx", tmp_path / "p.onnx", options, calib=calib, finetune_minutes=0.1,
        verify=api.VerifyOptions(min_fidelity=0.0),
    )  # fmt: skip
    record = result.report["finetune"]
    assert record["epochs"] >= 1 and record["held_out"] > 0
    assert record["after"]["holdout_loss"] <= record["before"]["holdout_loss"]
    written = onnx.load(tmp_path / "p.onnx")
    tail = {"input": samples["input"][-10:]}  # the calibration's held-out share (10%)
    name = original.graph.output[0].name
    got, kept = run_model(written, tail)[name], run_model(result.pruned, tail)[name]
    np.testing.assert_allclose(got, kept, atol=1e-5)
    assert result.report["verdict"]["on"] == "10 held-out calibration samples"
    assert "change_before_finetune" in result.report["verify"]


def test_a_finetune_that_lowers_the_verdict_is_said_and_the_verdict_before_it_kept(
    models: tuple, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Training keeps the epoch its own small held-out share prefers; where the verdict's tail disagrees,
    the prune says so (warning) and the report has the fidelity before fine-tuning beside the one after."""
    tuning = importlib.import_module("onnxprune.train.finetune")  # the package's `finetune` is the function

    def worse(original: onnx.ModelProto, pruned: onnx.ModelProto, *args: object, **kwargs: object) -> tuple:
        damaged = onnx.ModelProto()
        damaged.CopyFrom(pruned)
        for tensor in damaged.graph.initializer:  # the classifier's weights negated: its answers change
            if len(tensor.dims) == 2:
                weight = onnx.numpy_helper.to_array(tensor)
                tensor.CopyFrom(onnx.numpy_helper.from_array(-weight, tensor.name))
        return damaged, {"epochs": 1}

    monkeypatch.setattr(tuning, "finetune", worse)
    original, _, samples = models
    onnx.save(original, tmp_path / "m.onnx")
    options = api.PlanOptions(ratio=0.5, round_to=1, min_keep=1, compensate="calib")
    result = api.prune(
        tmp_path / "m.onnx", tmp_path / "p.onnx", options, calib=api.CalibRequest(samples=samples),
        finetune_minutes=0.1, verify=api.VerifyOptions(min_fidelity=0.0),
    )  # fmt: skip
    verdict = result.report["verdict"]
    assert verdict["before_finetune"] > verdict["fidelity"] + 0.2, verdict
    assert any("fine-tuning lowered the fidelity" in w for w in result.report["warnings"])


def test_finetune_without_calibration_data_is_a_usage_error(models: tuple, tmp_path: Path) -> None:
    original, _, _ = models
    onnx.save(original, tmp_path / "m.onnx")
    with pytest.raises(UsageError, match="--calib"):
        api.prune(tmp_path / "m.onnx", tmp_path / "p.onnx", api.PlanOptions(ratio=0.5), finetune_minutes=1.0)
    assert not (tmp_path / "p.onnx").exists()


def test_an_epoch_cap_inside_a_long_budget_still_decays(
    models: tuple, monkeypatch: pytest.MonkeyPatch
) -> None:
    """--epochs 3 --minutes 5 ends in seconds: the schedule follows the steps then, not the far deadline
    (whose clock share would keep the rate at its start, lr, for the whole run)."""
    from onnxprune.train import loop

    rates: list[float] = []
    real_set_lr = loop._set_lr

    def set_lr(optimizer, options, done):  # type: ignore[no-untyped-def]
        rates.append(real_set_lr(optimizer, options, done))
        return rates[-1]

    monkeypatch.setattr(loop, "_set_lr", set_lr)
    original, pruned, samples = models
    options = TrainOptions(progress=False, batch=8, lr=1e-3, epochs=3, holdout=0.0)
    finetune(original, pruned, samples, minutes=5.0, holdout=0.0, options=options)
    assert rates[0] == pytest.approx(1e-3, rel=0.05) and rates[-1] < 0.1 * rates[0]


def test_finetune_starts_a_calibrated_model_at_a_small_rate(models: tuple) -> None:
    """Adam's default rate for fine-tuning a pruned model is CALIBRATED_LR, not train's 1e-3; a rate given
    is used as given, and SGD keeps train's default."""
    from onnxprune.train.finetune import CALIBRATED_LR

    original, pruned, samples = models
    _, report = finetune(original, pruned, samples, minutes=0.05, holdout=0.25)
    assert report["options"]["lr"] == CALIBRATED_LR == 1e-4
    given = TrainOptions(progress=False, lr=3e-3)
    _, report = finetune(original, pruned, samples, minutes=0.05, holdout=0.25, options=given)
    assert report["options"]["lr"] == 3e-3
    sgd = TrainOptions(progress=False, optimizer="sgd")
    _, report = finetune(original, pruned, samples, minutes=0.05, holdout=0.25, options=sgd)
    assert report["options"]["lr"] == 1e-3  # train's fine-tuning default: the small rate is Adam's


def test_the_kept_epoch_is_within_noise_of_the_best_agreement_any_epoch_reached() -> None:
    """The bar is the best agreement of any epoch, kept or not: epoch 1 (99 of 100 at a higher loss than
    the input's) is not kept, yet it rules out epoch 2 (94, five below) and lets epoch 3 (97) in."""
    from types import SimpleNamespace

    from onnxprune.train.loop import _Trainer

    trainer = object.__new__(_Trainer)
    trainer.options, trainer.holdout = TrainOptions(), SimpleNamespace(count=100)
    trainer.module = torch.nn.Linear(1, 1)
    best, kept = None, []
    for epoch, (agree, loss) in enumerate([(0.95, 0.20), (0.99, 0.30), (0.94, 0.10), (0.97, 0.15)]):
        record = {"epoch": epoch, "holdout_loss": loss, "fidelity": {"out": {"decode_match": agree}}}
        best = trainer._better(record, best)
        assert best is not None
        kept.append((best["epoch"], best["top"]))
    assert kept == [(0, 0.95), (0, 0.99), (0, 0.99), (3, 0.99)]
