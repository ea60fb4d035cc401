"""The data side of sparsify: calibration samples split into fit and held-out, the Gram matrices of the
layers' inputs on each, and the whole model's fidelity (original vs 2:4) on the held-out samples, or on
seeded random inputs when there is no calibration data."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import onnx

from onnxprune import data, inputs, verify
from onnxprune.errors import ModelLoadError
from onnxprune.sparsity.gram import LayerGrams, paired_grams
from onnxprune.sparsity.layers import SparseLayer
from onnxprune.sparsity.options import SparsifyOptions

Samples = dict[str, np.ndarray]
RANDOM_FEEDS = 4  # seeded random feeds for the fidelity when there is no calibration data


def calibration(model: onnx.ModelProto, options: SparsifyOptions) -> tuple[Samples, Samples] | None:
    """(fit, held-out) samples from ``options.calib``, checked against the model's inputs; None without."""
    if options.calib is None:
        return None
    if isinstance(options.calib, Mapping):
        specs = data._free_batch(inputs._graph_inputs(model))
        missing = [spec.name for spec in specs if spec.name not in options.calib]
        if missing:
            raise ModelLoadError(f"calibration samples lack input {missing[0]!r}")
        samples = data._checked(dict(options.calib), specs, "calibration samples")
    else:
        samples = data.load_calibration(options.calib, model)
    return data.split_holdout(samples, options.holdout)


def feeds(model: onnx.ModelProto, samples: Mapping[str, np.ndarray], batch: int) -> Iterator[Samples]:
    """Batches of ``samples``; a model with a static batch gets exactly that many (the rest is dropped)."""
    fixed = data.static_batch(model)
    for chunk in data.batches(samples, fixed or batch):
        if fixed is None or data.count(chunk) == fixed:
            yield chunk


def layer_grams(
    model: onnx.ModelProto,
    layers: Sequence[SparseLayer],
    fit: Samples | None,
    held: Samples | None,
    batch: int,
    original: onnx.ModelProto | None = None,
) -> dict[str, tuple[LayerGrams, LayerGrams]]:
    """Node name → (Grams on the fit samples, on the held-out samples); empty without data. With
    ``original``, the cross Grams against the original model's inputs too (``gram.LayerGrams``)."""
    if fit is None or held is None or not layers:
        return {}
    on_fit = paired_grams(model, layers, feeds(model, fit, batch), original)
    on_held = paired_grams(model, layers, feeds(model, held, batch), original)
    return {name: (found, on_held[name]) for name, found in on_fit.items()}


def fidelity(
    original: onnx.ModelProto,
    sparse: onnx.ModelProto,
    held: Samples | None,
    batch: int,
    shapes: Mapping[str, tuple[int, ...]] | None = None,
) -> dict[str, Any]:
    """Original vs 2:4 per output (max abs/rel error, cosine, top-1 agreement), and on what data (random
    feeds of ``shapes`` without held-out samples)."""
    if held is not None:
        chosen = list(feeds(original, held, batch))
        where = f"held-out calibration samples ({sum(data.count(f) for f in chosen)})"
    else:
        chosen = inputs.make_inputs(original, iterations=RANDOM_FEEDS, seed=0, shapes=shapes)
        where = f"seeded random inputs ({RANDOM_FEEDS} feeds)"
    comparison = verify.compare(original, sparse, feeds=chosen)
    return {"data": where, "outputs": comparison.to_dict()["outputs"]}
