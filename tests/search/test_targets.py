"""Targets: --target-macs/params/latency land within 2% (counted on the pruned model), or say why not."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import onnx
import pytest
import weights
from typer.testing import CliRunner

from onnxprune import api
from onnxprune.cli import app
from onnxprune.measure import count
from onnxprune.search import targets
from onnxprune.search.targets import Target, TargetError

MNIST = Path(__file__).parents[2] / "models" / "mnist" / "mnist_vgg.l1.onnx"
runner = CliRunner()


def _prune(model: onnx.ModelProto, target: Target, **kw: object) -> api.PruneResult:
    return api.prune_model(
        model, api.PlanOptions(ratio=0.0, **kw), api.VerifyOptions(enabled=False), target=target
    )


@pytest.mark.slow
@pytest.mark.parametrize(("kind", "value"), [("macs", 0.5), ("params", 0.3), ("macs", 0.8)])
def test_resnet18_lands_within_two_percent_counted_on_the_pruned_model(kind, value):
    model = weights.load("resnet18")
    result = _prune(model, Target(kind, value))
    record = result.report["target"]
    counted = result.report[kind]["after"] / result.report[kind]["before"]
    assert record["asked"] == value and record["reached"] == pytest.approx(counted)
    assert abs(counted / value - 1) <= 0.02


@pytest.mark.parametrize("value", [0.2, 0.5, 0.9])
def test_small_groups_land_by_moving_single_groups(value):
    # Five groups of 32..256 with --round-to 8: one global ratio alone misses 0.5 (0.483).
    result = _prune(onnx.load(MNIST), Target("macs", value))
    assert result.report["target"]["within_tolerance"]
    assert all(g["channels_after"] % 8 == 0 for g in result.report["groups"])


@pytest.mark.slow
def test_layer_scope_searches_one_ratio_for_every_group():
    result = _prune(weights.load("resnet18"), Target("macs", 0.6), scope="layer")
    assert abs(result.report["target"]["reached"] / 0.6 - 1) <= 0.02


def test_latency_search_corrects_the_macs_goal_by_what_it_measures(monkeypatch):
    # A fake clock: latency = 0.2 + 0.8 * MACs fraction (fixed overheads), so MACs 0.5 gives latency 0.6.
    model = weights.load("resnet18")
    from onnxprune import graph as graphs
    from onnxprune.analyse import analyse
    from onnxprune.importance import score_groups
    from onnxprune.measure.estimate import Estimator

    normalised = graphs.normalise(model)
    analysis = analyse(normalised)
    score_groups(analysis.groups)
    estimator = Estimator(normalised, analysis, count(model))
    clock = lambda plan: 0.2 + 0.8 * estimator.fractions(plan)[1]  # noqa: E731
    options = api.PlanOptions(ratio=0.0)
    plan_for_macs = lambda macs: targets.search(analysis, options, "macs", macs, estimator.fractions)  # noqa: E731
    found, _ = targets.search_latency(plan_for_macs, 0.5, clock)
    assert abs(found.latency / 0.5 - 1) <= 0.02
    assert found.macs == pytest.approx(0.375, abs=0.02) and found.steps > 1


def test_unreachable_target_says_what_it_reached_and_writes_nothing(tmp_path):
    out = tmp_path / "out.onnx"
    result = runner.invoke(
        app, ["prune", str(MNIST), "-o", str(out), "--target-macs", "0.5", "--exclude", "*"]
    )
    assert result.exit_code == 1
    assert "cannot reach macs 0.5" in result.output and "at most down to 1" in result.output
    assert not out.exists()
    with pytest.raises(TargetError, match="7 groups declined"):
        _prune(onnx.load(MNIST), Target("macs", 0.5), exclude=["*"])


@pytest.mark.parametrize(
    "args",
    [
        ["--target-macs", "0"],
        ["--target-params", "1.5"],
        ["--target-macs", "0.5", "--ratio", "0.3"],
        ["--target-macs", "0.5", "--target-params", "0.5"],
    ],
)
def test_bad_targets_are_usage_errors(tmp_path, args):
    out = tmp_path / "out.onnx"
    result = runner.invoke(app, ["prune", str(MNIST), "-o", str(out), *args])
    assert result.exit_code == 2, result.output
    assert len(result.output.strip().splitlines()) == 1 and not out.exists()


def test_latency_target_without_a_runtime_is_a_usage_error(monkeypatch, tmp_path):
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda n, *a: None if n == "onnxruntime" else real(n, *a)
    )
    result = runner.invoke(
        app, ["prune", str(MNIST), "-o", str(tmp_path / "o.onnx"), "--target-latency", "0.5"]
    )
    assert result.exit_code == 2 and "needs ONNX Runtime" in result.output


@pytest.mark.slow
def test_cli_target_latency_measures_and_reports(tmp_path):
    out, report = tmp_path / "out.onnx", tmp_path / "r.json"
    result = runner.invoke(
        app,
        [
            "prune",
            str(MNIST),
            "-o",
            str(out),
            "--target-latency",
            "0.6",
            "--report",
            str(report),
            "--no-verify",
        ],
    )
    # Timings on a shared machine: a miss is refused, one line and nothing written; a hit is reported.
    if result.exit_code == 1:
        assert "cannot land within 2% of latency 0.6" in result.output and not out.exists()
        return
    assert result.exit_code == 0, result.output
    record = json.loads(report.read_text())["target"]
    assert record["kind"] == "latency" and record["asked"] == 0.6 and record["within_tolerance"]
    assert 0 < record["latency"] < 1.0 and "target latency 0.6" in result.output


def test_a_missed_latency_target_is_refused_like_any_other() -> None:
    from onnxprune.measure.counter import Counts

    before, after = Counts(100, 1000, {}, {}, []), Counts(60, 640, {}, {}, [])
    with pytest.raises(TargetError, match="cannot land within 2% of latency 0.5: the nearest plan timed 0.7"):
        targets.target_record(
            targets.Reached(0.3, 0.6, 0.64, latency=0.7), Target("latency", 0.5), before, after
        )
    hit = targets.target_record(
        targets.Reached(0.3, 0.6, 0.64, latency=0.505), Target("latency", 0.5), before, after
    )
    assert hit["within_tolerance"] and hit["reached"] == 0.505
