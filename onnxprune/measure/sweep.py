"""Sweep: prune one model to a ladder of targets and measure each point against the original.

One analysis serves every point: the model is loaded, analysed, scored and counted once; each point plans
(``targets.search``), rewrites a copy of the graph, and is counted, timed (ONNX Runtime, interleaved with
the original) and compared with the original on the same feeds: cosine similarity and top-1 agreement of
the first output, and accuracy where labelled data is given (an ``.npz`` with ``x`` or the input's name,
and ``y``). A point the model cannot reach is recorded with its reason; the sweep goes on.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from onnxprune import graph as graphs
from onnxprune.analyse import analyse
from onnxprune.errors import ModelLoadError, UsageError, first_line
from onnxprune.importance import score_groups
from onnxprune.inputs import _graph_inputs, make_inputs
from onnxprune.measure.bench import BenchOptions, bench
from onnxprune.measure.counter import count
from onnxprune.measure.estimate import Estimator
from onnxprune.measure.targets import Target, TargetError, search
from onnxprune.plan import PlanOptions
from onnxprune.rewrite import apply_plan, validate
from onnxprune.runtime import ort_session
from onnxprune.verify import compare

LADDER = (0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2)


@dataclass
class SweepOptions:
    kind: str = "macs"  # macs | params (a latency ladder would time every bisection step)
    targets: Sequence[float] = LADDER
    plan: PlanOptions = field(default_factory=lambda: PlanOptions(ratio=0.0))  # the search sets the ratio
    shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)
    iterations: int = 4
    labels: str | Path | None = None
    bench: BenchOptions | None = field(
        default_factory=lambda: BenchOptions(runs=10, warmup=2, min_seconds=1.0)
    )

    def check(self) -> None:

        if self.kind not in ("macs", "params"):
            raise UsageError(f"--kind must be macs or params, got {self.kind!r}")
        if not self.targets:
            raise UsageError("--targets needs at least one fraction")
        for value in self.targets:
            Target(self.kind, value).check()
        if self.iterations < 1:
            raise UsageError(f"--iterations must be at least 1, got {self.iterations}")


def sweep(
    model: onnx.ModelProto, options: SweepOptions, progress: Callable[[str], None] | None = None
) -> dict:
    """Every point of the ladder as a dict; ``points[0]`` is the original (target 1.0)."""

    options.check()
    start = time.perf_counter()
    graph = graphs.normalise(model)
    analysis = analyse(graph)
    score_groups(analysis.groups, options.plan.criterion)
    before = count(model, options.shapes)
    estimator = Estimator(graph, analysis, before)
    feeds = make_inputs(model, iterations=options.iterations, shapes=before.inputs)
    labelled = _labelled(options.labels, model) if options.labels is not None else None
    setup = time.perf_counter() - start
    plan = replace(options.plan, ratio=0.0, threshold=None, replay=None)
    points = [_original(model, before, labelled, timed=options.bench is not None)]
    for value in options.targets:
        if progress is not None:
            progress(f"{options.kind} {value:g}")
        points.append(
            _point(model, graph, analysis, estimator, plan, options, value, before, feeds, labelled)
        )
    return {"kind": options.kind, "inputs": {k: list(v) for k, v in before.inputs.items()},
            "analysis_seconds": setup, "points": points}  # fmt: skip


def _original(model: onnx.ModelProto, before: Any, labelled: tuple | None, timed: bool) -> dict[str, Any]:
    accuracy = _accuracy(model, labelled) if labelled is not None else None
    return {"target": 1.0, "reached": 1.0, "macs": before.macs, "params": before.params, "cosine": 1.0,
            "top1_agreement": 1.0, "accuracy": accuracy, "latency_ratio": 1.0 if timed else None,
            "seconds": 0.0}  # fmt: skip


def _point(
    model, graph, analysis, estimator, plan, options, value, before, feeds, labelled
) -> dict[str, Any]:

    start = time.perf_counter()
    try:
        search(analysis, plan, options.kind, value, estimator.fractions)
    except TargetError as err:
        return {"target": value, "error": first_line(err)}
    pruned = validate(graphs.to_model(apply_plan(graph.copy(), analysis), model))
    after = count(pruned, options.shapes)
    point: dict[str, Any] = {
        "target": value,
        "reached": (after.macs / before.macs) if options.kind == "macs" else after.params / before.params,
        "macs": after.macs,
        "params": after.params,
        **_fidelity(model, pruned, feeds),
        "accuracy": _accuracy(pruned, labelled) if labelled is not None else None,
    }
    point["latency_ratio"] = _latency_ratio(model, pruned, options.bench) if options.bench else None
    point["seconds"] = time.perf_counter() - start
    return point


def _fidelity(model: onnx.ModelProto, pruned: onnx.ModelProto, feeds: list) -> dict[str, Any]:

    first = compare(model, pruned, feeds=feeds).outputs[0]
    return {"cosine": first.cosine, "top1_agreement": first.top1_agreement}


def _latency_ratio(model: onnx.ModelProto, pruned: onnx.ModelProto, options: BenchOptions) -> float:

    original, candidate = bench([model, pruned], options)
    return candidate.median_ms / original.median_ms


def _labelled(path: str | Path, model: onnx.ModelProto) -> tuple[str, np.ndarray, np.ndarray]:
    """(input name, x, y) from an .npz holding ``y`` and ``x`` (or the model's single input by name)."""

    specs = _graph_inputs(model)
    if len(specs) != 1:
        raise UsageError("--labels evaluates single-input models only")
    name = specs[0].name
    try:
        with np.load(path, allow_pickle=False) as data:
            x = data[name] if name in data.files else data["x"]
            y = data["y"]
    except (OSError, ValueError, KeyError) as err:
        raise ModelLoadError(
            f"{path}: not an .npz with 'x' (or {name!r}) and 'y' ({first_line(err)})"
        ) from None
    if len(x) != len(y):
        raise ModelLoadError(f"{path}: {len(x)} samples in x but {len(y)} labels in y")
    return name, x.astype(specs[0].dtype, copy=False), y.reshape(-1).astype(np.int64)


def _accuracy(
    model: onnx.ModelProto, labelled: tuple[str, np.ndarray, np.ndarray], batch: int = 500
) -> float:

    name, x, y = labelled
    session = ort_session(model)
    output = session.get_outputs()[0].name
    right = 0
    for lo in range(0, len(x), batch):
        scores = session.run([output], {name: x[lo : lo + batch]})[0]
        right += int(np.sum(np.argmax(scores.reshape(len(scores), -1), axis=1) == y[lo : lo + batch]))
    return right / max(len(y), 1)
