"""The README stays a true manual: short, its links resolve, and its quick start runs as written (on the
bundled slimming-trained MNIST VGG as `model.onnx`, with 16 of its test images as `samples.npz`)."""

from __future__ import annotations

import re
import shlex
import shutil
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from onnxprune.cli import app

ROOT = Path(__file__).parents[1]
README = ROOT / "README.md"
MNIST = ROOT / "models" / "mnist"


def _quick_start() -> list[list[str]]:
    """The `onnxprune ...` lines of the first code block under the quick start heading."""
    text = README.read_text()
    section = text[text.index("## Quick start") :]
    start = section.index("```bash\n") + len("```bash\n")
    block = section[start : section.index("```", start)]
    return [shlex.split(line)[1:] for line in block.splitlines() if line.startswith("onnxprune ")]


def test_the_readme_is_a_manual_of_at_most_400_lines() -> None:
    assert len(README.read_text().splitlines()) <= 400


def test_every_relative_link_of_the_readme_resolves() -> None:
    links = re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", README.read_text())
    local = [link for link in links if not link.startswith(("http://", "https://", "mailto:"))]
    assert local, "the README links to its docs"
    missing = [link for link in local if not (ROOT / link).exists()]
    assert not missing, missing


@pytest.mark.slow
def test_the_quick_start_runs_as_written(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    commands = _quick_start()
    assert [c[0] for c in commands] == ["inspect", "prune", "check", "build"]
    shutil.copy(MNIST / "mnist_vgg.l1.onnx", tmp_path / "model.onnx")
    with np.load(MNIST / "mnist5k_test.npz") as test:
        np.savez(tmp_path / "samples.npz", x=test["x"][:16], y=test["y"][:16])
    with np.load(MNIST / "mnist5k_calib.npz") as calib:
        np.savez(tmp_path / "calib.npz", input=calib["input"][:128])
    monkeypatch.chdir(tmp_path)
    runner = CliRunner()
    for args in commands:
        result = runner.invoke(app, args)
        if args[0] == "build" and result.exit_code == 1 and "onnxprune[rtx]" in result.output:
            assert not Path("half.plan").exists(), "without TensorRT: one line naming the extra, no plan"
            continue
        assert result.exit_code == 0, f"onnxprune {shlex.join(args)}:\n{result.output}"
    assert Path("half.onnx").exists() and Path("half.json").exists()


def _readme_commands() -> list[list[str]]:
    """Every `onnxprune ...` line of the README's bash blocks (comments cut)."""
    lines = []
    for block in re.findall(r"```bash\n(.*?)```", README.read_text(), flags=re.S):
        for line in block.splitlines():
            if line.startswith("onnxprune "):
                lines.append(shlex.split(line.split(" #")[0])[1:])
    return lines


def test_every_option_the_readme_shows_exists() -> None:
    runner = CliRunner()
    helps: dict[str, str] = {}
    commands = _readme_commands()
    assert len(commands) >= 20
    for args in commands:
        name = args[0]
        if name not in helps:
            shown = runner.invoke(app, [name, "--help"], env={"COLUMNS": "200"})
            assert shown.exit_code == 0, f"onnxprune {name}: {shown.output}"
            helps[name] = shown.output
        for option in (a.split("=")[0] for a in args[1:] if a.startswith("-")):
            assert option in helps[name], f"onnxprune {shlex.join(args)}: no {option}"
