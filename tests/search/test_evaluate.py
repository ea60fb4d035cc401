"""Plan evaluation without rewriting: the cut-input model computes what the pruned model does."""

from __future__ import annotations

import numpy as np
import pytest
import tiny
import weights

from onnxprune.compensate.rebuild import channel_moments
from onnxprune.options import PlanOptions, VerifyOptions
from onnxprune.pipeline import Execution, execute, prepare
from onnxprune.planning import make_plan
from onnxprune.runtime import ort_session
from onnxprune.search.evaluate import PlanEvaluator


def _samples(model, n: int, seed: int = 0) -> dict[str, np.ndarray]:
    spec = model.graph.input[0]
    shape = [d.dim_value or 1 for d in spec.type.tensor_type.shape.dim]
    return {spec.name: np.random.default_rng(seed).standard_normal((n, *shape[1:])).astype(np.float32)}


def _run(model, samples) -> np.ndarray:
    session = ort_session(model)
    name = session.get_inputs()[0].name
    return np.concatenate([session.run(None, {name: x[None]})[0] for x in samples[name]])


@pytest.mark.parametrize("builder", ["residual", "concat", "depthwise", "squeeze_gemm"])
@pytest.mark.parametrize("mode", ["none", "bn"])
def test_an_evaluated_plan_is_what_the_pruned_model_computes(builder: str, mode: str) -> None:
    model = tiny.REGISTRY[builder](seed=1, dead=0.0)
    options = PlanOptions(ratio=0.5, round_to=1, min_keep=1, compensate=mode)
    prepared = prepare(model, options)
    plan = make_plan(prepared.groups, options, prepared.analysis)
    assert plan.cuts(prepared.groups), "the test needs a plan that cuts"
    samples = _samples(model, 3)
    evaluator = PlanEvaluator(prepared, samples)
    pruned = execute(prepared, plan, Execution(VerifyOptions(enabled=False))).pruned
    got, want = next(iter(evaluator.outputs(plan).values())), _run(pruned, samples)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5 * np.abs(want).max())
    assert (
        evaluator.damage(plan) > 0
        and evaluator.damage(make_plan(prepared.groups, options.__class__(ratio=0.0))) == 0
    )


def test_unpruned_reference_is_the_original_and_means_are_per_channel() -> None:
    model = weights.load("resnet18")
    options = PlanOptions(ratio=0.3, compensate="bn")
    prepared = prepare(model, options)
    samples = _samples(model, 2)
    evaluator = PlanEvaluator(prepared, samples)
    np.testing.assert_allclose(
        next(iter(evaluator.reference.values())), _run(model, samples), rtol=1e-4, atol=1e-4
    )
    found = channel_moments(model, prepared.graph, prepared.analysis, samples, covariance=False)
    means = {k: m.mean for k, m in found.items()}
    assert means and all(m.ndim == 1 for m in means.values())


@pytest.mark.parametrize("builder", ["chain", "residual", "concat", "depthwise", "squeeze_gemm"])
def test_rebuilt_channels_are_what_the_calibrated_model_computes(builder: str) -> None:
    """With calibration's rebuild (removed channels estimated from the kept ones), the search's cut-input
    model and the written model compute the same: what the scan measured is what the prune delivers."""
    from onnxprune.compensate.calibrate import CalibOptions

    model = tiny.REGISTRY[builder](seed=2, dead=0.0)
    options = PlanOptions(ratio=0.5, round_to=1, min_keep=1, compensate="calib")
    prepared = prepare(model, options)
    plan = make_plan(prepared.groups, options, prepared.analysis)
    samples = _samples(model, 40, seed=3)
    only_rebuild = CalibOptions(steps=("rebuild",), holdout=0.1)
    result = execute(prepared, plan, Execution(VerifyOptions(min_fidelity=0), samples, only_rebuild))
    assert result.report["verify"]["exact"]["passed"], "the rewrite matches the rebuilt reference"
    rebuilt = result.report["compensation"]["rebuilt"]
    # A Gemm after a pooled Flatten reads one row per sample: too few for a linear estimate, the mean alone.
    assert rebuilt["tensors"] > 0 and (rebuilt["linear"] > 0 or builder == "squeeze_gemm")
    fit = {k: v[:36] for k, v in samples.items()}
    moments = channel_moments(model, prepared.graph, prepared.analysis, fit)
    evaluator = PlanEvaluator(prepared, _samples(model, 3, seed=9), moments)
    got = next(iter(evaluator.outputs(plan).values()))
    want = _run(result.pruned, _samples(model, 3, seed=9))
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * np.abs(want).max())
