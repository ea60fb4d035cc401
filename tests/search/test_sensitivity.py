"""Sensitivity, allocation and the budget: measured curves, a knapsack that meets the target, and the
data-free rule when no data is given."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import onnx
import pytest

from onnxprune import api
from onnxprune.compensate.rebuild import channel_moments
from onnxprune.data import load_calibration
from onnxprune.errors import EvalCommandError, UsageError
from onnxprune.options import Allocate, PlanOptions
from onnxprune.pipeline import prepare
from onnxprune.search.allocate import allocate
from onnxprune.search.budget import Budget, SearchData, evaluation, measure, resolve_allocation
from onnxprune.search.evaluate import PlanEvaluator
from onnxprune.search.score import EvalCommand
from onnxprune.search.sensitivity import SensitivityOptions, plan_for, units, widths
from onnxprune.search.targets import Target

MNIST = Path(__file__).parents[2] / "models" / "mnist"
PLAIN, SLIM, CALIB = MNIST / "mnist_vgg.plain.onnx", MNIST / "mnist_vgg.l1.onnx", MNIST / "mnist5k_calib.npz"
FEW = SensitivityOptions(samples=16)


@pytest.fixture(scope="module")
def plain() -> tuple:
    model = onnx.load(PLAIN)
    samples = {k: v[:96] for k, v in load_calibration(CALIB, model).items()}
    options = PlanOptions(ratio=0.0, compensate="calib")
    prepared = prepare(model, options)
    data = SearchData(samples, 0.1, sensitivity=FEW)
    found, evaluate = measure(prepared, options, data)
    return prepared, options, data, found, evaluate


def test_every_unit_is_measured_at_its_aligned_widths(plain) -> None:
    prepared, options, _, found, _ = plain
    assert [c.unit for c in found.curves] == units(prepared, options)
    for curve in found.curves:
        expected = widths(curve.unit, options, FEW.fractions)
        assert sorted(curve.points) == sorted([*expected, curve.unit.size])
        assert all(k % 8 == 0 or k == curve.unit.size for k in curve.points)
        assert curve.points[curve.unit.size] == 0.0
        assert all(d > 0 for k, d in curve.points.items() if k < curve.unit.size)
    assert found.evaluations == sum(len(c.points) - 1 for c in found.curves)


def test_allocation_meets_the_target_and_cuts_the_least_sensitive_first(plain) -> None:
    prepared, options, _, found, evaluate = plain
    reached, plan, record = allocate(prepared, found, options, "macs", 0.5)
    assert abs(reached.macs / 0.5 - 1) <= 0.02
    damage, _ = evaluate(plan)
    # Against one ratio for every group at the same MACs: the measured allocation does no worse.
    layer = api.PlanOptions(ratio=0.0, scope="layer", compensate="calib")
    from onnxprune.search.targets import plan_to_target

    _, uniform = plan_to_target(prepared, layer, Target("macs", reached.macs))
    assert damage <= evaluate(uniform)[0] * 1.05, (damage, evaluate(uniform)[0])
    assert record["kept_whole"] == [u["label"] for u in record["units"] if u["kept"] == u["channels"]]


def test_an_unreachable_allocation_says_how_far_it_gets(plain) -> None:
    from onnxprune.search.targets import TargetError

    prepared, options, _, found, _ = plain
    with pytest.raises(TargetError, match="cannot reach macs 0.01"):
        allocate(prepared, found, options, "macs", 0.01)


def _with_a_copied_channel() -> onnx.ModelProto:
    """x -> Conv (4 channels; channel 1 is twice channel 0) -> Conv -> y: channel 1 is exactly a linear
    function of channel 0."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    a = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
    a[1] = 2.0 * a[0]
    b = rng.standard_normal((6, 4, 1, 1)).astype(np.float32)
    nodes = [
        helper.make_node("Conv", ["x", "a"], ["h"], name="/a/Conv", pads=[1, 1, 1, 1]),
        helper.make_node("Conv", ["h", "b"], ["y"], name="/b/Conv"),
    ]
    graph = helper.make_graph(
        nodes, "copied",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 6, 8, 8])],
        [numpy_helper.from_array(a, "a"), numpy_helper.from_array(b, "b")],
    )  # fmt: skip
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_linear_rebuild_recovers_a_copied_channel_that_its_mean_cannot() -> None:
    """What calibration's rebuild recovers and the search foresees: a channel that is a linear function
    of the kept ones carries nothing new. Rebuilt from them its removal changes nothing; replaced by its
    mean the outputs move."""
    from onnxprune.channels import Plan

    model = _with_a_copied_channel()
    options = PlanOptions(ratio=0.0, compensate="calib", round_to=1, min_keep=1)
    prepared = prepare(model, options)
    samples = {"x": np.random.default_rng(1).standard_normal((16, 3, 8, 8)).astype(np.float32)}
    (group,) = [g for g in prepared.groups if g.prunable]
    plan = Plan({group.id: np.array([0, 2, 3])})
    moments = channel_moments(model, prepared.graph, prepared.analysis, samples)
    means = channel_moments(model, prepared.graph, prepared.analysis, samples, covariance=False)
    rebuilt = PlanEvaluator(prepared, samples, moments)
    mean_only = PlanEvaluator(prepared, samples, means)
    assert mean_only.damage(plan) > 0.05
    assert rebuilt.damage(plan) < 1e-4 * mean_only.damage(plan)


def test_without_data_auto_allocates_by_layer_unless_trained_for_slimming() -> None:
    none = SearchData()
    plain_prepared = prepare(onnx.load(PLAIN), PlanOptions(ratio=0.0, compensate="bn"))
    slim_prepared = prepare(onnx.load(SLIM), PlanOptions(ratio=0.0, compensate="bn"))
    assert resolve_allocation(plain_prepared, plain_prepared.options, none)[0] == Allocate.LAYER
    assert resolve_allocation(slim_prepared, slim_prepared.options, none)[0] == Allocate.GLOBAL
    with_data = SearchData({"x": np.zeros((4, 1, 28, 28), np.float32)})
    assert resolve_allocation(plain_prepared, plain_prepared.options, with_data)[0] == Allocate.SENSITIVITY
    asked = PlanOptions(ratio=0.0, compensate="bn", allocate="sensitivity")
    with pytest.raises(UsageError, match="--allocate sensitivity measures on data"):
        resolve_allocation(plain_prepared, asked, none)


def test_a_budget_measures_once_for_every_target(plain, monkeypatch) -> None:
    prepared, _, data, _, _ = plain
    import onnxprune.search.budget as budget

    calls = []
    real = budget.measure
    monkeypatch.setattr(budget, "measure", lambda *a, **k: calls.append(1) or real(*a, **k))
    planner = Budget(prepared, data)
    for value in (0.8, 0.6):
        reached, _, record = planner.plan(Target("macs", value))
        assert abs(reached.macs / value - 1) <= 0.02 and record["method"] == "sensitivity"
    assert len(calls) == 1


def _command(tmp_path: Path, body: str) -> str:
    script = tmp_path / "score.py"
    script.write_text(body)
    return f"{sys.executable} {script} {{model}}"


def test_eval_cmd_scores_plans_and_its_failures_are_one_line(tmp_path: Path) -> None:
    # The score: how close the model's outputs stay to the original's on fixed inputs (higher is better).
    body = (
        "import sys, numpy as np, onnxruntime as ort\n"
        f"x = np.random.default_rng(0).standard_normal((8, 1, 28, 28)).astype(np.float32)\n"
        f"ref = ort.InferenceSession({str(PLAIN)!r}).run(None, {{'input': x}})[0]\n"
        "out = ort.InferenceSession(sys.argv[1]).run(None, {'input': x})[0]\n"
        "print('scoring...')\nprint(-float(np.abs(out - ref).mean()))\n"
    )
    command = _command(tmp_path, body)
    model = onnx.load(PLAIN)
    options = PlanOptions(ratio=0.0, compensate="bn")
    prepared = prepare(model, options)
    evaluate, on = evaluation(prepared, SearchData(eval_cmd=EvalCommand(command)))
    assert "--eval-cmd" in on
    group = units(prepared, options)[1]
    damage, score = evaluate(plan_for(prepared, options, group.counts(8)))
    assert damage > 0 and score < 0
    with pytest.raises(EvalCommandError, match="not a number"):
        EvalCommand(_command(tmp_path, "print('done')")).score(model)
    with pytest.raises(EvalCommandError, match="exited with status 3: bad"):
        EvalCommand(_command(tmp_path, "import sys\nprint('bad', file=sys.stderr)\nsys.exit(3)")).score(model)
    with pytest.raises(UsageError, match="must contain"):
        EvalCommand("python score.py")
