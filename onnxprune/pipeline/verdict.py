"""The verdict: does the pruned model still do the original's job, on the user's data?

Measured on the held-out calibration samples (never fitted on), else on the ``--inputs`` file, with the
fidelity of each output kind (fidelity.py: agreement above chance for class scores and per-frame
sequences, cosine for maps). Below ``--min-fidelity`` the prune is refused: nothing is written. Random data
says nothing about a task: without the user's data the verdict is a smoke test, labelled so, and never
refuses.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import onnx

from onnxprune.capture import Runner
from onnxprune.data import Samples, count, static_batch, take
from onnxprune.errors import FidelityError
from onnxprune.fidelity import OutputFidelity, measure_all
from onnxprune.inputs import Feeds

# Held-out samples the verdict runs (both models, every output kept in memory).
VERDICT_SAMPLES = 64


def judge(
    original: onnx.ModelProto,
    pruned: onnx.ModelProto,
    held_out: Samples | None,
    feeds: Feeds | None,
    min_fidelity: float,
    before_finetune: onnx.ModelProto | None = None,
) -> dict[str, Any]:
    """The report's ``verdict``; raises FidelityError where the user's data shows the task lost.
    ``before_finetune``: the model fine-tuning started from, whose fidelity on the same samples (the
    original's outputs computed once) the verdict records beside the tuned one's."""
    samples, on, real = _what_to_judge_on(held_out, feeds)
    reference = _outputs(original, samples)
    found = measure_all(reference, _outputs(pruned, samples))
    worst = min(found.values(), key=lambda f: f.fidelity)
    verdict = {
        "on": on,
        "users_data": real,
        "outputs": {name: f.to_dict() for name, f in found.items()},
        "fidelity": worst.to_dict()["fidelity"],
        "worst_output": worst.name,
        "min_fidelity": min_fidelity,
        "passed": _passed(worst.fidelity, min_fidelity) if real else None,
    }
    if before_finetune is not None:
        untuned = measure_all(reference, _outputs(before_finetune, samples))
        verdict["before_finetune"] = min(f.to_dict()["fidelity"] for f in untuned.values())
    if real and not _passed(worst.fidelity, min_fidelity):
        raise FidelityError(_refusal(worst, on, min_fidelity))
    return verdict


def _passed(fidelity: float, min_fidelity: float) -> bool:
    """At least the floor; a floor of 0 or below accepts anything (agreement above chance can be < 0)."""
    return min_fidelity <= 0 or fidelity >= min_fidelity


def _what_to_judge_on(held_out: Samples | None, feeds: Feeds | None) -> tuple[Samples, str, bool]:
    if held_out is not None and count(held_out):
        samples = take(held_out, min(VERDICT_SAMPLES, count(held_out)))
        return samples, f"{count(samples)} held-out calibration samples", True
    assert feeds is not None
    # Feeds of one shape (a file may hold samples of several sizes: the first size is judged on).
    first = {name: a.shape[1:] for name, a in feeds.feeds[0].items()}
    alike = [f for f in feeds.feeds if {name: a.shape[1:] for name, a in f.items()} == first]
    stacked = {name: np.concatenate([f[name] for f in alike]) for name in first}
    if feeds.source == "random":
        return stacked, f"{feeds.description}: a smoke test, not a measure of the task", False
    return stacked, feeds.description, True


def _outputs(model: onnx.ModelProto, samples: Samples) -> dict[str, np.ndarray]:
    names = [o.name for o in model.graph.output]
    parts: dict[str, list[np.ndarray]] = {name: [] for name in names}
    for _, _, values in Runner(model, names, static_batch(model)).run(samples):
        for name in names:
            parts[name].append(values[name])
    return {name: np.concatenate(found) for name, found in parts.items()}


def _refusal(worst: OutputFidelity, on: str, min_fidelity: float) -> str:
    measure = "agreement above chance" if worst.kind in ("classes", "sequence") else "cosine similarity"
    return (
        f"the pruned model lost the original's behaviour: output {worst.name!r} ({worst.kind}) keeps "
        f"fidelity {worst.fidelity:.3f} ({measure}) on {on}, below --min-fidelity {min_fidelity:g}; "
        "nothing written (prune less, or with --calib let calibration refit it; --min-fidelity 0 writes it "
        "anyway)"
    )
