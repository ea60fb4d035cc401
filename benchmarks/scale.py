#!/usr/bin/env python3
"""Benchmark: a sensitivity scan on 1 and 2 workers (a local process pool) and on a local Ray cluster, the
fixed cost of each (pool start, cluster start, object transfer), and a paper estimate for a 16-node
cluster from the measured per-task cost.

usage: python benchmarks/scale.py [--model yolov8n] [--samples 4] [--calib 24] [--workers 1,2] [--no-ray]
                                  [--nodes 16] [--cores-per-node 16] [--json FILE]

The model is a zoo topology (tests/data) with the tests' seeded weights and BN statistics calibrated on
N(0, 1) images (tests/weights.py); the calibration data is seeded N(0, 1) images too. Each run is
``api.sensitivity`` with ``--compensate calib`` (the default with data: calibration's linear rebuild)
at the default widths (0.75, 0.5, 0.25), ``--sensitivity-samples`` = ``--samples``. Every run's JSON
(its wall time aside) must equal the first's, or the benchmark fails. Prints the tables.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import pickle
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from onnxprune import api  # noqa: E402
from onnxprune.channels import Plan  # noqa: E402
from onnxprune.options import PlanOptions  # noqa: E402
from onnxprune.pipeline import prepare  # noqa: E402
from onnxprune.search.budget import SearchData, evaluation, moments_for  # noqa: E402
from onnxprune.search.sensitivity import FRACTIONS, SensitivityOptions, jobs  # noqa: E402
from onnxprune.search.tasks import EvaluationJob  # noqa: E402
from onnxprune.search.workers import WorkerOptions, Workers, cores  # noqa: E402

# The paper estimate's detector: the issue's, a YOLO at 640x640, 256 samples, 4 widths per group.
PAPER_SAMPLES, PAPER_WIDTHS = 256, 4
# Assumed: each node pulls the job (model and samples) from the head over 10 GbE, one after another.
LINK_BYTES_PER_S = 1.25e9


def calibration(model: Any, count: int) -> dict[str, np.ndarray]:
    (spec,) = model.graph.input
    shape = [d.dim_value for d in spec.type.tensor_type.shape.dim][1:]
    rng = np.random.default_rng(1)
    return {spec.name: rng.standard_normal((count, *shape)).astype(np.float32)}


def scan(model: Any, samples: dict, per_task: int, workers: int, ray: str | None) -> tuple[float, dict]:
    options = PlanOptions(ratio=0.0, compensate="calib")
    search = api.SearchOptions(sensitivity=SensitivityOptions(samples=per_task), workers=workers, ray=ray)
    start = time.perf_counter()
    found = api.sensitivity(model, options, api.CalibRequest(samples=samples), search)
    seconds = time.perf_counter() - start
    record = found.to_dict()
    record.pop("seconds")
    return seconds, record


def fixed_costs(model: Any, samples: dict, per_task: int, workers: int, ray: bool) -> dict[str, float]:
    """What placing the work costs before the first task: a pool's start (spawned interpreters, imports,
    each worker preparing the model and building its evaluator), a Ray cluster's start, the job's
    transfer into Ray's object store, and a Ray worker's first fetch and build."""
    options = PlanOptions(ratio=0.0, compensate="calib")
    prepared = prepare(model, options)
    data = SearchData(samples, 0.1, sensitivity=SensitivityOptions(samples=per_task))
    data = replace(data, moments=moments_for(prepared, options, data))
    evaluate, _ = evaluation(prepared, options, data)
    job = EvaluationJob.of(prepared, evaluate.evaluation)
    found: dict[str, float] = {"job_mib": len(pickle.dumps(job)) / 2**20}
    start = time.perf_counter()
    built = job.build()
    found["build_here_s"] = time.perf_counter() - start
    start = time.perf_counter()
    built(Plan())
    found["one_task_here_s"] = time.perf_counter() - start
    with Workers(WorkerOptions(workers=workers)) as pool:
        start = time.perf_counter()
        pool.run(job, [Plan()] * workers)
        found["pool_first_results_s"] = time.perf_counter() - start
    if ray:
        import ray as ray_module

        start = time.perf_counter()
        cluster = Workers(WorkerOptions(workers=workers, ray="local"))
        cluster.open()
        found["ray_start_s"] = time.perf_counter() - start
        start = time.perf_counter()
        reference = ray_module.put(job)
        found["ray_put_s"] = time.perf_counter() - start
        del reference
        start = time.perf_counter()
        cluster.run(job, [Plan()] * workers)
        found["ray_first_results_s"] = time.perf_counter() - start
        cluster.close()
    return found


def paper(
    per_sample: float, units: int, fixed: float, sample_bytes: int, nodes: int, per_node: int
) -> dict[str, float]:
    """The issue's scan (``PAPER_SAMPLES`` samples, ``PAPER_WIDTHS`` widths per unit) on ``nodes`` nodes of
    ``per_node`` cores, each core as fast as one here: waves of tasks, the cluster's fixed cost measured
    here, and every node pulling the samples over the assumed link."""
    tasks = units * PAPER_WIDTHS
    per_task = per_sample * PAPER_SAMPLES
    slots = nodes * per_node
    transfer = nodes * PAPER_SAMPLES * sample_bytes / LINK_BYTES_PER_S
    return {
        "tasks": tasks,
        "per_task_s": per_task,
        "one_core_s": tasks * per_task,
        "slots": slots,
        "transfer_s": transfer,
        "cluster_s": math.ceil(tasks / slots) * per_task + fixed + transfer,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="yolov8n")
    parser.add_argument("--samples", type=int, default=4, help="samples each evaluation runs")
    parser.add_argument("--calib", type=int, default=24, help="calibration samples in all")
    parser.add_argument("--workers", default="1,2")
    parser.add_argument("--no-ray", action="store_true")
    parser.add_argument("--nodes", type=int, default=16)
    parser.add_argument("--cores-per-node", type=int, default=16)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    import weights

    model = weights.load(args.model)
    samples = calibration(model, args.calib)
    counts = [int(w) for w in args.workers.split(",")]
    prepared = prepare(model, PlanOptions(ratio=0.0, compensate="calib"))
    tasks = len(jobs(prepared, prepared.options, SensitivityOptions(samples=args.samples)))
    load = os.getloadavg()[0]
    print(f"{args.model}: {tasks} evaluations of {args.samples} samples each; {cores()} cores here, "
          f"load average {load:.1f} at the start (a shared machine)")  # fmt: skip

    runs: list[dict[str, Any]] = []
    first: dict | None = None
    places = [(w, None) for w in counts] + ([] if args.no_ray else [(max(counts), "local")])
    for workers, ray in places:
        seconds, record = scan(model, samples, args.samples, workers, ray)
        first = first if first is not None else record
        same = record == first
        where = f"Ray local, {workers} CPUs" if ray else f"{workers} worker{'s' if workers > 1 else ''}"
        runs.append({"where": where, "seconds": seconds, "identical": same, "load": os.getloadavg()[0]})
        if not same:
            raise SystemExit(f"{where}: the curves differ from the first run's")

    base = runs[0]["seconds"]
    print("\n| where | seconds | speed-up | same JSON | load avg after |\n|---|---|---|---|---|")
    for run in runs:
        print(f"| {run['where']} | {run['seconds']:.1f} | {base / run['seconds']:.2f}x | "
              f"{'yes' if run['identical'] else 'NO'} | {run['load']:.1f} |")  # fmt: skip

    fixed = fixed_costs(model, samples, args.samples, max(counts), not args.no_ray)
    print("\n| fixed cost | seconds |\n|---|---|")
    for key, value in fixed.items():
        print(f"| {key} | {value:.2f} |")

    per_task = base / tasks
    per_sample = fixed["one_task_here_s"] / args.samples
    units = len({tuple(u["groups"]) for u in first["units"]}) if first else 0
    overhead = fixed.get("ray_start_s", 0.0) + fixed.get("ray_first_results_s", 0.0)
    sample_bytes = sum(v[0].nbytes for v in samples.values())
    estimate = paper(per_sample, units, overhead, sample_bytes, args.nodes, args.cores_per_node)
    print(f"\nper task here (1 worker): {per_task:.2f} s; per sample and evaluation: {per_sample:.3f} s")
    print(f"paper estimate, {args.model} at its input size, {PAPER_SAMPLES} samples, {PAPER_WIDTHS} widths, "
          f"{units} units = {estimate['tasks']} tasks of {estimate['per_task_s']:.0f} s: one core "
          f"{estimate['one_core_s'] / 3600:.1f} h; {args.nodes} nodes x {args.cores_per_node} cores "
          f"({estimate['slots']} workers): {estimate['cluster_s'] / 60:.1f} min, of which "
          f"{estimate['transfer_s']:.0f} s moving the samples")  # fmt: skip
    if args.json is not None:
        result = {"runs": runs, "fixed": fixed, "paper": estimate, "tasks": tasks, "fractions": FRACTIONS}
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
