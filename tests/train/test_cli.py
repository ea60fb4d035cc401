"""``onnxprune train`` with a time budget and held-out fidelity, through the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import tiny
from typer.testing import CliRunner

from onnxprune import api
from onnxprune.cli import app
from train.test_run import dynamic

pytest.importorskip("torch", reason="the [train] extra (torch) is not installed")
runner = CliRunner()


@pytest.fixture()
def pruned(tmp_path: Path) -> dict[str, Path]:
    onnx.save(dynamic(tiny.residual(seed=3, dead=0.0)), tmp_path / "m.onnx")
    api.prune(tmp_path / "m.onnx", tmp_path / "p.onnx", api.PlanOptions(ratio=0.5, round_to=1, min_keep=1))
    x = np.random.default_rng(0).normal(size=(80, 3, 8, 8)).astype(np.float32)
    np.savez(tmp_path / "x.npz", input=x)
    return {"model": tmp_path / "m.onnx", "pruned": tmp_path / "p.onnx", "data": tmp_path / "x.npz"}


def test_minutes_plan_the_epochs_and_progress_shows_held_out_fidelity(pruned: dict[str, Path]) -> None:
    out = pruned["pruned"].with_name("t.onnx")
    args = ["train", str(pruned["pruned"]), "-o", str(out), "--data", str(pruned["data"]), "--teacher",
            str(pruned["model"]), "--minutes", "0.1", "--batch", "8"]  # fmt: skip
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "time budget 0.1 min:" in result.output and "held-out loss" in result.output
    assert "held out for fidelity: 8 samples" in result.output and out.exists()


def test_json_reports_the_plan_and_the_kinds(pruned: dict[str, Path]) -> None:
    out = pruned["pruned"].with_name("t.onnx")
    args = ["train", str(pruned["pruned"]), "-o", str(out), "--data", str(pruned["data"]), "--teacher",
            str(pruned["model"]), "--epochs", "2", "--batch", "8", "--json"]  # fmt: skip
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    payload = json.loads(result.output)
    assert [e["epoch"] for e in payload["epochs"]] == [0, 1, 2][: len(payload["epochs"])]
    assert payload["kinds"][0].endswith(": scores") and payload["held_out"] == 8
    assert (
        payload["options"]["optimizer"] == "adam"
        and payload["options"]["augment"] == "shift,scale,brightness"
    )
    assert "top1_agreement" in next(iter(payload["epochs"][1]["fidelity"].values()))


def test_resume_with_a_budget_is_a_usage_error(pruned: dict[str, Path]) -> None:
    args = ["train", str(pruned["pruned"]), "-o", str(pruned["pruned"].with_name("t.onnx")), "--data",
            str(pruned["data"]), "--teacher", str(pruned["model"]), "--minutes", "1", "--resume"]  # fmt: skip
    result = runner.invoke(app, args)
    assert result.exit_code == 2 and "--resume" in result.output and "Traceback" not in result.output


def test_prune_finetune_minutes_prints_what_training_did(pruned: dict[str, Path]) -> None:
    out = pruned["model"].with_name("ft.onnx")
    args = ["prune", str(pruned["model"]), "-o", str(out), "--ratio", "0.5", "--round-to", "1", "--calib",
            str(pruned["data"]), "--finetune-minutes", "0.1", "--min-fidelity", "0"]  # fmt: skip
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    # 80 samples: 72 fitted on, of which too few to hold a share out for early stopping
    text = " ".join(result.output.split())  # rich wraps at 80 columns
    assert "fine-tuned:" in text and "the last epoch is kept" in text and out.exists()


def test_prune_finetune_minutes_without_calib_is_one_line(pruned: dict[str, Path]) -> None:
    out = pruned["model"].with_name("ft.onnx")
    args = ["prune", str(pruned["model"]), "-o", str(out), "--ratio", "0.5", "--finetune-minutes", "1"]
    result = runner.invoke(app, args)
    assert result.exit_code == 2 and "--calib" in result.output and "Traceback" not in result.output
    assert not out.exists()


def test_the_summary_says_when_no_epoch_beat_the_calibrated_model() -> None:
    from onnxprune.cli.summary import finetune_line

    measures = {"out": {"frame_agreement": 0.95, "decode_match": 0.92}}
    record = {"epochs": 6, "seconds": 180.0, "held_out": 26, "best_epoch": 0,
              "before": {"fidelity": measures}, "after": {"fidelity": measures}}  # fmt: skip
    assert "the calibrated model is kept" in finetune_line(record)
    assert "best epoch 3" in finetune_line({**record, "best_epoch": 3})
