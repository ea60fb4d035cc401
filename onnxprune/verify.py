"""verify: does the pruned model compute what it should?

Two questions, answered apart. :func:`exactness`: is the surgery exact, i.e. does the pruned model match the
masked reference (the original with the removed channels zeroed)? :func:`compare` (and :func:`check_models`
behind ``onnxprune check``): how much did pruning change the outputs?

Both run the models' ONNX Runtime CPU sessions one feed at a time and keep running statistics rather than
outputs; :func:`exact_and_change` answers both in one pass, each model run once per feed, and can expose
intermediate tensors beside the outputs for a caller (the per-layer errors of compensation).
:func:`compare_runners` streams Polygraphy's ``Comparator`` over other runners (TensorRT). Sessions are run
directly, not as Polygraphy runners: Polygraphy asks of every array whether it is a torch tensor, which
imports torch wherever it is installed (3 s). Feeds come from :func:`make_inputs`: seeded random data, or the
user's ``.npz`` / Polygraphy ``--save-inputs`` JSON.

CheckTolerances, with ``a`` the reference and ``b`` the candidate, over all elements of all iterations:

- ``compare``, element-wise like ``numpy.isclose(b, a)``: ``|a - b| <= atol + rtol * |a|`` everywhere.
- ``exactness``, scale-aware: ``max|a - b| <= atol + rtol * max|a|`` per output. Float32 rounding is relative
  to the magnitudes summed, which the output's scale tracks; an element-wise relative check flakes wherever an
  element happens to sit near zero.

``max_rel_err`` is scale-relative in both: ``max|a - b| / max(max|a|, tiny)``. NaN always fails.

Errors: a missing or unreadable model or data file, or data that does not fit the model's inputs, is a
``ModelLoadError``; a malformed ``--shape`` a ``UsageError``; a model ONNX Runtime cannot build or run a
``ValidationError``; two models with different inputs a ``VerificationError``. A comparison that fails is
returned, not raised.
"""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeAlias

import numpy as np
import onnx
from google.protobuf.message import DecodeError

from onnxprune import files
from onnxprune.errors import ModelLoadError, ValidationError, VerificationError, first_line
from onnxprune.evidence import input_sensitivity, original_must_run
from onnxprune.inputs import (  # make_inputs: re-exported for callers of verify
    Shape,
    fmt_dims,
    make_inputs,  # noqa: F401
    parse_shapes,
    prepare_feeds,
    quiet_polygraphy,
)
from onnxprune.progress import steps as progress_steps
from onnxprune.runtime import ort_session
from onnxprune.text import number
from onnxprune.tolerances import (  # noqa: F401 - the noise constants are part of verify's vocabulary
    CHECK,
    EXACT,
    MIN_SENSITIVITY,
    NOISE_CAP,
    NOISE_FACTOR,
    CheckTolerances,
)

if TYPE_CHECKING:
    import onnxruntime
    from rich.table import Table

    # A model, its path, or a session already made for it (onnxruntime has no type hints: Any).
    Model: TypeAlias = onnx.ModelProto | str | Path | Any


# float32's tiny keeps max|a-b| / tiny finite in float64 for any float32 output.
_TINY = float(np.finfo(np.float32).tiny)


def max_relative_error(a: np.ndarray, b: np.ndarray) -> float:
    """``max|a - b| / max(max|a|, tiny)``: the error relative to the reference ``a``'s scale."""
    err, scale = _error_and_scale(a, b)
    return err / max(scale, _TINY)


def assert_close_relative(
    a: np.ndarray, b: np.ndarray, rtol: float = EXACT.rtol, atol: float = EXACT.atol, name: str = "output"
) -> None:
    """Asserts ``max|a - b| <= atol + rtol * max|a|``, the criterion of :func:`exactness`."""
    err, scale = _error_and_scale(a, b)
    if not err <= atol + rtol * scale:  # `not <=` so that NaN fails
        raise AssertionError(
            f"{name}: max|a-b| = {err:.3g} > {atol:g} + {rtol:g} * max|a| ({scale:.3g}); "
            f"relative error {err / max(scale, _TINY):.3g}"
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
        return {"passed": self.passed, **_jsonable(asdict(self))}


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _jsonable(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(item) for item in value]
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    return value


@dataclass
class _Running:
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
        cosines = dot[checked] / np.sqrt(ref_sq[checked] * np.maximum(cand_sq[checked], _TINY))
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
        rel = self.max_abs / max(self.max_ref, _TINY)
        cosine = _cosine(self.dot, self.ref_sq, self.cand_sq)
        return OutputMetrics(
            self.name, *self.shapes, self.max_abs, rel, cosine, top1, passed, None if passed else reason,
            noise=noise, allowed=allowed, channel_cosine=self.channel_cosine(),
        )  # fmt: skip


def _cosine(dot: float, ref_sq: float, cand_sq: float) -> float:
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


def _accumulate(running: dict[str, _Running], ref: Any, cand: Any, tol: CheckTolerances) -> None:
    for name, array in ref.items():
        stats = running.setdefault(name, _Running(name))
        if name in cand:
            stats.add(np.asarray(array), np.asarray(cand[name]), tol)
        else:
            stats.problem = "missing from the candidate"
    for name in cand:
        if name not in ref:
            running.setdefault(name, _Running(name)).problem = "missing from the reference"


def compare(
    reference: Model,
    candidate: Model,
    *,
    feeds: Sequence[Mapping[str, np.ndarray]],
    atol: float = CHECK.atol,
    rtol: float = CHECK.rtol,
    tolerances: CheckTolerances | None = None,
    progress: bool = False,
) -> Comparison:
    """Runs both models on ``feeds``; an output passes if ``|a - b| <= atol + rtol * |a|`` everywhere.

    ``tolerances`` (per-output values, Polygraphy's "fail only if both are exceeded" rule) replaces
    ``atol`` and ``rtol``. Outputs are matched by name; one whose shapes differ, or that only one model has,
    fails with a reason. Pass paths rather than protos for models over 2 GB. ``progress`` draws a bar on
    stderr.
    """
    tol = tolerances or CheckTolerances(atol, rtol)
    return _compare(reference, candidate, feeds, tol, "elementwise", progress)


def exactness(
    masked_reference: Model,
    pruned: Model,
    *,
    feeds: Sequence[Mapping[str, np.ndarray]],
    rtol: float = EXACT.rtol,
    atol: float = EXACT.atol,
    progress: bool = False,
) -> Comparison:
    """Is the surgery exact? Per output, ``max|a - b| <= max(atol + rtol * max|a|, noise bound)``.

    ``a`` is the masked reference. The noise bound is ``NOISE_FACTOR`` times the float32 noise floor, the
    largest difference between the masked reference run with and without ONNX Runtime's graph
    optimisations (the same math summed in another order), capped at ``NOISE_CAP * max|a|``: deep nets and
    Softmax/LayerNorm amplify rounding far beyond a fixed 1e-5. Each output also gets its input
    sensitivity (see :mod:`onnxprune.evidence`). ``atol`` only matters for outputs that are (nearly) all
    zero.
    """
    exact, _ = exact_and_change(
        masked_reference, pruned, None, feeds=feeds, rtol=rtol, atol=atol, progress=progress
    )
    return exact


def exact_and_change(
    masked_reference: Model,
    pruned: Model,
    original: Model | None,
    *,
    feeds: Sequence[Mapping[str, np.ndarray]],
    rtol: float = EXACT.rtol,
    atol: float = EXACT.atol,
    progress: bool = False,
    taps: Mapping[str, Sequence[str]] | None = None,
    observers: Mapping[str, Callable[[], onnx.ModelProto]] | None = None,
    visit: Callable[[dict[str, dict[str, np.ndarray]]], None] | None = None,
) -> tuple[Comparison, Comparison | None]:
    """Both questions in one pass over ``feeds``: :func:`exactness` (pruned vs masked reference) and, with
    an ``original``, :func:`compare` (pruned vs original), each model run once per feed.

    ``taps`` (role -> tensor names) exposes intermediate tensors beside the outputs, never compared: role
    ``"masked"`` in the masked reference's noise-floor run (no graph optimisations, so exposing a tensor
    changes nothing there), ``"original"`` in the original's, and one per ``observers`` model (role ->
    a function making it; run on each feed only for its taps). ``visit(role -> {name: array})`` gets
    every feed's tapped tensors, valid only during the call. Only protos under 2 GB may be tapped.
    """
    if not feeds:
        raise ValueError("verification needs at least one feed")
    taps, observers = taps or {}, observers or {}
    runners: dict[str, _Run] = {}
    # Observers first, while least is held: each one's model is made, started and dropped before the next.
    # They are read only for their taps: unoptimised sessions start sooner and hold no prepacked weights.
    for role, make in observers.items():
        runners[role] = _tapping_runner(make(), role, taps.get(role, ()), optimize=False)
    if original is not None:
        runners["original"] = _tapping_runner(original, "original", taps.get("original", ()), True)
    runners.update(_masked_runs(masked_reference, taps.get("masked", ())))
    runners["candidate"] = _tapping_runner(pruned, "candidate", (), True)
    sessions = {role: run.session for role, run in runners.items()}
    _check_inputs([sessions["reference"], sessions["candidate"]], feeds)
    if original is not None:
        _check_inputs([sessions["original"], sessions["candidate"]], feeds)
    exact = _Question("reference", "candidate", CheckTolerances(atol, rtol), "scale", noise="noise")
    change = _Question("original", "candidate", CheckTolerances(CHECK.atol, CHECK.rtol), "elementwise")
    questions = [exact] + ([change] if original is not None else [])
    first: dict[str, np.ndarray] = {}

    def seen(outputs: dict[str, dict[str, np.ndarray]]) -> None:
        if not first:  # the reference's first outputs: input sensitivity needs no second run of them
            first.update(outputs["reference"])  # ONNX Runtime returns new arrays each run
        if visit is not None:
            # The masked reference's taps come from its noise-floor run.
            tapped = {role: run.tapped for role, run in runners.items() if run.taps}
            visit({"masked" if role == "noise" else role: values for role, values in tapped.items()})

    _stream(runners, feeds, questions, progress, seen)
    result = exact.result(len(feeds))
    input_sensitivity(sessions["reference"], feeds, result, first=first)
    return result, change.result(len(feeds)) if original is not None else None


def _masked_runs(model: Model, taps: Sequence[str]) -> dict[str, _Run]:
    """The masked reference, optimised, and its noise-floor run (no optimisations) with ``taps``: a proto
    is serialised once for both."""
    if not taps or not isinstance(model, onnx.ModelProto) or files.needs_external_data(model):
        return {
            "reference": _tapping_runner(model, "reference", (), True),
            "noise": _tapping_runner(model, "reference", taps, False),
        }
    data = model.SerializeToString()
    reference = _Run(model_session(data, "reference"))
    # Protobuf reads a message field that appears twice as the merge of both, repeated fields appended:
    # the bytes followed by a ModelProto holding only the added outputs are the model with those outputs.
    taps, added = _added(model, taps)
    extra = onnx.ModelProto(graph=onnx.GraphProto(output=[onnx.ValueInfoProto(name=n) for n in added]))
    noise = model_session(data + extra.SerializeToString(), "reference", optimize=False)
    return {"reference": reference, "noise": _Run(noise, taps=taps, added=set(added))}


def _tapping_runner(model: Any, which: str, taps: Sequence[str], optimize: bool) -> _Run:
    """A run of ``model`` whose session also outputs ``taps`` (a proto's tensors)."""
    if not taps:
        return _Run(model_session(model, which, optimize=optimize))
    if not isinstance(model, onnx.ModelProto) or files.needs_external_data(model):
        raise TypeError(f"only an ONNX model under 2 GB can expose tensors, not {type(model).__name__}")
    taps, added = _added(model, taps)
    # Outputs added for as long as it takes to serialise: a copy of the model would cost its weights again.
    model.graph.output.extend(onnx.ValueInfoProto(name=name) for name in added)
    try:
        data = model.SerializeToString()
    finally:
        del model.graph.output[len(model.graph.output) - len(added) :]
    return _Run(model_session(data, which, optimize=optimize), taps=taps, added=set(added))


def _added(model: onnx.ModelProto, taps: Sequence[str]) -> tuple[list[str], list[str]]:
    """``taps`` without repeats, and those of them that are not already graph outputs."""
    taps = list(dict.fromkeys(taps))
    outputs = {o.name for o in model.graph.output}
    return taps, [name for name in taps if name not in outputs]


@dataclass
class _Run:
    """An ONNX Runtime session run on each feed: its outputs, the ``added`` ones kept aside as ``tapped``.

    Run directly rather than as Polygraphy runners: Polygraphy asks of every feed and output whether it is
    a torch tensor, which imports torch wherever it is installed (3 s of a ResNet-50 verification).
    """

    session: Any
    taps: list[str] = field(default_factory=list)
    added: set[str] = field(default_factory=set)
    tapped: dict[str, np.ndarray] = field(default_factory=dict)

    def __call__(self, feed: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        names = [node.name for node in self.session.get_outputs()]
        values = dict(zip(names, self.session.run(names, dict(feed)), strict=True))
        self.tapped = {name: values[name] for name in self.taps}
        return {name: value for name, value in values.items() if name not in self.added}


def _compare(
    reference: Model,
    candidate: Model,
    feeds: Sequence[Mapping[str, Any]],
    tol: CheckTolerances,
    criterion: str,
    progress: bool,
) -> Comparison:
    if not feeds:
        raise ValueError("compare needs at least one feed")
    sessions = [model_session(reference, "reference"), model_session(candidate, "candidate")]
    _check_inputs(sessions, feeds)
    question = _Question("reference", "candidate", tol, criterion)
    runs = {"reference": _Run(sessions[0]), "candidate": _Run(sessions[1])}
    _stream(runs, feeds, [question], progress)
    return question.result(len(feeds))


def compare_runners(
    reference: Any,
    candidate: Any,
    feeds: Sequence[Mapping[str, Any]],
    *,
    atol: float = 1e-5,
    rtol: float = 1e-5,
    tolerances: CheckTolerances | None = None,
    criterion: str = "scale",
    progress: bool = False,
    noise: Any = None,
) -> Comparison:
    """Streams Polygraphy's Comparator over two runners (ONNX Runtime, TensorRT) and scores each output.

    ``noise``: a third runner computing what ``reference`` does in another order, for the noise floor.
    """
    from polygraphy.comparator import Comparator

    tol = tolerances or CheckTolerances(atol, rtol)
    question = _Question(0, 1, tol, criterion, noise=None if noise is None else 2)
    runners = [reference, candidate] + ([noise] if noise is not None else [])
    with (
        quiet_polygraphy(),
        _runtime_errors("inference failed"),
        _progress(progress, len(feeds)) as advance,
        contextlib.closing(Comparator.run(runners, data_loader=list(feeds), streaming=True)) as stream,
    ):
        for single in stream:
            # Consume now: the runners may reuse their output buffers on the next iteration.
            question.add({index: results[0] for index, (_, results) in enumerate(single)})
            advance()
    return question.result(len(feeds))


@dataclass
class _Question:
    """One comparison scored while the feeds stream: ``candidate`` against ``reference`` (runner keys),
    with the float32 noise floor from ``noise``, a rerun of the reference, where given."""

    reference: int | str
    candidate: int | str
    tol: CheckTolerances
    criterion: str
    noise: int | str | None = None
    running: dict[str, _Running] = field(default_factory=dict)

    def add(self, outputs: Mapping[Any, Mapping[str, Any]]) -> None:
        ref = outputs[self.reference]
        _accumulate(self.running, ref, outputs[self.candidate], self.tol)
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


def _stream(
    runs: Mapping[str, _Run],
    feeds: Sequence[Mapping[str, Any]],
    questions: Sequence[_Question],
    progress: bool,
    seen: Callable[[dict[str, dict[str, np.ndarray]]], None] | None = None,
) -> None:
    """Every run on each feed in turn; each question scores the feed's outputs (by run name), then
    ``seen`` gets them. No feed's outputs outlive the next feed."""
    with _runtime_errors("inference failed"), _progress(progress, len(feeds)) as advance:
        for feed in feeds:
            outputs = {name: run(feed) for name, run in runs.items()}
            for question in questions:
                question.add(outputs)
            if seen is not None:
                seen(outputs)
            advance()


def model_session(model: Model, which: str, optimize: bool = True) -> onnxruntime.InferenceSession:
    """A session for ``model``; a session given is used as it is (verification reuses them)."""
    if hasattr(model, "get_inputs"):
        return model  # type: ignore[return-value]
    # runtime.ort_session, not Polygraphy's SessionFromOnnx: it serialises the model, which fails past 2 GB.
    # Each session runs once per feed, one after another: threads past the cores this process may use only
    # contend, and spinning between runs burns what the next session needs (ResNet-50 on 2 cores: a run
    # takes 0.17 s with 2 sleeping threads, 0.48 s with 4 spinning ones).
    with _runtime_errors(f"cannot load the {which} model"):
        return ort_session(model, threads=_THREADS, optimize=optimize, spin=False)


_THREADS = min(4, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)


def _check_inputs(sessions: list[Any], feeds: Sequence[Mapping[str, Any]]) -> None:
    """Same input names, types and static dims, said in one line: otherwise ONNX Runtime fails mid-run on
    a misnamed or mis-shaped input with a message about the feed, not about the two models."""
    ref, cand = ({i.name: i for i in sess.get_inputs()} for sess in sessions)
    if sorted(ref) != sorted(cand):
        raise VerificationError(
            f"the models take different inputs: {', '.join(sorted(ref))} vs {', '.join(sorted(cand))}"
        )
    for name, a in ref.items():
        b = cand[name]
        if a.type != b.type or not _dims_agree(a.shape, b.shape):
            raise VerificationError(
                f"the models take different inputs: {name} is {_describe(a)} in the reference, "
                f"{_describe(b)} in the other; give each model the data it takes and compare elsewhere"
            )
    for index, feed in enumerate(feeds):
        if sorted(feed) != sorted(ref):
            raise VerificationError(
                f"feed {index} has inputs {', '.join(sorted(feed))}, not {', '.join(sorted(ref))}"
            )


def _dims_agree(a: Sequence[Any] | None, b: Sequence[Any] | None) -> bool:
    if a is None or b is None:
        return True
    return len(a) == len(b) and all(
        not (isinstance(x, int) and isinstance(y, int)) or x == y for x, y in zip(a, b, strict=True)
    )


def _describe(arg: Any) -> str:
    dims = "?" if arg.shape is None else fmt_dims([d if isinstance(d, int) else "?" for d in arg.shape])
    return f"{arg.type.removeprefix('tensor(').removesuffix(')')} {dims}"


@contextlib.contextmanager
def _runtime_errors(what: str) -> Iterator[None]:
    """Turns ONNX Runtime's and Polygraphy's exceptions into a one-line ``ValidationError``."""
    from onnxruntime.capi import onnxruntime_pybind11_state as ort_state
    from polygraphy.exception import PolygraphyException

    # ONNX Runtime's exceptions share no base class below Exception.
    ort_errors = tuple(
        v for v in vars(ort_state).values() if isinstance(v, type) and issubclass(v, Exception)
    )
    try:
        yield
    except (PolygraphyException, *ort_errors) as err:
        raise ValidationError(f"ONNX Runtime: {what}: {first_line(err)}") from err


@contextlib.contextmanager
def _progress(enabled: bool, total: int) -> Iterator[Callable[[], None]]:
    # stderr, so that `check --json` keeps stdout clean; only on a terminal.
    with progress_steps("comparing", total=total, enabled=enabled) as step:
        step("")
        yield lambda: step("")


def check_models(
    original_path: str | Path,
    other_path: str | Path,
    *,
    inputs: str | Path | None = None,
    iterations: int | None = None,
    seed: int = 0,
    atol: float = CHECK.atol,
    rtol: float = CHECK.rtol,
    tolerances: CheckTolerances | None = None,
    shapes: Sequence[str] = (),
    progress: bool = False,
) -> Comparison:
    """``onnxprune check``: compares ``other_path`` with ``original_path`` as :func:`compare` does.

    Feeds are made from the original's inputs; the models run from their paths, so external data works. A
    failed comparison is returned, not raised: the caller decides the exit code. The result's ``inputs``
    and ``notes`` say what was fed (shapes, random or the user's data) and what was chosen for the user.
    """
    original = load_model_header(original_path)
    load_model_header(other_path)  # a missing or corrupt file is a ModelLoadError now, not an ORT error later
    tol = tolerances or CheckTolerances(atol, rtol)
    tol.check_names(o.name for o in original.graph.output)
    shape_map = parse_shapes(shapes)
    fed = prepare_feeds(original, iterations=iterations, seed=seed, shapes=shape_map, inputs_path=inputs)
    with original_must_run(original_path, fed):
        result = compare(original_path, other_path, feeds=fed.feeds, tolerances=tol, progress=progress)
    result.inputs, result.notes = fed.to_dict(), list(fed.notes)
    if fed.source == "random":
        result.notes.append("compared on random N(0,1) data only: pass real samples with --inputs FILE.npz")
    return result


def load_model_header(path: str | Path) -> onnx.ModelProto:
    """Loads a model without its external data (enough for its inputs), or raises ``ModelLoadError``."""
    try:
        return onnx.load(str(path), load_external_data=False)
    except FileNotFoundError as err:
        raise ModelLoadError(f"model not found: {path}") from err
    except (OSError, DecodeError, ValueError) as err:
        raise ModelLoadError(f"cannot read {path} as an ONNX model: {first_line(err)}") from err


def render_comparison(comparison: Comparison, title: str = "") -> Table:
    """A rich table, one row per output: shape, max abs, max rel, cosine, top-1, result."""
    from rich.table import Table
    from rich.text import Text

    table = Table(title=title or None, caption=_criterion_text(comparison))
    for column in ("output", "shape", "max abs", "max rel", "cosine", "top-1", "result"):
        if column in ("output", "shape", "result"):
            table.add_column(column, overflow="fold")
        else:  # a number split over two lines at 80 columns reads as two numbers
            table.add_column(column, justify="right", no_wrap=True)
    for out in comparison.outputs:
        shape = out.reference_shape or out.candidate_shape
        top1 = None if out.top1_agreement is None else 100 * out.top1_agreement
        table.add_row(
            Text(out.name),  # Text, so that a name like "[logits]" is not read as markup
            "-" if shape is None else fmt_dims(shape),
            number(out.max_abs_err, ".3g"),
            number(out.max_rel_err, ".3g"),
            number(out.cosine, ".6f"),
            number(top1, ".1f"),
            Text("pass", style="green") if out.passed else Text(f"FAIL: {out.reason}", style="red"),
        )
    return table


def _criterion_text(comparison: Comparison) -> str:
    tol = f"{comparison.atol:g} + {comparison.rtol:g}"
    scale = comparison.criterion == "scale"
    rule = f"max|a-b| <= {tol} * max|a|" if scale else f"|a-b| <= {tol} * |a| everywhere"
    return f"a = reference; pass if {rule}; {comparison.iterations} iteration(s); top-1 in %"
