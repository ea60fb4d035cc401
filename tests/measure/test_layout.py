"""--round-to auto: ONNX Runtime's CPU channel block, asked of ONNX Runtime, and the widths it leads to."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import onnx
import pytest
import tiny
from onnx import helper, numpy_helper
from typer.testing import CliRunner

from onnxprune import api
from onnxprune.cli import app
from onnxprune.errors import UsageError
from onnxprune.measure import layout


def _optimized(filters: int, nchwc: bool = True) -> onnx.ModelProto:
    """What ONNX Runtime hands back for the probe: its weight padded to ``filters``."""
    weight = numpy_helper.from_array(np.zeros((filters, filters, 3, 3), np.float32), "w")
    node = helper.make_node("Conv", ["x", "w"], ["y"], domain="com.microsoft.nchwc" if nchwc else "")
    graph = helper.make_graph([node], "g", [], [], [weight])
    return helper.make_model(graph)


@pytest.mark.parametrize(("filters", "block"), [(72, 8), (80, 16), (96, 32), (128, 64)])
def test_the_probes_padding_names_the_block(filters: int, block: int) -> None:
    assert layout._block_of(_optimized(filters)) == block


def test_a_conv_left_in_nchw_has_no_block() -> None:
    assert layout._block_of(_optimized(72, nchwc=False)) == 1


def test_onnx_runtime_answers_with_a_block_auto_can_use() -> None:
    # The real question (conftest pins the answer for every other test): whatever this machine is.
    block = layout._ask_onnxruntime()
    assert block in (1, 8, 16, 32, 64)
    assert math.lcm(8, block) % 8 == 0


def test_no_answer_from_onnx_runtime_leaves_auto_at_8(monkeypatch: pytest.MonkeyPatch) -> None:
    import onnxruntime

    def refuse(*args: object, **kwargs: object) -> None:
        raise RuntimeError("this build saves no optimised graphs")

    monkeypatch.setattr(onnxruntime, "InferenceSession", refuse)
    assert layout._ask_onnxruntime() == 1


@pytest.mark.parametrize(("block", "step"), [(1, 8), (8, 8), (16, 16)])
def test_auto_for_cpu_is_8_or_the_larger_cpu_block(
    monkeypatch: pytest.MonkeyPatch, block: int, step: int
) -> None:
    monkeypatch.setattr(layout, "cpu_channel_block", lambda: block)
    options = api.PlanOptions(ratio=0.5, device="cpu")
    assert options.round_to == "auto" and options.width_step == step
    assert options.to_dict()["width_step"] == step
    # For TensorRT (the default) the machine that prunes does not matter: multiples of 8.
    assert (
        api.PlanOptions(ratio=0.5).width_step == 8
        and "TensorRT" in api.PlanOptions(ratio=0.5).to_dict()["width_reason"]
    )
    assert api.PlanOptions(ratio=0.5, round_to=4).width_step == 4
    assert api.PlanOptions(ratio=0.5, round_to="24").width_step == 24


@pytest.mark.parametrize("value", [0, -8, "x", "", 2.5, True, "8.0"])
def test_a_bad_round_to_is_a_usage_error(value: object) -> None:
    with pytest.raises(UsageError, match="--round-to must be a whole number >= 1 or auto"):
        api.PlanOptions(ratio=0.5, round_to=value)  # type: ignore[arg-type]


def test_an_avx512_block_rounds_kept_widths_to_16(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(layout, "cpu_channel_block", lambda: 16)
    n = tiny.Net(0, dead=0.0)
    model = n.model([n.head(n.cbr(n.cbr(n.cbr("input", 3, 64), 64, 48), 48, 64), 64)])
    source, out = tmp_path / "m.onnx", tmp_path / "p.onnx"
    onnx.save(model, source)
    result = CliRunner().invoke(app, ["prune", str(source), "-o", str(out), "--ratio", "0.4", "--no-verify",
                                      "--for", "cpu", "--report", str(tmp_path / "r.json")])  # fmt: skip
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "r.json").read_text())
    kept = [g["channels_after"] for g in report["groups"]]
    assert kept and all(k % 16 == 0 for k in kept)
    assert any(g["channels_after"] < g["channels_before"] for g in report["groups"])
    assert report["options"]["round_to"] == "auto" and report["options"]["width_step"] == 16
    assert "multiples of 16 (auto: ONNX Runtime's CPU convolutions here use blocks of 16" in " ".join(
        result.output.split()
    )


def test_cli_round_to_takes_a_number_or_auto(sample_path: Path, tmp_path: Path) -> None:
    out = tmp_path / "p.onnx"
    runner = CliRunner()
    bad = runner.invoke(app, ["prune", str(sample_path), "-o", str(out), "--ratio", "0.5", "--round-to", "x"])
    assert bad.exit_code == 2 and "--round-to must be a whole number >= 1 or auto" in bad.output
    assert not out.exists()
    good = runner.invoke(app, ["prune", str(sample_path), "-o", str(out), "--ratio", "0.5", "--round-to", "4",
                               "--no-verify", "--json"])  # fmt: skip
    assert good.exit_code == 0, good.output
    assert json.loads(good.output)["options"]["width_step"] == 4


@pytest.fixture()
def sample_path(tmp_path: Path) -> Path:
    path = tmp_path / "residual.onnx"
    onnx.save(tiny.residual(), path)
    return path


def _grouped_model() -> onnx.ModelProto:
    """A grouped Conv of 6 chunks 8 wide (RegNet's shape): only a total multiple of 8 leaves them prunable."""
    n = tiny.Net(0, dead=0.0)
    h = n.cbr(n.cbr(n.cbr("input", 3, 64), 64, 48), 48, 48, group=6)
    return n.model([n.head(n.cbr(h, 48, 64), 64)])


def _grouped_widths(result: api.PruneResult) -> list[int]:
    return [g["channels_after"] for g in result.report["groups"] if g["channels_before"] == 8]


def test_auto_rounds_grouped_chunks_to_8_where_the_block_would_freeze_them(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(layout, "cpu_channel_block", lambda: 16)
    checks = api.VerifyOptions(enabled=False)
    auto = api.prune_model(_grouped_model(), api.PlanOptions(ratio=0.5, device="cpu"), checks)
    sixteen = api.prune_model(_grouped_model(), api.PlanOptions(ratio=0.5, round_to=16), checks)
    # Two ties of 6 chunks: the grouped Conv's input and its output.
    assert len(_grouped_widths(auto)) == 12 and sum(_grouped_widths(auto)[:6]) % 8 == 0
    assert sum(_grouped_widths(auto)) < 96  # pruned, each tie's total 8-aligned
    assert sum(_grouped_widths(sixteen)) == 96  # 16 asked for: 6 chunks of 8 cannot make a multiple of 16
    assert auto.report["options"]["aligned_to"] == 8 and auto.report["unaligned"] == []
    dense = [g for g in auto.report["groups"] if g["channels_before"] == 64 and g["channels_after"] < 64]
    assert dense and all(g["channels_after"] % 16 == 0 for g in dense)  # the block where a group is free
