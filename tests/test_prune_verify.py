"""prune verifies its own surgery: a wrong slice is caught by the masked reference, and nothing is written."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
import tiny

from onnxprune import api
from onnxprune.errors import VerificationError
from onnxprune.plan import PlanOptions
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
