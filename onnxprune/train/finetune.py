"""``finetune()``: distil a pruned model from its original on unlabelled samples, in memory, in a time budget.

The entry point of ``prune --finetune-minutes N``: the calibration samples minus a held-out share train
the pruned model towards the original (per-output losses by kind, feature targets at the pruned groups'
boundaries, augmented images); the held-out share picks the best epoch and stops training early; the
result is written back into the pruned graph and checked against the trained PyTorch module. Evaluation
data must never be passed here: the held-out share is part of the training samples.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Mapping
from typing import Any

import numpy as np
import onnx

from onnxprune.data import check_samples
from onnxprune.errors import UsageError
from onnxprune.train.options import TrainOptions
from onnxprune.train.run import check_dynamic_batch, fit_model, require_torch

# A calibrated pruned model starts close to its original, and Adam moves every weight by about its rate on
# each step, whatever the gradient: at `train`'s 1e-3 the PP-OCRv5 recogniser at MACs 0.5 lost its held-out
# exact decodes (95.6% -> 78%) in the first epoch and had not got them back after 15 minutes (the calibrated
# model was kept: 92.0% read exactly); at 1e-4, 96.3% after 5 minutes (docs/distill.md).
CALIBRATED_LR = 1e-4


def finetune(
    original: onnx.ModelProto, pruned: onnx.ModelProto, samples: Mapping[str, np.ndarray], minutes: float,
    holdout: float = 0.1, *, kept: Mapping[str, np.ndarray] | None = None,
    options: TrainOptions | None = None,
) -> tuple[onnx.ModelProto, dict[str, Any]]:  # fmt: skip
    """The pruned model distilled from ``original`` for at most ``minutes``, and a report.

    Args:
        original: the teacher (the unpruned model); its outputs must have the pruned model's names.
        pruned: the student, as ``prune`` wrote it (tensor names kept).
        samples: training inputs by input name, batch axis first (calibration data, no labels).
        minutes: the training budget (the epochs follow from the measured step time).
        holdout: the share of ``samples`` held out for fidelity and early stopping (0: none).
        kept: optional, tensor name -> channel positions kept (``rewrite.kept_positions`` of the analysis):
            pruned tensors then become feature targets too.
        options: any other training option (``minutes`` and ``holdout`` here take precedence); Adam's rate
            defaults to ``CALIBRATED_LR`` here (``train``'s 1e-3 undoes a calibrated model's first epoch).

    Returns:
        (the trained pruned model, which passed validation and reproduces the trained module on ONNX
        Runtime; a report: held-out fidelity before and after, epochs, seconds, kinds, features).
    """
    require_torch()
    options = dataclasses.replace(options or TrainOptions(progress=False), minutes=minutes, holdout=holdout)
    if options.lr is None and options.optimizer in ("auto", "adam"):
        options = dataclasses.replace(options, lr=CALIBRATED_LR)
    options.check()
    if options.l1_gamma:
        raise UsageError("finetune distils a pruned model; sparsity training (l1_gamma) is `train`'s")
    check_dynamic_batch(pruned)
    checked = check_samples(dict(samples), pruned)
    began = time.perf_counter()
    trained, result = fit_model(pruned, checked, teacher=original, options=options, kept=kept)
    return trained, report(result, time.perf_counter() - began)


def report(result: Any, seconds: float) -> dict[str, Any]:
    """What a caller prints or stores: the held-out fidelity first and last, and how training went."""
    history = result.history
    trained = [h for h in history if h["epoch"] > 0]
    best = next((h for h in history if h["epoch"] == result.best_epoch), history[-1] if history else {})
    return {
        "seconds": seconds,
        "epochs": len(trained),
        "planned_epochs": result.planned_epochs,
        "seconds_per_epoch": sum(h["seconds"] for h in trained) / max(len(trained), 1),
        "step_seconds": result.step_seconds,
        "best_epoch": result.best_epoch,
        "stopped": result.stopped,
        "held_out": result.held_out,
        "before": {k: history[0].get(k) for k in ("holdout_loss", "fidelity")} if history else {},
        "after": {k: best.get(k) for k in ("holdout_loss", "fidelity")},
        "batch_norm": result.options.get("batch_norm"),
        "bn_drift": result.bn_drift,
        "kinds": result.kinds,
        "features": result.features,
        "device": result.device,
        "conversion_error": result.conversion_error,
        "export_error": result.export_error,
        "history": history,
        "options": result.options,
    }
