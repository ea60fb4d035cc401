"""Per-layer error of data-free compensation (compensate/layer_error.py), measured for a prune: in
verification's own runs where it has no calibration data, else on held-out calibration samples after
verification."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx

from onnxprune import files
from onnxprune.channels import Analysis, Plan
from onnxprune.compensate.layer_error import LayerErrors, layer_errors
from onnxprune.data import Samples, split_holdout, static_batch, take
from onnxprune.data import count as count_samples
from onnxprune.graph import normalise
from onnxprune.rewrite import kept_positions, uncompensated_reference

# Held-out calibration samples that measure the per-layer error of data-free compensation.
ERROR_SAMPLES = 16


@dataclass
class LayerErrorRun:
    """The measurement: in verification's runs (``errors`` set, with the uncompensated reference to run
    beside them), or after verification in runs of its own on held-out calibration samples (``feeds``)."""

    on: str
    errors: LayerErrors | None = None
    uncompensated: onnx.ModelProto | None = None
    feeds: list[dict[str, np.ndarray]] | None = None

    def take_uncompensated(self) -> onnx.ModelProto:
        """The uncompensated reference, no longer held here: its session is all verification keeps."""
        model, self.uncompensated = self.uncompensated, None
        assert model is not None
        return model


def plan_layer_errors(
    original: onnx.ModelProto,
    masked: onnx.ModelProto,
    analysis: Analysis,
    plan: Plan,
    section: dict[str, Any],
    fed: Any,
    held_out: Samples | None,
) -> LayerErrorRun | None:
    """What to measure per consumer: the output error of the pruned model without and with the data-free
    compensation; None (and ``section`` says why where it is not obvious) when there is nothing to measure.
    ``section``: the report's compensation section; ``held_out``: held-out calibration samples, if any."""
    if not analysis.compensating or not section["layers"]:
        return None
    if files.needs_external_data(original):
        # Three more runnable copies of the weights (and sessions) would be too much for such a model.
        section["error_skipped"] = "the model is over 2 GB: per-layer errors are not measured"
        return None
    if held_out is not None:
        feeds = [take(held_out, ERROR_SAMPLES)]
        return LayerErrorRun(f"{count_samples(feeds[0])} held-out calibration samples", feeds=feeds)
    uncompensated = uncompensated_reference(normalise(original), analysis, plan)
    nodes = _consumers(section)
    errors = LayerErrors(original, masked, uncompensated, nodes, kept_positions(analysis, plan))
    return LayerErrorRun(f"the verification inputs ({fed.description})", errors, uncompensated)


def record_layer_errors(
    original: onnx.ModelProto,
    masked: onnx.ModelProto,
    analysis: Analysis,
    plan: Plan,
    section: dict[str, Any],
    run: LayerErrorRun,
) -> None:
    """The errors into the report's layers; measured now, after verification, on held-out samples."""
    if run.errors is not None:
        errors = run.errors.result()
    else:
        assert run.feeds is not None
        uncompensated = uncompensated_reference(normalise(original), analysis, plan)
        errors = layer_errors(
            original, masked, uncompensated, _consumers(section), kept_positions(analysis, plan),
            run.feeds, static_batch(original),
        )  # fmt: skip
    section["error_on"] = run.on
    for layer in section["layers"]:
        layer.update(errors.get(layer["node"], {"rel_mse_before": None, "rel_mse_after": None}))


def held_out_part(samples: Samples | None, holdout: float) -> Samples | None:
    """The held-out tail of the calibration samples (never fitted on), or None without samples."""
    return None if samples is None else split_holdout(samples, holdout)[1]


def _consumers(section: dict[str, Any]) -> list[str]:
    return list(dict.fromkeys(layer["node"] for layer in section["layers"]))
