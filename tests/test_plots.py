"""Plots: PNGs from inspect, prune and sweep; without matplotlib, one line naming the extra."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from onnxprune.cli import app

pytest.importorskip("matplotlib", reason="the [plot] extra is not installed")
MNIST = Path(__file__).parents[1] / "models" / "mnist" / "mnist_vgg.l1.onnx"
PNG = b"\x89PNG\r\n\x1a\n"
runner = CliRunner()


@pytest.mark.parametrize(
    "args",
    [
        ["inspect", str(MNIST)],
        ["inspect", str(MNIST), "--ratio", "0.4"],
        ["inspect", str(MNIST), "--target-macs", "0.5"],
        ["prune", str(MNIST), "-o", "{out}", "--ratio", "0.5", "--no-verify"],
        ["sweep", str(MNIST), "--targets", "0.7,0.4", "--no-bench", "--iterations", "1"],
        ["sweep", str(MNIST), "--targets", "0.7", "--no-bench", "--compensate", "none,bn"],
    ],
)
def test_each_command_draws_a_png(tmp_path, args):
    picture = tmp_path / "picture.png"
    args = [a.replace("{out}", str(tmp_path / "pruned.onnx")) for a in args]
    result = runner.invoke(app, [*args, "--plot", str(picture)])
    assert result.exit_code == 0, result.output
    assert picture.read_bytes()[:8] == PNG and picture.stat().st_size > 5000


def test_without_matplotlib_one_line_names_the_extra(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib raises ImportError
    picture = tmp_path / "g.png"
    result = runner.invoke(app, ["inspect", str(MNIST), "--plot", str(picture)])
    assert result.exit_code == 1
    assert result.output.strip() == "error: plots need matplotlib: pip install 'onnxprune[plot]'"
    assert not picture.exists()


def test_threshold_options_without_plot_are_usage_errors():
    assert runner.invoke(app, ["inspect", str(MNIST), "--ratio", "0.5"]).exit_code == 2
