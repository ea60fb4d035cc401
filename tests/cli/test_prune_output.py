"""What `onnxprune prune` prints and writes: a short summary by default, every table with -v, --help in
groups, and nothing written at all when any of its outputs fails."""

from __future__ import annotations

import collections
import json
from pathlib import Path

import onnx
import pytest
import weights
from typer.testing import CliRunner

from onnxprune.cli import app

runner = CliRunner()
FULL = Path("/dev/full")  # every write fails: "No space left on device"


def prune(*args: object):
    return runner.invoke(app, ["prune", *(str(a) for a in args)])


@pytest.mark.slow
def test_the_default_output_is_a_summary_of_at_most_30_lines(tmp_path: Path) -> None:
    source, out = tmp_path / "resnet50.onnx", tmp_path / "pruned.onnx"
    onnx.save(weights.load("resnet50"), source)
    result = prune(source, "-o", out, "--ratio", "0.5", "--bench")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert len(lines) <= 30, result.stdout
    shown = result.stdout
    assert "(--ratio 0.5, global scope" in shown and "params" in shown and "MACs" in shown
    assert "latency" in shown and "compensation (bn):" in shown and "exact: matches" in shown
    assert "producers" not in shown, "the per-group table is -v's"


def test_verbose_prints_every_table(sample: Path, tmp_path: Path) -> None:
    out = tmp_path / "pruned.onnx"
    short = prune(sample, "-o", out, "--ratio", "0.5")
    full = prune(sample, "-o", out, "--ratio", "0.5", "-v")
    assert short.exit_code == full.exit_code == 0, short.output + full.output
    assert "producers" in full.stdout and "channels in pruned groups" in full.stdout
    assert "producers" not in short.stdout and "-v/--verbose" in short.stdout
    for both in ("inputs fed:", "exact: matches", "change from the original"):
        assert both in short.stdout and both in full.stdout


def test_help_groups_the_options() -> None:
    shown = runner.invoke(app, ["prune", "--help"]).stdout
    panels = ["What to remove", "Compensation and calibration", "Verification", "Output and report"]
    assert all(f"─ {panel} " in shown for panel in [*panels, "Timing, TensorRT and 2:4"])
    remove = shown.index("─ What to remove ")
    assert remove < shown.index("--target-macs") < shown.index("─ Compensation and calibration ")


@pytest.mark.skipif(not FULL.exists(), reason="needs /dev/full, where every write fails")
@pytest.mark.parametrize("option", ["--report", "--plot"])
def test_a_failed_report_or_plot_leaves_no_model(sample: Path, tmp_path: Path, option: str) -> None:
    out = tmp_path / "ok.onnx"
    result = prune(sample, "-o", out, "--ratio", "0.5", option, FULL)
    assert result.exit_code == 1, result.output
    assert "No space left on device" in result.output and "Traceback" not in result.output
    assert not out.exists() and [p.name for p in tmp_path.iterdir()] == ["residual.onnx"]


@pytest.mark.skipif(not FULL.exists(), reason="needs /dev/full, where every write fails")
def test_a_failed_sparsify_report_leaves_no_model(tmp_path: Path) -> None:
    import sparse_models

    source, out = tmp_path / "routes.onnx", tmp_path / "ok.onnx"
    onnx.save(sparse_models.routes(), source)
    args = ["sparsify", str(source), "-o", str(out), "--min-channels", "16", "--report", str(FULL)]
    result = runner.invoke(app, args)
    assert result.exit_code == 1 and "No space left on device" in result.output, result.output
    assert not out.exists()


def test_a_plot_format_matplotlib_cannot_write_is_refused_before_the_work(
    sample: Path, tmp_path: Path
) -> None:
    out = tmp_path / "ok.onnx"
    result = prune(sample, "-o", out, "--ratio", "0.5", "--plot", tmp_path / "kept.xyz")
    assert result.exit_code == 2 and "matplotlib writes" in result.output, result.output
    assert "Traceback" not in result.output and not out.exists()


def test_the_report_and_model_are_both_written_and_agree(sample: Path, tmp_path: Path) -> None:
    out, report = tmp_path / "ok.onnx", tmp_path / "report.json"
    result = prune(sample, "-o", out, "--ratio", "0.5", "--report", report, "--bench")
    assert result.exit_code == 0, result.output
    saved = json.loads(report.read_text())
    assert [row["name"] for row in saved["bench"]["models"]] == [sample.name, out.name]
    kept = {g["id"]: g["channels_after"] for g in saved["groups"]}
    assert out.exists() and kept and all(n > 0 for n in kept.values())


@pytest.mark.slow
def test_at_80_columns_numbers_are_never_split(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """CI logs and `| cat` are 80 columns wide: node names fold, numbers stay whole on one line (ResNet-18's
    long node names and the float32 noise of an exact prune: 1.23e-13)."""
    from rich.cells import cell_len

    from onnxprune.cli import shared
    from onnxprune.text import number

    monkeypatch.setattr(shared.console, "width", 80)
    source, report = tmp_path / "resnet18.onnx", tmp_path / "report.json"
    onnx.save(weights.load("resnet18", dead=0.3), source)
    args = ["--threshold", "0", "--round-to", "1", "--min-keep", "1", "--report", report, "-v"]
    result = prune(source, "-o", tmp_path / "pruned.onnx", *args)
    assert result.exit_code == 0, result.output
    assert all(cell_len(line) <= 80 for line in result.stdout.splitlines())
    saved = json.loads(report.read_text())
    layers = sorted(saved["compensation"]["layers"], key=lambda layer: -(layer["rel_mse_after"] or 0.0))
    shown = [number(layer[k]) for layer in layers[:12] for k in ("rel_mse_before", "rel_mse_after")]
    outputs = saved["verify"]["change"]["outputs"]
    shown += [number(o[k]) for o in outputs for k in ("max_abs_err", "max_rel_err")]
    shown += [number(o["cosine"], ".5f") for o in outputs]
    assert len(shown) >= 5 and any("e-" in s for s in shown), "long numbers among them"
    for value, times in collections.Counter(shown).items():
        assert result.stdout.count(value) >= times, f"{value} is split or missing"
