"""The comparisons: :func:`compare` (how much did pruning change the outputs?), :func:`exactness` (is the
surgery exact: does the pruned model match its masked reference?), both in one pass by
:func:`exact_and_change`, and :func:`compare_runners`, which streams Polygraphy's Comparator over other
runners (TensorRT). A comparison that fails is returned, not raised."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import onnx

from onnxprune.evidence import input_sensitivity
from onnxprune.inputs import quiet_polygraphy
from onnxprune.progress import steps as progress_steps
from onnxprune.tolerances import CHECK, EXACT, CheckTolerances
from onnxprune.verify.metrics import Comparison, Question
from onnxprune.verify.sessions import (
    Model,
    Run,
    check_inputs,
    masked_runs,
    model_session,
    runtime_errors,
    tapping_run,
)


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
    runners: dict[str, Run] = {}
    # Observers first, while least is held: each one's model is made, started and dropped before the next.
    # They are read only for their taps: unoptimised sessions start sooner and hold no prepacked weights.
    for role, make in observers.items():
        runners[role] = tapping_run(make(), role, taps.get(role, ()), optimize=False)
    if original is not None:
        runners["original"] = tapping_run(original, "original", taps.get("original", ()), True)
    runners.update(masked_runs(masked_reference, taps.get("masked", ())))
    runners["candidate"] = tapping_run(pruned, "candidate", (), True)
    sessions = {role: run.session for role, run in runners.items()}
    check_inputs([sessions["reference"], sessions["candidate"]], feeds)
    if original is not None:
        check_inputs([sessions["original"], sessions["candidate"]], feeds)
    exact = Question("reference", "candidate", CheckTolerances(atol, rtol), "scale", noise="noise")
    change = Question("original", "candidate", CheckTolerances(CHECK.atol, CHECK.rtol), "elementwise")
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
    check_inputs(sessions, feeds)
    question = Question("reference", "candidate", tol, criterion)
    runs = {"reference": Run(sessions[0]), "candidate": Run(sessions[1])}
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
    question = Question(0, 1, tol, criterion, noise=None if noise is None else 2)
    runners = [reference, candidate] + ([noise] if noise is not None else [])
    with (
        quiet_polygraphy(),
        runtime_errors("inference failed"),
        _progress(progress, len(feeds)) as advance,
        contextlib.closing(Comparator.run(runners, data_loader=list(feeds), streaming=True)) as stream,
    ):
        for single in stream:
            # Consume now: the runners may reuse their output buffers on the next iteration.
            question.add({index: results[0] for index, (_, results) in enumerate(single)})
            advance()
    return question.result(len(feeds))


def _stream(
    runs: Mapping[str, Run],
    feeds: Sequence[Mapping[str, Any]],
    questions: Sequence[Question],
    progress: bool,
    seen: Callable[[dict[str, dict[str, np.ndarray]]], None] | None = None,
) -> None:
    """Every run on each feed in turn; each question scores the feed's outputs (by run name), then
    ``seen`` gets them. No feed's outputs outlive the next feed."""
    with runtime_errors("inference failed"), _progress(progress, len(feeds)) as advance:
        for feed in feeds:
            outputs = {name: run(feed) for name, run in runs.items()}
            for question in questions:
                question.add(outputs)
            if seen is not None:
                seen(outputs)
            advance()


@contextlib.contextmanager
def _progress(enabled: bool, total: int) -> Iterator[Callable[[], None]]:
    # stderr, so that `check --json` keeps stdout clean; only on a terminal.
    with progress_steps("comparing", total=total, enabled=enabled) as step:
        step("")
        yield lambda: step("")
