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


def _drawn(monkeypatch, args: list[str]):
    """Runs the command and returns the matplotlib figure it saved (drawn, so text has its extent)."""
    import onnxprune.plots as plots

    saved = []
    real = plots._save
    monkeypatch.setattr(plots, "_save", lambda figure, path: saved.append(figure) or real(figure, path))
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    (figure,) = saved
    figure.canvas.draw()
    return figure


def test_kept_channels_labels_are_readable_and_inside_the_picture(tmp_path, monkeypatch):
    out, picture = tmp_path / "pruned.onnx", tmp_path / "kept.png"
    args = ["prune", str(MNIST), "-o", str(out), "--ratio", "0.5", "--no-verify", "--plot", str(picture)]
    figure = _drawn(monkeypatch, args)
    (axis,) = figure.axes
    labels = axis.get_xticklabels()
    assert labels and all(label.get_fontsize() >= 8 for label in labels)
    assert all(label.get_text().startswith(("/", "…")) or "/" not in label.get_text() for label in labels)
    inside = figure.bbox
    renderer = figure.canvas.get_renderer()
    for text in [*labels, axis.title]:
        box = text.get_window_extent(renderer)
        assert inside.x0 <= box.x0 and box.x1 <= inside.x1 and inside.y0 <= box.y0, text.get_text()
    assert axis.get_title().startswith(f"{MNIST.name} → pruned.onnx\nkept channels")


def test_sweep_plot_names_the_model_and_calls_accuracy_accuracy(tmp_path, monkeypatch):
    labels = MNIST.parent / "mnist5k_test.npz"
    args = ["sweep", str(MNIST), "--targets", "0.7", "--no-bench", "--labels", str(labels),
            "--plot", str(tmp_path / "sweep.png")]  # fmt: skip
    figure = _drawn(monkeypatch, args)
    assert MNIST.name in figure.get_suptitle()
    fidelity = figure.axes[0]
    assert "accuracy on the labels" in fidelity.get_ylabel()
    assert "accuracy (labels)" in [line.get_label().split(": ")[-1] for line in fidelity.get_lines()]
