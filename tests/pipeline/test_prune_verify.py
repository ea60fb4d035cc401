"""prune verifies its own surgery: a wrong slice is caught by the masked reference, and nothing is written."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
import tiny

from onnxprune import api
from onnxprune.errors import VerificationError
from onnxprune.options import PlanOptions
from onnxprune.rules.conv import ConvRule


def slice_conv_inputs_wrongly(monkeypatch: pytest.MonkeyPatch) -> None:
    """A simulated rule bug: every Conv keeps the right number of input columns, shifted by one, so shapes
    stay valid and values do not."""
    original_apply = ConvRule.apply

    def wrong_columns(self: ConvRule, node, rw) -> None:
        kept = rw.kept

        def shifted(t):
            keep = kept(t)
            if keep is None or t is not node.inputs[0]:
                return keep
            return np.sort((keep + 1) % len(rw.analysis.states[t.name].removed_value))

        rw.kept = shifted
        try:
            original_apply(self, node, rw)
        finally:
            rw.kept = kept

    monkeypatch.setattr(ConvRule, "apply", wrong_columns)


def test_a_conv_sliced_on_the_wrong_columns_is_caught(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    slice_conv_inputs_wrongly(monkeypatch)
    source = tmp_path / "chain.onnx"
    onnx.save(tiny.chain(dead=0.0), source)
    out = tmp_path / "pruned.onnx"
    with pytest.raises(VerificationError, match="masked reference"):
        api.prune(source, out, PlanOptions(ratio=0.5, round_to=1, min_keep=1, scope="layer"))
    assert not out.exists() and list(tmp_path.iterdir()) == [source]


def test_report_holds_both_answers() -> None:
    result = api.prune_model(
        tiny.residual(), PlanOptions(ratio=0.5, round_to=4, min_keep=4), api.VerifyOptions()
    )
    exact, change = result.report["verify"]["exact"], result.report["verify"]["change"]
    assert exact["passed"] and exact["criterion"] == "scale"
    output = change["outputs"][0]
    assert output["max_abs_err"] > 0 and -1 <= output["cosine"] <= 1
    assert output["top1_agreement"] is not None, "a [1, 10] output looks like class scores"


def test_verification_uses_the_users_inputs(tmp_path: Path) -> None:
    data = tmp_path / "inputs.npz"
    np.savez(data, input=np.zeros((1, 3, 16, 16), np.float32))
    options = api.VerifyOptions(inputs=data)
    result = api.prune_model(tiny.chain(), PlanOptions(ratio=0.5, round_to=1, min_keep=1), options)
    assert result.report["verify"]["exact"]["iterations"] == 1


def _count_sessions(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every ONNX Runtime session made from now on, by its graph optimisation level."""
    import onnxruntime as ort

    made: list[str] = []

    class Counted(ort.InferenceSession):  # type: ignore[misc]
        def __init__(self, *args, **kwargs) -> None:
            made.append(str(kwargs["sess_options"].graph_optimization_level).split("ORT_")[-1])
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(ort, "InferenceSession", Counted)
    return made


@pytest.mark.parametrize(
    ("compensate", "enabled", "sessions"),
    [
        # The ONNX Runtime check (basic optimisations); the uncompensated reference for the per-layer errors
        # and the masked reference's noise floor (no optimisations); original, masked reference, pruned.
        ("bn", True, ["ENABLE_BASIC", *["DISABLE_ALL"] * 2, *["ENABLE_ALL"] * 3]),
        ("none", True, ["ENABLE_BASIC", "DISABLE_ALL", *["ENABLE_ALL"] * 3]),
        ("bn", False, ["ENABLE_BASIC"]),
    ],
)
def test_one_prune_makes_each_session_once(
    monkeypatch: pytest.MonkeyPatch, compensate: str, enabled: bool, sessions: list[str]
) -> None:
    """Verification and the per-layer errors share their sessions: no model is started twice."""
    from tiny import with_dead_beta

    made = _count_sessions(monkeypatch)
    # The gamma = 0 channels, which carry their beta: bn folds them, and measures what that fixed.
    options = PlanOptions(threshold=0.0, round_to=1, min_keep=1, compensate=compensate)
    result = api.prune_model(with_dead_beta(tiny.chain()), options, api.VerifyOptions(enabled=enabled))
    assert sorted(made) == sorted(sessions), made
    layers = result.report["compensation"]["layers"]
    assert (compensate == "bn" and enabled) == any(la.get("rel_mse_before") is not None for la in layers)


def test_held_out_samples_get_layer_error_runs_of_their_own(monkeypatch: pytest.MonkeyPatch) -> None:
    """With calibration samples the per-layer errors are measured on them: three sessions more, each cut
    to the consumers' outputs (optimised), after verification's four; and the verdict runs the original
    and the pruned model on them (two more)."""
    from tiny import with_dead_beta

    made = _count_sessions(monkeypatch)
    x = np.random.default_rng(3).standard_normal((20, 3, 16, 16)).astype(np.float32)
    options = PlanOptions(threshold=0.0, round_to=1, min_keep=1, compensate="bn")
    result = api.prune_model(
        with_dead_beta(tiny.chain()), options, api.VerifyOptions(), api.CalibRequest(samples={"input": x})
    )
    assert result.report["compensation"]["error_on"] == "2 held-out calibration samples"
    assert sorted(made) == sorted(["ENABLE_BASIC", "DISABLE_ALL", *["ENABLE_ALL"] * 8]), made


def test_shared_runs_measure_the_layer_errors_their_own_runs_do(monkeypatch: pytest.MonkeyPatch) -> None:
    """The per-layer errors read from verification's runs equal those of three runs of their own (the
    compensate/layer_error path that held-out calibration samples take), on the same feed."""
    model = tiny.residual()
    options = PlanOptions(ratio=0.5, round_to=1, min_keep=1)  # live channels: both errors are real
    shared = api.prune_model(model, options, api.VerifyOptions()).report["compensation"]["layers"]
    from onnxprune.pipeline import layer_errors, run

    planned = layer_errors.plan_layer_errors

    def own_runs(*args):  # type: ignore[no-untyped-def]
        shared, fed = planned(*args), args[5]
        return layer_errors.LayerErrorRun(shared.on, feeds=[dict(f) for f in fed.feeds])

    monkeypatch.setattr(run, "plan_layer_errors", own_runs)
    apart = api.prune_model(model, options, api.VerifyOptions()).report["compensation"]["layers"]
    measured = [la for la in shared if la["rel_mse_before"] is not None]
    assert measured and [la["node"] for la in shared] == [la["node"] for la in apart]
    assert any(la["rel_mse_after"] > 1e-6 for la in measured), "the test needs inexact compensation"
    for one, other in zip(shared, apart, strict=True):
        for key in ("rel_mse_before", "rel_mse_after"):
            # None where a layer has one row (the Gemm at batch 1), in both.
            expected = None if other[key] is None else pytest.approx(other[key], rel=2e-3, abs=1e-9)
            assert one[key] == expected, (one, other)
