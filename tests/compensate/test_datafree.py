"""Data-free compensation (compensate/moments.py and what the rules make of it).

- the closed forms and the quadrature agree with Monte-Carlo means of act(N(mu, s²));
- the analysis carries a removed channel's N(beta, gamma²) to the next nonlinearity (SiLU as a pair);
- gamma = 0, beta != 0 channels are removed exactly at --threshold 0 (pruned == original) on tiny graphs and
  real topologies, where plain removal must keep them;
- where the BN was folded into its Conv, a removed channel carries the Conv's bias, so the two ways exports
  store that bias (in the Conv, or in an Add after it) give the same pruned model;
- the option is validated and ``none`` is the old behaviour.
"""

from __future__ import annotations

import functools
import math

import numpy as np
import onnx
import pytest
import tiny
import weights
from onnx import numpy_helper

from onnxprune import api
from onnxprune.errors import UsageError
from onnxprune.options import PlanOptions
from onnxprune.rules import moments

MU = np.array([-4.0, -2.5, -1.0, -0.3, 0.0, 0.4, 1.2, 2.9, 5.0])
S = np.array([0.05, 0.5, 1.0, 2.0, 0.7, 1.5, 0.3, 3.0, 1.0])


@functools.cache
def _points(n: int = 300_000, seed: int = 0) -> np.ndarray:
    z = np.random.default_rng(seed).standard_normal((n, 1))
    return MU[None, :] + S[None, :] * z


def monte_carlo(f) -> np.ndarray:
    return f(_points()).mean(0)


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


CASES = {
    "Relu": (lambda x: np.maximum(x, 0), {}, (-math.inf, math.inf)),
    "Clip": (lambda x: np.clip(x, 0, 6), {}, (0.0, 6.0)),
    "LeakyRelu": (lambda x: np.where(x > 0, x, 0.1 * x), {"alpha": 0.1}, (-math.inf, math.inf)),
    "HardSigmoid": (lambda x: np.clip(0.2 * x + 0.5, 0, 1), {}, (-math.inf, math.inf)),
    "HardSwish": (lambda x: x * np.clip(x / 6 + 0.5, 0, 1), {}, (-math.inf, math.inf)),
    "Sigmoid": (sigmoid, {}, (-math.inf, math.inf)),
    "Tanh": (np.tanh, {}, (-math.inf, math.inf)),
}


@pytest.mark.parametrize("op", sorted(CASES))
def test_expectation_matches_monte_carlo(op: str) -> None:
    f, attrs, bounds = CASES[op]
    got = moments.unary_mean(op, attrs, bounds, MU, S, f)
    assert got is not None
    # Standard error of the Monte-Carlo mean: at most ~ max(s) / sqrt(n) = 0.0055
    np.testing.assert_allclose(got, monte_carlo(f), atol=0.02)


def test_clip_with_only_one_bound_and_silu_pair() -> None:
    got = moments.clip_mean(MU, S, -1.0, math.inf)
    np.testing.assert_allclose(got, monte_carlo(lambda x: np.maximum(x, -1.0)), atol=0.02)
    np.testing.assert_allclose(moments.silu_mean(MU, S), monte_carlo(lambda x: x * sigmoid(x)), atol=0.02)


def test_zero_spread_limit_is_the_point_value() -> None:
    tiny_s = np.full(MU.shape, 1e-9)
    np.testing.assert_allclose(moments.relu_mean(MU, tiny_s), np.maximum(MU, 0), atol=1e-8)
    np.testing.assert_allclose(moments.hard_swish_mean(MU, tiny_s), CASES["HardSwish"][0](MU), atol=1e-8)


def _bn_net(act: str) -> tuple[onnx.ModelProto, np.ndarray, np.ndarray]:
    """Conv → BN (gamma, beta known) → act → 1x1 Conv → head: the analysis' value at the 1x1 Conv."""
    n = tiny.Net(seed=0, dead=0.0)
    h = n.act(n.bn(n.conv("input", 3, 8), 8), act)
    model = n.model([n.head(n.conv(h, 8, 8, k=1), 8)])
    bn = next(x for x in model.graph.node if x.op_type == "BatchNormalization")
    inits = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    return model, inits[bn.input[1]].astype(np.float64), inits[bn.input[2]].astype(np.float64)


@pytest.mark.parametrize(
    ("act", "expected"),
    [
        ("Relu", moments.relu_mean),
        ("SiLU", moments.silu_mean),
        ("Relu6", lambda m, s: moments.clip_mean(m, s, 0.0, 6.0)),
    ],
)
def test_analysis_carries_the_bn_distribution_to_the_activation(act, expected) -> None:
    from onnxprune import graph as graphs
    from onnxprune.analyse import analyse

    model, gamma, beta = _bn_net(act)
    analysis = analyse(graphs.normalise(model), compensate="bn")
    consumer = [t for t, node, _ in analysis.consumers][-2]  # the 1x1 Conv's input (the head's Gemm last)
    np.testing.assert_allclose(
        analysis.states[consumer].removed_value, expected(beta, np.abs(gamma)), rtol=1e-6
    )
    plain = analyse(graphs.normalise(model), compensate="none")
    assert not plain.states[consumer].removed_value.any()


with_dead_beta = tiny.with_dead_beta


@pytest.mark.parametrize("name", sorted(tiny.REGISTRY))
def test_threshold_zero_removes_constant_channels_exactly(name: str) -> None:
    model = with_dead_beta(tiny.REGISTRY[name]())
    result = tiny.prune_dead(model)
    tiny.assert_exact(model, result.pruned)
    plain = tiny.prune_dead(model, compensate="none")
    tiny.assert_exact(model, plain.pruned)
    assert tiny.removed_channels(result) >= tiny.removed_channels(plain)


def test_threshold_zero_removes_more_than_plain_removal_on_tiny_graphs() -> None:
    gained = 0
    for name in sorted(tiny.REGISTRY):
        model = with_dead_beta(tiny.REGISTRY[name]())
        gained += tiny.removed_channels(tiny.prune_dead(model))
        gained -= tiny.removed_channels(tiny.prune_dead(model, compensate="none"))
    assert gained > 0


ZOO = ("resnet18", "mobilenet_v2", "efficientnet_b0", "densenet121", "resnext50_32x4d", "yolov8n")


@pytest.mark.slow
@pytest.mark.parametrize("name", ZOO)
def test_zoo_constant_channels_removed_exactly(name: str) -> None:
    model = with_dead_beta(weights.load(name, dead=0.3))
    result = tiny.prune_dead(model)
    plain = tiny.prune_dead(model, compensate="none")
    assert tiny.removed_channels(result) > tiny.removed_channels(plain)
    tiny.assert_exact(model, result.pruned)
    layers = result.report["compensation"]["layers"]
    assert any(x["carrying"] and x["exact"] for x in layers)


def test_compensate_option_is_validated() -> None:
    with pytest.raises(UsageError, match="--compensate must be one of auto, none, bn, calib"):
        PlanOptions(ratio=0.5, compensate="mean")
    with pytest.raises(UsageError, match="calibration data"):
        api.prune_model(tiny.REGISTRY[sorted(tiny.REGISTRY)[0]](), PlanOptions(ratio=0.5, compensate="calib"))


def test_none_folds_nothing_that_a_cut_to_zero_does_not_carry() -> None:
    model, _, _ = _bn_net("Relu")
    result = api.prune_model(model, PlanOptions(ratio=0.5, round_to=1, min_keep=1, compensate="none"))
    assert {(x["applied"], x["exact"]) for x in result.report["compensation"]["layers"]} == {("none", None)}
    compensated = api.prune_model(model, PlanOptions(ratio=0.5, round_to=1, min_keep=1))
    layers = {x["node"]: x for x in compensated.report["compensation"]["layers"]}
    # The 1x1 Conv gets the BN-scored channels' estimates (gamma != 0: not exact); the Gemm gets the 1x1
    # Conv's own channels, which no BN scores: no estimate, cut to 0.
    assert [(x["applied"], x["exact"]) for x in layers.values()] == [("bias", False), ("none", False)]


def _folded_bn(bias_in_conv: bool, seed: int = 0) -> onnx.ModelProto:
    """Conv (a BN folded into it) → HardSwish → padded depthwise → 1x1 Conv → head, the PP-LCNet block of
    the PaddlePaddle exports: the folded bias written into the Conv, or added after it (the same function)."""
    n = tiny.Net(seed=seed, dead=0.0)
    weight = n.param(n.rng.normal(0, 0.4, (16, 3, 3, 3)))
    bias = n.rng.normal(0, 1.0, 16)
    if bias_in_conv:
        h = n.node("Conv", ["input", weight, n.param(bias, "b")], kernel_shape=[3, 3], pads=[1] * 4)
    else:
        h = n.node("Conv", ["input", weight], kernel_shape=[3, 3], pads=[1] * 4)
        h = n.node("Add", [h, n.param(bias.reshape(1, -1, 1, 1), "b")])
    h = n.node("HardSwish", [h])
    h = n.node("HardSwish", [n.conv(h, 16, 16, group=16, bias=True)])
    return n.model([n.head(n.conv(h, 16, 8, k=1, bias=True), 8)])


def _cut_first_group(model: onnx.ModelProto, kept: list[int]) -> api.PruneResult:
    """The same channels of the first Conv's group removed, whatever the export (a replayed plan)."""
    first = next(node.name for node in model.graph.node if node.op_type == "Conv")
    group = next(g for g in api.inspect(model).groups if first in g.producers)
    plan = {"groups": [{"nodes": group.nodes, "channels_before": group.size, "kept": kept}]}
    return api.prune_model(model, PlanOptions(replay=plan), api.VerifyOptions(iterations=2))


def test_a_folded_bn_leaves_the_same_model_whether_its_bias_is_in_the_conv_or_after_it() -> None:
    kept = [0, 2, 3, 5, 8, 9, 12, 15]
    inside, after = (_cut_first_group(_folded_bn(form), kept) for form in (True, False))
    for seed in (0, 1):
        a, b = tiny.outputs(inside.pruned, seed), tiny.outputs(after.pruned, seed)
        for mine, theirs in zip(a.values(), b.values(), strict=True):  # one output, named apart
            np.testing.assert_allclose(theirs, mine, rtol=1e-5, atol=1e-5)
    moved = tiny.outputs(_folded_bn(True), 0)
    assert any(not np.allclose(a[k], v, rtol=1e-2) for k, v in moved.items())  # the cut is not free


def test_a_channel_no_bn_scores_carries_its_producers_bias() -> None:
    model = _folded_bn(bias_in_conv=True)
    conv = next(node for node in model.graph.node if node.op_type == "Conv")
    bias = numpy_helper.to_array(next(t for t in model.graph.initializer if t.name == conv.input[2]))
    kept = list(range(0, 16, 2))
    removed = np.setdiff1d(np.arange(16), kept)
    result = _cut_first_group(model, kept)
    pointwise = next(x for x in result.report["compensation"]["layers"] if x["removed"] == 8)
    # Through the HardSwish, the padded depthwise Conv (interior value) and the second HardSwish: not 0.
    assert pointwise["carrying"] == 8 and pointwise["applied"] == "bias"
    first = bias[removed].astype(np.float64)
    expected = first * np.clip(first / 6 + 0.5, 0, 1)
    from onnxprune import graph as graphs
    from onnxprune.analyse import analyse

    analysis = analyse(graphs.normalise(model), compensate="bn")
    hswish = next(node for node in model.graph.node if node.op_type == "HardSwish")
    np.testing.assert_allclose(analysis.states[hswish.output[0]].removed_value[removed], expected, rtol=1e-6)
    plain = analyse(graphs.normalise(model), compensate="none")
    assert not plain.states[conv.output[0]].removed_value.any()


def test_a_scoring_bn_still_decides_what_a_biased_conv_carries() -> None:
    from onnxprune import graph as graphs
    from onnxprune.analyse import analyse

    n = tiny.Net(seed=0, dead=0.0)
    h = n.act(n.bn(n.conv("input", 3, 8, bias=True), 8), "Relu")
    model = n.model([n.head(n.conv(h, 8, 8, k=1), 8)])
    bn = next(x for x in model.graph.node if x.op_type == "BatchNormalization")
    inits = {t.name: numpy_helper.to_array(t).astype(np.float64) for t in model.graph.initializer}
    analysis = analyse(graphs.normalise(model), compensate="bn")
    relu = next(x for x in model.graph.node if x.op_type == "Relu")
    expected = moments.relu_mean(inits[bn.input[2]], np.abs(inits[bn.input[1]]))
    np.testing.assert_allclose(analysis.states[relu.output[0]].removed_value, expected, rtol=1e-6)


def _top1(model: onnx.ModelProto) -> float:
    from pathlib import Path

    from onnxprune.runtime import run_model

    data = np.load(Path(__file__).parents[2] / "models" / "mnist" / "mnist5k_test.npz")
    logits = run_model(model, {"input": data["x"].astype(np.float32)})["logits"]
    return float((logits.argmax(1) == data["y"]).mean() * 100)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["vgg.l1", "resnet.l1"])
def test_slimming_trained_models_keep_their_accuracy_at_0_7_without_data(name: str) -> None:
    """models/mnist: trained with Network Slimming's L1 penalty; top-1 on the test split, no fine-tuning."""
    from pathlib import Path

    model = onnx.load(str(Path(__file__).parents[2] / "models" / "mnist" / f"mnist_{name}.onnx"))
    unpruned = _top1(model)
    compensated = api.prune_model(model, PlanOptions(ratio=0.7), api.VerifyOptions())
    no_verify = api.VerifyOptions(enabled=False)
    plain = api.prune_model(model, PlanOptions(ratio=0.7, compensate="none"), no_verify)
    assert compensated.report["macs"]["after"] < 0.2 * compensated.report["macs"]["before"]
    assert _top1(compensated.pruned) >= unpruned - 1.5
    assert _top1(plain.pruned) < unpruned - 10  # what the constants are worth: plain removal loses them


@pytest.mark.parametrize("group", [3, 4])
def test_grouped_conv_folds_constants_of_its_own_group(group: int) -> None:
    """ResNeXt's grouped 3x3 reads Relu(beta) from removed channels: a bias map per output, group by group."""
    from rules.test_conv import resnext

    model = with_dead_beta(resnext(group))
    result = tiny.prune_dead(model)
    tiny.assert_exact(model, result.pruned)
    grouped = next(n for n in result.pruned.graph.node if n.op_type == "Conv" and n.attribute[0].i > 1)
    layers = {x["node"]: x for x in result.report["compensation"]["layers"]}
    assert layers[grouped.name]["applied"] == "bias map" and layers[grouped.name]["exact"]
    plain = tiny.prune_dead(model, compensate="none")
    assert tiny.removed_channels(result) > tiny.removed_channels(plain)


def test_padded_depthwise_takes_the_interior_value_and_says_so() -> None:
    """MobileNetV2's block with constant (gamma = 0, beta != 0) expand channels: --threshold 0 keeps them (the
    depthwise border would differ), a ratio removes them with the interior value, listed as approximate;
    no threshold uses an estimate that is wrong even for gamma = 0."""
    model = with_dead_beta(tiny.depthwise())
    dead = tiny.prune_dead(model)
    tiny.assert_exact(model, dead.pruned)
    assert not dead.report["compensation"]["approximations"]
    high = api.prune_model(model, PlanOptions(threshold=1.0, round_to=1, min_keep=1))
    assert tiny.removed_channels(high) > tiny.removed_channels(dead)
    assert not high.report["compensation"]["approximations"]
    tiny.assert_exact(high.masked, high.pruned)
    half = api.prune_model(model, PlanOptions(ratio=0.5, round_to=4, min_keep=4))
    tiny.assert_exact(half.masked, half.pruned)
    assert [a["why"] for a in half.report["compensation"]["approximations"]] == [
        "padded depthwise Conv: interior value"
    ]


def _constant_matmuls(model: onnx.ModelProto) -> list[list[list[int]]]:
    """The shapes of the inputs of every MatMul of constants (a bias map's factors)."""
    inits = {t.name: list(t.dims) for t in model.graph.initializer}
    products = {n.output[0] for n in model.graph.node if n.op_type == "MatMul"}
    return [
        [inits.get(i, []) for i in node.input]
        for node in model.graph.node
        if node.op_type == "MatMul" and all(i in inits or i in products for i in node.input)
    ]


def _kill_after_maps(model: onnx.ModelProto, every: int = 3) -> onnx.ModelProto:
    """Every third channel of each BN behind a bias map's Add gets gamma = 0 and a beta of 0.5: it outputs
    that constant exactly, which the next padded Conv folds as a new map."""
    made = {o: n for n in model.graph.node for o in n.output}
    inits = {t.name: t for t in model.graph.initializer}
    for node in model.graph.node:
        add = made.get(node.input[0])
        if node.op_type != "BatchNormalization" or add is None or add.op_type != "Add":
            continue
        if not any(i in made and made[i].op_type == "MatMul" for i in add.input):
            continue
        for index, value in ((1, 0.0), (2, 0.5)):
            values = numpy_helper.to_array(inits[node.input[index]]).copy()
            values[::every] = value
            inits[node.input[index]].CopyFrom(numpy_helper.from_array(values, node.input[index]))
    return model


@pytest.mark.slow
def test_resnet18_pruned_with_compensation_is_pruned_again() -> None:
    """0.5 then 0.3: the BNs behind the first prune's bias maps score their Conv's channels, the maps lose
    those channels' taps and stay factored, and the surgery matches its reference; dead channels behind
    maps go exactly (pruned == model) at --threshold 0."""
    first = api.prune_model(weights.load("resnet18", seed=0), PlanOptions(ratio=0.5), api.VerifyOptions())
    second = api.prune_model(first.pruned, PlanOptions(ratio=0.3), api.VerifyOptions())
    assert second.report["verify"]["exact"]["passed"]
    pruned = [g for g in second.report["groups"] if g["channels_after"] < g["channels_before"]]
    assert len(pruned) >= 8
    assert second.report["params"]["after"] < 0.75 * first.report["params"]["after"]
    before, after = _constant_matmuls(first.pruned), _constant_matmuls(second.pruned)
    assert len(before) >= 16 and len(after) == len(before)  # one map per padded Conv, not one per prune
    taps = [shapes[1] for shapes in after if len(shapes[1]) == 3]
    assert len(taps) == len(after) // 2 and all(t[1:] == [3, 3] for t in taps)  # [K, R, S]: never folded
    inits = {t.name: t for t in second.pruned.graph.initializer}
    added = [inits[i] for n in second.pruned.graph.node if n.op_type == "Add" for i in n.input if i in inits]
    assert not [t.name for t in added if len(t.dims) >= 3], "a dense [K, H, W] map"

    killed = _kill_after_maps(first.pruned)
    dead = tiny.prune_dead(killed)
    assert tiny.removed_channels(dead) > 0
    tiny.assert_exact(killed, dead.pruned)
    # The Convs that read beta already had maps: their new taps are summed into those, not added as more.
    assert len(_constant_matmuls(dead.pruned)) == len(before)
    assert _map_adds(dead.pruned) == _map_adds(first.pruned) == _map_adds(second.pruned) >= 8


def _map_adds(model: onnx.ModelProto) -> int:
    """Adds that add a factored map (the product of two MatMuls of constants)."""
    products = {o for n in model.graph.node if n.op_type == "MatMul" for o in n.output}
    return sum(n.op_type == "Add" and bool(products & set(n.input)) for n in model.graph.node)
