"""Metrics of a comparison: running statistics per output (so no iteration's outputs are kept), the
scale-aware and element-wise criteria, cosine similarity (whole output and per channel) and top-1 agreement.

With ``a`` the reference and ``b`` the candidate, over all elements of all iterations:

- element-wise (``compare``), like ``numpy.isclose(b, a)``: ``|a - b| <= atol + rtol * |a|`` everywhere;
- scale-aware (``exactness``): ``max|a - b| <= atol + rtol * max|a|`` per output. Float32 rounding is
  relative to the magnitudes summed, which the output's scale tracks; an element-wise relative check flakes
  wherever an element happens to sit near zero.

``max_rel_err`` is scale-relative in both: ``max|a - b| / max(max|a|, tiny)``. NaN always fails.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np

from onnxprune.inputs import Shape, fmt_dims
from onnxprune.tolerances import EXACT, NOISE_CAP, NOISE_FACTOR, CheckTolerances

# float32's tiny keeps max|a-b| / tiny finite in float64 for any float32 output.
TINY = float(np.finfo(np.float32).tiny)


def max_relative_error(a: np.ndarray, b: np.ndarray) -> float:
    """``max|a - b| / max(max|a|, tiny)``: the error relative to the reference ``a``'s scale."""
    err, scale = _error_and_scale(a, b)
    return err / max(scale, TINY)


def assert_close_relative(
    a: np.ndarray, b: np.ndarray, rtol: float = EXACT.rtol, atol: float = EXACT.atol, name: str = "output"
) -> None:
    """Asserts ``max|a - b| <= atol + rtol * max|a|``, the criterion of :func:`exactness`."""
    err, scale = _error_and_scale(a, b)
    if not err <= atol + rtol * scale:  # `not <=` so that NaN fails
        raise AssertionError(
            f"{name}: max|a-b| = {err:.3g} > {atol:g} + {rtol:g} * max|a| ({scale:.3g}); "
            f"relative error {err / max(scale, TINY):.3g}"
        )


def _error_and_scale(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    a64, b64 = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a64.shape != b64.shape:
        raise ValueError(f"shapes differ: {a64.shape} vs {b64.shape}")
    if a64.size == 0:
        return 0.0, 0.0
    return float(np.max(np.abs(a64 - b64))), float(np.max(np.abs(a64)))


@dataclass
class OutputMetrics:
    """One output. The errors are None when the shapes differ; ``reason`` says why the output failed."""

    name: str
    reference_shape: Shape | None
    candidate_shape: Shape | None
    max_abs_err: float | None
    max_rel_err: float | None
    cosine: float | None
    top1_agreement: float | None  # only for [N, K >= 2] class scores
    passed: bool
    reason: str | None = None
    # Exactness only: the float32 noise floor (max|a - a'| with a' the reference run without ONNX Runtime's
    # graph optimisations), the bound max|a-b| was tested against, and the input sensitivity.
    noise: float | None = None
    allowed: float | None = None
    sensitivity: float | None = None
    error_per_change: float | None = None
    # The least cosine over the channels (axis 1) of a feature map that carry at least CHANNEL_ENERGY of the
    # mean channel's energy: a whole output's cosine barely notices one channel negated or zeroed of many.
    channel_cosine: float | None = None


@dataclass
class Comparison:
    """Per-output metrics of a reference/candidate run. ``criterion`` is ``elementwise`` or ``scale``."""

    outputs: list[OutputMetrics]
    atol: float
    rtol: float
    criterion: str
    iterations: int
    mode: str = "sum"
    per_output: dict[str, list[float]] = field(default_factory=dict)
    inputs: dict[str, Any] = field(default_factory=dict)  # what was fed: inputs.Feeds.to_dict()
    notes: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return all(output.passed for output in self.outputs)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON values: tuples become lists, NaN and inf become None."""
        return {"passed": self.passed, **jsonable(asdict(self))}


def jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: jsonable(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(item) for item in value]
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    return value


@dataclass
class Running:
    """Running statistics of one output, so that no iteration's outputs need to be kept."""

    name: str
    shapes: tuple[Shape | None, Shape | None] = (None, None)
    problem: str | None = None
    max_abs: float = 0.0
    max_ref: float = 0.0
    dot: float = 0.0
    ref_sq: float = 0.0
    cand_sq: float = 0.0
    outside: int = 0
    elements: int = 0
    agree: int = 0
    rows: int = 0
    noise: float = 0.0
    channels: np.ndarray | None = None  # per channel (axis 1): dot, |a|^2, |b|^2

    def add_noise(self, ref: np.ndarray, again: np.ndarray) -> None:
        if ref.shape == again.shape and ref.size:
            diff = np.abs(ref.astype(np.float64) - again.astype(np.float64))
            self.noise = float(np.max([self.noise, diff.max()]))

    def add(self, ref: np.ndarray, cand: np.ndarray, tol: CheckTolerances) -> None:
        if self.shapes == (None, None):
            self.shapes = (tuple(ref.shape), tuple(cand.shape))
        if ref.shape != cand.shape:
            self.problem = self.problem or f"shape {fmt_dims(ref.shape)} vs {fmt_dims(cand.shape)}"
        if self.problem or ref.size == 0:
            return
        a, b = ref.astype(np.float64).ravel(), cand.astype(np.float64).ravel()
        diff = np.abs(a - b)
        # np.max, not max(): NaN must reach the report.
        self.max_abs = float(np.max([self.max_abs, diff.max()]))
        self.max_ref = float(np.max([self.max_ref, np.abs(a).max()]))
        self.dot += float(a @ b)
        self.ref_sq += float(a @ a)
        self.cand_sq += float(b @ b)
        self.outside += int(np.count_nonzero(~tol.close(self.name, diff, a)))
        self.elements += a.size
        if ref.ndim == 2 and ref.shape[1] >= 2:
            self.agree += int(np.count_nonzero(ref.argmax(-1) == cand.argmax(-1)))
            self.rows += ref.shape[0]
        self._add_channels(ref, cand)

    def _add_channels(self, ref: np.ndarray, cand: np.ndarray) -> None:
        # Feature maps only: a class score is one number per sample, whose "cosine" is just its sign.
        if ref.ndim < 3 or ref.shape[1] < 2 or ref.size // ref.shape[1] < CHANNEL_VALUES:
            return
        a = np.moveaxis(ref, 1, 0).reshape(ref.shape[1], -1).astype(np.float64)
        b = np.moveaxis(cand, 1, 0).reshape(ref.shape[1], -1).astype(np.float64)
        sums = np.stack([(a * b).sum(1), (a * a).sum(1), (b * b).sum(1)])
        if self.channels is None or self.channels.shape != sums.shape:
            self.channels = np.zeros_like(sums)
        self.channels += sums

    def channel_cosine(self) -> float | None:
        if self.channels is None:
            return None
        dot, ref_sq, cand_sq = self.channels
        checked = ref_sq >= CHANNEL_ENERGY * ref_sq.mean()
        if not checked.any() or ref_sq.mean() == 0:
            return None
        cosines = dot[checked] / np.sqrt(ref_sq[checked] * np.maximum(cand_sq[checked], TINY))
        return float(np.clip(cosines.min(), -1.0, 1.0))

    def metrics(self, tol: CheckTolerances, criterion: str) -> OutputMetrics:
        atol, rtol = tol.of(self.name)
        if self.problem:
            return OutputMetrics(self.name, *self.shapes, None, None, None, None, False, self.problem)
        noise = allowed = None
        if criterion == "scale":
            floor = atol + rtol * self.max_ref
            noise, allowed = self.noise, max(floor, min(NOISE_FACTOR * self.noise, NOISE_CAP * self.max_ref))
            passed = self.max_abs <= allowed
            reason = (
                f"max|a-b| {self.max_abs:.3g} > {allowed:.3g}, the larger of {atol:g} + {rtol:g} * max|a| "
                f"({self.max_ref:.3g}) and {NOISE_FACTOR:g} x the float32 noise floor {self.noise:.3g}"
            )
        else:
            passed = self.outside == 0
            reason = f"{self.outside} of {self.elements} values {tol.rule(self.name)}"
        top1 = self.agree / self.rows if self.rows else None
        rel = self.max_abs / max(self.max_ref, TINY)
        cosine = cosine_of(self.dot, self.ref_sq, self.cand_sq)
        return OutputMetrics(
            self.name, *self.shapes, self.max_abs, rel, cosine, top1, passed, None if passed else reason,
            noise=noise, allowed=allowed, channel_cosine=self.channel_cosine(),
        )  # fmt: skip


def cosine_of(dot: float, ref_sq: float, cand_sq: float) -> float:
    if ref_sq == 0 or cand_sq == 0:
        return 1.0 if ref_sq == cand_sq else 0.0
    # np.clip, not min/max: rounding may overshoot 1, and NaN must survive.
    return float(np.clip(dot / (math.sqrt(ref_sq) * math.sqrt(cand_sq)), -1.0, 1.0))


# Checked channel by channel: outputs of at least this many values per channel and feed (N, C, spatial).
CHANNEL_VALUES = 16


# Channels below this share of the mean channel's energy (1% of its RMS) are not checked on their own: at
# reduced precision a near-zero channel may flip sign and change nothing.
CHANNEL_ENERGY = 1e-4


# A channel negated (-1), zeroed (0) or scrambled fails; FP16 keeps a checked channel's cosine near 1.
MIN_CHANNEL_COSINE = 0.9


def cosine_floor(output: OutputMetrics, min_cosine: float | None) -> OutputMetrics:
    """Fail a passing output whose cosine similarity is below ``min_cosine`` (None: no floor), or one of
    whose channels points elsewhere (cosine below MIN_CHANNEL_COSINE, see OutputMetrics.channel_cosine)."""
    # Written so that a NaN cosine fails.
    if min_cosine is None or not output.passed:
        return output
    if not (output.cosine is not None and output.cosine >= min_cosine):
        return replace(output, passed=False, reason=f"cosine similarity {output.cosine:.6f} < {min_cosine}")
    worst = output.channel_cosine
    if worst is not None and not worst >= MIN_CHANNEL_COSINE:
        reason = f"a channel's cosine {worst:.4f} < {MIN_CHANNEL_COSINE} (the output's {output.cosine:.6f})"
        return replace(output, passed=False, reason=reason)
    return output


def accumulate(running: dict[str, Running], ref: Any, cand: Any, tol: CheckTolerances) -> None:
    for name, array in ref.items():
        stats = running.setdefault(name, Running(name))
        if name in cand:
            stats.add(np.asarray(array), np.asarray(cand[name]), tol)
        else:
            stats.problem = "missing from the candidate"
    for name in cand:
        if name not in ref:
            running.setdefault(name, Running(name)).problem = "missing from the reference"


@dataclass
class Question:
    """One comparison scored while the feeds stream: ``candidate`` against ``reference`` (runner keys),
    with the float32 noise floor from ``noise``, a rerun of the reference, where given."""

    reference: int | str
    candidate: int | str
    tol: CheckTolerances
    criterion: str
    noise: int | str | None = None
    running: dict[str, Running] = field(default_factory=dict)

    def add(self, outputs: Mapping[Any, Mapping[str, Any]]) -> None:
        ref = outputs[self.reference]
        accumulate(self.running, ref, outputs[self.candidate], self.tol)
        if self.noise is not None:
            again = outputs[self.noise]
            for name, stats in self.running.items():
                if name in ref and name in again:
                    stats.add_noise(np.asarray(ref[name]), np.asarray(again[name]))

    def result(self, iterations: int) -> Comparison:
        tol = self.tol
        metrics = [stats.metrics(tol, self.criterion) for stats in self.running.values()]
        return Comparison(
            metrics, atol=float(tol.atol), rtol=float(tol.rtol), criterion=self.criterion,
            iterations=iterations, mode=tol.mode,
            per_output={n: list(tol.of(n)) for n in {*tol.atol_by_output, *tol.rtol_by_output}},
        )  # fmt: skip
