"""One group whose pruning breaks the rewritten model does not abort the prune: it is found by bisection,
declined with the reason and node, and the rest is pruned (issue 11). And a model with nothing prunable
says so, with the reasons."""

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
from onnxprune.errors import NothingToPruneError
from onnxprune.options import PlanOptions
from onnxprune.pipeline import isolate
from onnxprune.rules.conv import ConvRule

runner = CliRunner()
OPTIONS = PlanOptions(ratio=0.5, round_to=1, min_keep=1, scope="layer")


def deep_chain() -> onnx.ModelProto:
    n = tiny.Net(seed=7, dead=0.0)
    x = "input"
    for c_in, c_out in ((3, 16), (16, 16), (16, 16), (16, 16), (16, 16)):
        x = n.cbr(x, c_in, c_out)
    return n.model([n.head(x, 16)])


def break_conv(monkeypatch: pytest.MonkeyPatch, victims: set[str]) -> list[str]:
    """Makes ConvRule.apply write one output channel too few into the weight of the named Convs whenever
    their output is pruned: the rewritten model then fails in ONNX Runtime (a rule bug, simulated)."""
    original = ConvRule.apply
    seen: list[str] = []

    def broken(self, node, rw):
        # Asked before the real apply: a bias map Add it inserts takes over the Conv's output name.
        pruned_output = rw.kept(node.outputs[0]) is not None
        original(self, node, rw)
        if node.name in victims and pruned_output:
            seen.append(node.name)
            rw.set_param(node, 1, node.inputs[1].values[:-1])

    monkeypatch.setattr(ConvRule, "apply", broken)
    return seen


def test_a_breaking_group_is_declined_and_the_rest_pruned(monkeypatch: pytest.MonkeyPatch) -> None:
    model = deep_chain()
    convs = [n.name for n in model.graph.node if n.op_type == "Conv"]
    break_conv(monkeypatch, {convs[2]})
    result = api.prune_model(model, OPTIONS, api.VerifyOptions())
    declined = [d for d in result.report["declined"] if "breaks the rewritten model" in d["reason"]]
    assert len(declined) == 1 and convs[2] in declined[0]["nodes"], result.report["declined"]
    assert declined[0]["node"] in declined[0]["nodes"], "the node the error names, or the producer"
    pruned_producers = {
        p
        for g in result.report["groups"]
        if g["channels_after"] < g["channels_before"]
        for p in g["producers"]
    }
    assert pruned_producers == set(convs) - {convs[2]}
    assert result.report["verify"]["exact"]["passed"]


def test_without_verification_the_check_runs_beside_the_save_and_a_failure_publishes_nothing(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """--no-verify: the ONNX Runtime check runs in a thread while the file is written. When it fails (here
    simulated, once), the written file is not published and the prune runs again checking each trial."""
    import threading

    from onnxprune import runtime
    from onnxprune.errors import ValidationError

    calls: list[bool] = []
    check = runtime.check_runs

    def failing_in_a_thread(*args, **kwargs):
        calls.append(threading.current_thread() is not threading.main_thread())
        if calls[-1] and calls.count(True) == 1:
            assert out.read_bytes() == b"old", "nothing is published before the check answers"
            raise ValidationError("pruned model does not run in ONNX Runtime: simulated")
        return check(*args, **kwargs)

    monkeypatch.setattr(runtime, "check_runs", failing_in_a_thread)
    from onnxprune.pipeline import rewrite

    monkeypatch.setattr(rewrite, "check_runs", failing_in_a_thread)
    src, out = tmp_path / "m.onnx", tmp_path / "o.onnx"
    onnx.save(deep_chain(), src)
    out.write_bytes(b"old")
    announced: list[api.PruneResult] = []
    result = api.prune(src, out, OPTIONS, verify=api.VerifyOptions(enabled=False), on_pruned=announced.append)
    assert calls == [True, False], "deferred first, then once in the caller's thread"
    assert result.output == out and result.pending is None
    assert len(announced) == 2 and announced[-1] is result, "each result is announced, the saved one last"
    check(onnx.load(src), onnx.load(out))  # what was published is the second run's, and it runs
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx", "o.onnx"]
    plain = api.prune(src, out, OPTIONS, verify=api.VerifyOptions(enabled=False))
    assert calls[-1] is True and len(calls) == 3 and plain.report["groups"] == result.report["groups"]


def test_two_breaking_groups_are_both_found(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    model = deep_chain()
    convs = [n.name for n in model.graph.node if n.op_type == "Conv"]
    break_conv(monkeypatch, {convs[0], convs[3]})
    src, out, report = tmp_path / "m.onnx", tmp_path / "o.onnx", tmp_path / "r.json"
    onnx.save(model, src)
    args = [
        "prune",
        src,
        "-o",
        out,
        "--ratio",
        "0.5",
        "--round-to",
        "1",
        "--min-keep",
        "1",
        "--scope",
        "layer",
    ]
    result = runner.invoke(app, [str(a) for a in [*args, "--report", report]])
    assert result.exit_code == 0, result.output
    data = json.loads(report.read_text())
    broken = [d["nodes"] for d in data["declined"] if "breaks the rewritten model" in d["reason"]]
    assert sorted(c for c in (convs[0], convs[3]) for nodes in broken if c in nodes) == sorted(
        [convs[0], convs[3]]
    )
    assert len([g for g in data["groups"] if g["channels_after"] < g["channels_before"]]) == 3
    tiny.assert_exact(onnx.load(src), onnx.load(src))  # the input is untouched
    assert onnx.load(out).graph.node


def test_bisection_takes_few_trials() -> None:
    """16 planned groups, one culprit: about log2(16) + 2 rewrites, not one per group."""
    from onnxprune.channels import ChannelGroup, Plan

    groups = [ChannelGroup(i, 4, nodes=[f"n{i}"], producers=[f"n{i}"]) for i in range(16)]
    calls: list[set[int]] = []

    def attempt(plan):
        cut = set(plan.cuts(groups))
        calls.append(cut)
        error = api.ValidationError("broken at n11") if 11 in cut else None
        return isolate.Trial(plan, None if error else object(), error)

    trial = isolate.decline_breaking_groups(groups, Plan({g.id: np.arange(2) for g in groups}), attempt)
    assert trial.error is None and len(calls) <= 7
    assert [str(d) for d in trial.plan.declines(groups[11])] == [
        "pruning it breaks the rewritten model: broken at n11 (node 'n11')"
    ]
    assert not groups[11].declines, "the groups never change: the plan carries the decline"
    assert set(trial.plan.cuts(groups)) == set(range(16)) - {11}


# ---- nothing to prune -------------------------------------------------------------------------------------
def no_bn() -> onnx.ModelProto:
    """Conv → Relu only: BN folded by the exporter."""
    n = tiny.Net(seed=3)
    x = n.node("Relu", [n.conv("input", 3, 16, bias=True)])
    x = n.node("Relu", [n.conv(x, 16, 16, bias=True)])
    return n.model([n.head(x, 16)])


def test_gamma_on_a_model_without_bn_says_nothing_to_prune_and_how_to_keep_bn(tmp_path: Path) -> None:
    src, out = tmp_path / "folded.onnx", tmp_path / "o.onnx"
    onnx.save(no_bn(), src)
    result = runner.invoke(app, ["prune", str(src), "-o", str(out), "--ratio", "0.5", "--criterion", "gamma"])
    assert result.exit_code == 1
    line = result.stderr.strip()
    assert len(line.splitlines()) == 1 and line.startswith("error: nothing to prune: ")
    assert "groups, all declined (" in line and "TrainingMode.PRESERVE" in line and "--criterion l1" in line
    assert not out.exists()
    assert runner.invoke(app, ["prune", str(src), "-o", str(out), "--ratio", "0.5"]).exit_code == 0


def test_a_model_whose_groups_all_reach_outputs_says_nothing_to_prune() -> None:
    n = tiny.Net(seed=4)
    model = n.model([n.cbr("input", 3, 8)])
    with pytest.raises(
        NothingToPruneError, match=r"nothing to prune: 2 groups, all declined \(.*1x reaches graph output"
    ):
        api.prune_model(model, PlanOptions(ratio=0.5))


def test_inspect_of_a_model_without_bn_hints_at_the_export(tmp_path: Path) -> None:
    src = tmp_path / "folded.onnx"
    onnx.save(no_bn(), src)
    shown = runner.invoke(app, ["inspect", str(src)])
    assert shown.exit_code == 0 and "TrainingMode.PRESERVE" in shown.stdout
    as_json = json.loads(runner.invoke(app, ["inspect", str(src), "--json"]).stdout)
    assert "TrainingMode.PRESERVE" in as_json["hints"][0]
    with_bn = tmp_path / "bn.onnx"
    onnx.save(tiny.chain(), with_bn)
    assert json.loads(runner.invoke(app, ["inspect", str(with_bn), "--json"]).stdout)["hints"] == []


def tf_blocked() -> onnx.ModelProto:
    """A tf2onnx export without BN whose one Conv group is blocked by a ReduceSum over channels."""
    n = tiny.Net(seed=5)
    x = n.node("Relu", [n.conv("input", 3, 16, bias=True)])
    total = n.node("ReduceSum", [x, n.param(np.array([1], np.int64), "axes")], keepdims=1)
    x = n.node("Sub", [x, n.node("Expand", [total, n.param(np.array([1, 16, 16, 16], np.int64), "shape")])])
    model = n.model([n.head(x, 16)])
    model.producer_name = "tf2onnx"
    return model


def test_blockers_other_than_bn_get_no_bn_hint() -> None:
    with pytest.raises(NothingToPruneError, match="ReduceSum reduces over") as refused:
        api.prune_model(tf_blocked(), PlanOptions(ratio=0.5))
    assert "BatchNormalization" not in str(refused.value) and "torch" not in str(refused.value)


def test_inspect_of_a_tensorflow_export_without_bn_does_not_give_the_pytorch_recipe(tmp_path: Path) -> None:
    src = tmp_path / "tf.onnx"
    onnx.save(tf_blocked(), src)
    hints = json.loads(runner.invoke(app, ["inspect", str(src), "--json"]).stdout)["hints"]
    assert len(hints) == 1 and "tf2onnx folded it" in hints[0] and "torch" not in hints[0]
