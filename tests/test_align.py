"""Alignment: every width a Conv/Gemm sees is a multiple of --round-to, Split pieces and Concats included."""

from __future__ import annotations

import numpy as np
import pytest
import tiny
import weights
from typer.testing import CliRunner

import onnxprune.planning.make
from onnxprune import api
from onnxprune.cli import app


def _split_model(seed: int = 0):
    """A C2f-like block: one conv's 32 channels split in two halves, each half read by its own conv."""
    n = tiny.Net(seed, dead=0.0)
    x = n.cbr("input", 3, 32)
    sizes = n.param(np.array([16, 16], np.int64), "split")
    a, b = n.node("Split", [x, sizes], n_out=2, axis=1)
    y = n.node("Concat", [n.cbr(a, 16, 16), n.cbr(b, 16, 16)], axis=1)
    return n.model([n.head(y, 32)])


def _widths(result: api.PruneResult) -> list[int]:
    model = result.pruned
    inits = {t.name: t for t in model.graph.initializer}
    return [int(inits[node.input[1]].dims[1]) for node in model.graph.node if node.op_type == "Conv"]


@pytest.mark.parametrize("ratio", [0.3, 0.5, 0.7])
def test_split_pieces_are_aligned_and_the_surgery_stays_exact(ratio):
    model = _split_model()
    result = api.prune_model(model, api.PlanOptions(ratio=ratio), api.VerifyOptions())
    assert result.report["unaligned"] == []
    assert all(w % 8 == 0 for w in _widths(result)[1:])  # the stem reads the 3 input channels
    assert result.report["verify"]["exact"]["passed"]


def test_without_alignment_the_same_plans_are_misaligned(monkeypatch):
    # The test above can fail: with per-group rounding only, a half of the split keeps an odd count.
    monkeypatch.setattr(onnxprune.planning.make, "align", lambda *args, **kwargs: [])
    found = [api.prune_model(_split_model(s), api.PlanOptions(ratio=0.5), api.VerifyOptions(enabled=False))
             for s in range(4)]  # fmt: skip
    assert any(r.report["unaligned"] for r in found)


@pytest.mark.slow
def test_yolov8n_c2f_halves_are_aligned():
    result = api.prune_model(
        weights.load("yolov8n"), api.PlanOptions(ratio=0.5), api.VerifyOptions(enabled=False)
    )
    assert result.report["unaligned"] == []  # 4 with rounding per group only


@pytest.mark.slow
def test_shufflenet_is_aligned_where_its_halving_shuffles_allow_and_still_pruned():
    # Every shuffle + split halves the groups again (pieces of 29, 14, 7 ... channels): 22 widths were
    # unaligned with rounding per group; the rest are reported, not hidden by keeping everything.
    result = api.prune_model(
        weights.load("shufflenet_v2_x1_0"), api.PlanOptions(ratio=0.5), api.VerifyOptions(enabled=False)
    )
    unaligned = result.report["unaligned"]
    assert 0 < len(unaligned) <= 10 and all(w["width"] % 8 for w in unaligned)
    assert result.report["macs"]["after"] < 0.6 * result.report["macs"]["before"]


def test_impossible_widths_are_explained_and_reported(tmp_path):
    # The graph input's 3 channels concatenated with a prunable conv's: 3 + k is never a multiple of 8.
    n = tiny.Net(0, dead=0.0)
    x = n.node("Concat", ["input", n.cbr("input", 3, 16)], axis=1)
    model = n.model([n.head(n.cbr(x, 19, 16), 16)])
    result = api.prune_model(model, api.PlanOptions(ratio=0.5), api.VerifyOptions(enabled=False))
    assert [w["width"] % 8 for w in result.report["unaligned"]] == [3]
    path = tmp_path / "m.onnx"
    path.write_bytes(model.SerializeToString())
    explained = CliRunner().invoke(app, ["inspect", str(path), "--explain"])
    assert "cannot be a multiple of 8 (3 fixed channels)" in explained.output
    pruned = CliRunner().invoke(app, ["prune", str(path), "-o", str(tmp_path / "p.onnx"), "--ratio", "0.5"])
    assert pruned.exit_code == 0 and "not multiples of 8" in pruned.output


@pytest.mark.slow
def test_auto_on_a_16_block_falls_back_to_8_where_16_cannot_be_had(monkeypatch):
    # ShuffleNet's halves of 58 at block 16: the first pass leaves 22 widths off 16; the second, at the
    # promised 8, leaves only those 8 cannot fix either. Without it: 22 widths reported.
    from onnxprune.measure import layout

    monkeypatch.setattr(layout, "cpu_channel_block", lambda: 16)
    model = weights.load("shufflenet_v2_x1_0")
    checks = api.VerifyOptions(enabled=False)
    auto = api.prune_model(model, api.PlanOptions(ratio=0.5, device="cpu"), checks).report
    eight = api.prune_model(model, api.PlanOptions(ratio=0.5, round_to=8), checks).report
    assert auto["options"]["width_step"] == 16 and auto["options"]["aligned_to"] == 8
    assert 0 < len(auto["unaligned"]) <= len(eight["unaligned"])
    assert all(w["width"] % 8 for w in auto["unaligned"])
