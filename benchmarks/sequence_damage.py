#!/usr/bin/env python3
"""Benchmark: which damage measured on a few samples predicts how many greedy CTC decodes a cut changes.

    python benchmarks/sequence_damage.py [--proxy 32] [--truth 160] [--random 24] [--limit N]

The PP-OCRv5 recogniser (``[bench]`` extra) and 1000 calibration inputs of realmodels/calib.py (made once,
never the evaluation images). Plans: every prunable unit cut alone to each width a sensitivity scan
measures, then ``--random`` combinations (each unit cut with probability 0.35 to one of its three largest
widths, seed 0). Each plan is evaluated as the sensitivity scan does (search/evaluate.PlanEvaluator, the
calibration rebuild's channel statistics from samples 32-159): the candidate measures on the first
``--proxy`` samples (as the scan), the truth on ``--truth`` samples from 500 on: the share of decodes that
differ from the original's. Prints each measure's Spearman correlation with the truth over every plan,
and for the combinations, of the sum of its single-unit values (what the allocation's knapsack adds up).

Measures: ``kl`` (mean per-frame KL, the search's damage for sequences), ``frame`` (share of frames whose
argmax changes), ``decode`` (share of the proxy samples' decodes that change), ``ce`` (the teacher's argmax
class's cross-entropy, minus the teacher's own).
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path

import numpy as np
import onnx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from realmodels import calib  # noqa: E402
from realmodels.models import MODELS  # noqa: E402

from onnxprune.compensate.rebuild import channel_moments  # noqa: E402
from onnxprune.options import Compensate, PlanOptions  # noqa: E402
from onnxprune.pipeline.prepare import prepare  # noqa: E402
from onnxprune.search.evaluate import PlanEvaluator  # noqa: E402
from onnxprune.search.sensitivity import FRACTIONS, plan_for, units, widths  # noqa: E402
from onnxprune.train.fidelity import ctc_greedy  # noqa: E402

EPS = 1e-12


def measures(reference: np.ndarray, pruned: np.ndarray) -> dict[str, float]:
    p = np.clip(reference.astype(np.float64), EPS, None)
    q = np.clip(pruned.astype(np.float64), EPS, None)
    labels = p.argmax(-1)[..., None]
    own = np.take_along_axis(np.log(p), labels, -1)
    return {
        "kl": float(np.mean(np.sum(p * (np.log(p) - np.log(q)), -1))),
        "frame": float(np.mean(p.argmax(-1) != q.argmax(-1))),
        "decode": float(np.mean([a != b for a, b in zip(ctc_greedy(p), ctc_greedy(q), strict=True)])),
        "ce": float(np.mean(own - np.take_along_axis(np.log(q), labels, -1))),
    }


def spearman(a: list[float], b: list[float]) -> float:
    ranks = [np.argsort(np.argsort(np.asarray(x))) for x in (a, b)]
    return float(np.corrcoef(*ranks)[0, 1])


def plans(prepared, options: PlanOptions, combinations: int) -> list[tuple[str, list[str], dict]]:
    """(label, the single cuts it is made of, counts): every single cut, then random combinations."""
    found, every = [], units(prepared, options)
    for unit in every:
        for kept in widths(unit, options, FRACTIONS):
            label = f"{unit.label}@{kept}"
            found.append((label, [label], unit.counts(kept)))
    rng = random.Random(0)
    for i in range(combinations):
        parts, counts = [], {}
        for unit in every:
            if rng.random() < 0.35:
                kept = rng.choice(widths(unit, options, FRACTIONS)[:3])
                parts.append(f"{unit.label}@{kept}")
                counts.update(unit.counts(kept))
        found.append((f"random{i}", parts, counts))
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--proxy", type=int, default=32, help="samples the measures run on (the scan's)")
    parser.add_argument("--truth", type=int, default=160, help="other samples the decodes are compared on")
    parser.add_argument("--random", type=int, default=24, help="random combinations of single cuts")
    parser.add_argument("--limit", type=int, default=None, help="evaluate only the first N single cuts")
    args = parser.parse_args()
    spec = MODELS["v5-rec"]
    data = dict(np.load(calib.calibration_file(spec.task, 1000)))
    options = PlanOptions(ratio=0.5, compensate=Compensate.CALIB)
    prepared = prepare(onnx.load(spec.file()), options, {spec.input_name: spec.shape})
    moments = channel_moments(
        prepared.model, prepared.graph, prepared.analysis, {k: v[32:160] for k, v in data.items()}
    )
    on_proxy = PlanEvaluator(prepared, {k: v[: args.proxy] for k, v in data.items()}, moments)
    on_truth = PlanEvaluator(prepared, {k: v[500 : 500 + args.truth] for k, v in data.items()}, moments)
    name = on_proxy.names[0]
    todo = plans(prepared, options, args.random)
    if args.limit is not None:
        todo = todo[: args.limit] + [p for p in todo if p[0].startswith("random")]
    rows: dict[str, tuple[dict, float]] = {}
    began = time.perf_counter()
    for label, _, counts in todo:
        plan = plan_for(prepared, options, counts)
        proxy = measures(on_proxy.reference[name], on_proxy.outputs(plan)[name])
        truth = measures(on_truth.reference[name], on_truth.outputs(plan)[name])["decode"]
        rows[label] = (proxy, truth)
        shown = " ".join(f"{k} {v:.4f}" for k, v in proxy.items())
        seconds = time.perf_counter() - began
        print(f"{label}: {shown} | decodes changed on {args.truth}: {truth:.4f} ({seconds:.0f} s)")
    truths = [truth for _, truth in rows.values()]
    combined = [(parts, rows[label][1]) for label, parts, _ in todo if label.startswith("random")]
    print("\n| measure | Spearman, every plan | Spearman, combinations: sum of single cuts |")
    print("|---|---|---|")
    for key in next(iter(rows.values()))[0]:
        summed = [sum(rows[p][0][key] for p in parts if p in rows) for parts, _ in combined]
        on_sums = spearman(summed, [t for _, t in combined]) if len(combined) > 2 else float("nan")
        print(f"| {key} | {spearman([r[key] for r, _ in rows.values()], truths):.3f} | {on_sums:.3f} |")


if __name__ == "__main__":
    main()
