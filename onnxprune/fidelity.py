"""Fidelity: how much of the original's behaviour a pruned model keeps on real inputs, per output kind.

Each output is read as one of three kinds, from its shape and values:

- ``classes``: ``[N, K]`` scores, K >= 2 (logits or probabilities);
- ``sequence``: ``[N, T, K]`` whose last axis holds probabilities (sums to 1): a CTC recognizer's frames;
- ``map``: anything else (feature or probability maps, boxes, regressions).

Two numbers per output:

- ``fidelity`` (the verdict; 1 = the original's behaviour, near 0 = lost): for classes and sequences,
  Cohen's kappa between the original's and the pruned model's argmax labels (over samples, or over every
  frame). Agreement above chance: a model that always answers the same class, or a recognizer that outputs
  only the CTC blank, scores about 0 however often that answer is right by itself (77% of a recognizer's
  frames are blank anyway). Plain agreement where the original itself never varies. For maps, the cosine
  similarity of the whole output.
- ``damage`` (what a search minimises; 0 = identical, smooth in small changes): the relative squared error
  ``|a - b|^2 / |a|^2``, of the whole output for maps, and for classes of the scores as logits: each row's
  log-probabilities (where the output is a softmax) centred on their mean, which are the logits up to
  that row's constant. Not the KL divergence of the probabilities: a confident classifier's softmax
  saturates, so cutting any one group moved its KL by ~1e-6 (PP-OCR's text-direction classifier), the
  search saw no difference between groups, and the cuts it chose together dropped accuracy by 18 points.
  The logits still move. One unit for every kind, so the outputs of a multi-output model add up.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

# A last axis whose values are probabilities sums to 1 within this (float32 softmax).
PROBABILITY_SUM = 1e-3
_EPS = 1e-12
# Below float32's normal range a softmax's output is 0 or denormal: its log says nothing of the logit.
PROBABILITY_FLOOR = 1e-30
# Rows of class scores are measured this many values at a time (8 MB in float64).
CHUNK_VALUES = 1 << 20


@dataclass(frozen=True)
class OutputFidelity:
    name: str
    kind: str
    fidelity: float
    damage: float
    agreement: float | None = None  # argmax agreement (classes, sequences)

    def to_dict(self) -> dict[str, Any]:
        record = {"kind": self.kind, "fidelity": _round(self.fidelity), "damage": _round(self.damage)}
        if self.agreement is not None:
            record["agreement"] = _round(self.agreement)
        return record


def output_kind(values: np.ndarray) -> str:
    """classes, sequence or map (see the module docstring)."""
    if values.ndim == 2 and values.shape[1] >= 2:
        return "classes"
    if values.ndim == 3 and values.shape[-1] >= 2 and is_distribution(values):
        return "sequence"
    return "map"


def measure(name: str, original: np.ndarray, pruned: np.ndarray) -> OutputFidelity:
    """Fidelity and damage of one output, over every sample stacked on axis 0."""
    if original.shape != pruned.shape:
        raise ValueError(f"output {name!r}: shapes differ, {original.shape} vs {pruned.shape}")
    kind = output_kind(original)
    if kind == "map":
        a, b = original.astype(np.float64).ravel(), pruned.astype(np.float64).ravel()
        return OutputFidelity(name, kind, _cosine(a, b), _relative_error(a, b))
    rows_a = original.reshape(-1, original.shape[-1])
    rows_b = pruned.reshape(-1, pruned.shape[-1])
    labels_a, labels_b = rows_a.argmax(1), rows_b.argmax(1)
    agreement = float(np.mean(labels_a == labels_b))
    damage = _class_damage(rows_a, rows_b, kind)
    return OutputFidelity(name, kind, kappa(labels_a, labels_b), damage, agreement)


def measure_all(
    original: Mapping[str, np.ndarray], pruned: Mapping[str, np.ndarray]
) -> dict[str, OutputFidelity]:
    return {name: measure(name, original[name], pruned[name]) for name in original}


def total_damage(found: Mapping[str, OutputFidelity]) -> float:
    return float(sum(f.damage for f in found.values()))


def worst_fidelity(found: Mapping[str, OutputFidelity]) -> float:
    return float(min((f.fidelity for f in found.values()), default=1.0))


def kappa(a: np.ndarray, b: np.ndarray) -> float:
    """Cohen's kappa of two labelings: agreement beyond what their label frequencies give by chance. Where
    the first labeling never varies there is no chance level to beat: plain agreement."""
    observed = float(np.mean(a == b))
    labels = np.union1d(a, b)
    freq_a = np.array([np.mean(a == k) for k in labels])
    freq_b = np.array([np.mean(b == k) for k in labels])
    chance = float(freq_a @ freq_b)
    if freq_a.max() == 1.0 or chance >= 1.0 - 1e-9:
        return observed
    return (observed - chance) / (1.0 - chance)


def _class_damage(rows_a: np.ndarray, rows_b: np.ndarray, kind: str) -> float:
    """Classes: the relative squared error of their centred logits; sequences: the mean per-frame KL.

    Summed over chunks of rows, each in float64: a recogniser's 100 held-out samples are 4,000 rows of
    18,385 classes (294 MB in float32), and the whole in float64 with its temporaries took 12x that."""
    if kind == "classes":
        error = scale = 0.0
        for a, b in _row_chunks(rows_a, rows_b):
            a, b = _centred_logits(a), _centred_logits(b)
            error, scale = error + _dot(a - b, a - b), scale + _dot(a, a)
        return _ratio(error, scale)
    total = sum(_kl_sum(_normalised(a), _normalised(b)) for a, b in _row_chunks(rows_a, rows_b))
    return total / max(len(rows_a), 1)


def _row_chunks(rows_a: np.ndarray, rows_b: np.ndarray) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """The rows of both, a chunk of ``CHUNK_VALUES`` values at a time, in float64."""
    step = max(1, CHUNK_VALUES // max(rows_a.shape[1], 1))
    for start in range(0, len(rows_a), step):
        chunk = slice(start, start + step)
        yield rows_a[chunk].astype(np.float64), rows_b[chunk].astype(np.float64)


def _centred_logits(rows: np.ndarray) -> np.ndarray:
    """Scores as logits centred per row: log-probabilities where the rows are probabilities (floored where
    float32 underflowed to 0), as they are otherwise."""
    if is_distribution(rows):
        rows = np.log(np.clip(rows, PROBABILITY_FLOOR, None))
    return rows - rows.mean(1, keepdims=True)


def is_distribution(values: np.ndarray) -> bool:
    """Non-negative rows summing to 1 along the last axis: an exported softmax."""
    if values.size == 0 or values.min() < 0:
        return False
    return bool(np.abs(values.sum(axis=-1, dtype=np.float64) - 1.0).max() <= PROBABILITY_SUM)


def _normalised(rows: np.ndarray) -> np.ndarray:
    """Probability rows kept off 0 (for the logarithm) and summing to 1 again."""
    clipped = np.clip(rows, _EPS, None)
    return clipped / clipped.sum(1, keepdims=True)


def _kl_sum(p: np.ndarray, q: np.ndarray) -> float:
    """The KL divergence of each row, summed over the rows."""
    p, q = np.clip(p, _EPS, None), np.clip(q, _EPS, None)
    return float(np.sum(np.sum(p * (np.log(p) - np.log(q)), axis=1)))


def _dot(a: np.ndarray, b: np.ndarray) -> float:
    """``a @ b`` by numpy's pairwise summation, not BLAS: a threaded BLAS dot sums in an order that depends
    on its thread count, and a Ray worker (OMP_NUM_THREADS=1) then differs from this process in the last
    bits; an evaluation must not depend on where it runs."""
    return float(np.sum(a * b))


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    norms = float(np.sqrt(_dot(a, a)) * np.sqrt(_dot(b, b)))
    if norms == 0.0:
        return 1.0 if not a.any() and not b.any() else 0.0
    return float(np.clip(_dot(a, b) / norms, -1.0, 1.0))


def _relative_error(a: np.ndarray, b: np.ndarray) -> float:
    return _ratio(_dot(a - b, a - b), _dot(a, a))


def _ratio(diff: float, scale: float) -> float:
    return diff / scale if scale > 0 else (0.0 if diff == 0 else float("inf"))


def _round(value: float) -> float:
    return float(f"{value:.6g}")
