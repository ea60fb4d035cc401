#!/usr/bin/env python3
"""Benchmark: a sensitivity scan on 1 and 2 workers (a local process pool) and on a local Ray cluster, the
fixed cost of each (pool start, cluster start, object transfer), and a paper estimate for a 16-node
cluster from the measured per-task cost.

usage: python benchmarks/scale.py [--model yolov8n] [--samples 64] [--calib 128] [--workers 1,2] [--no-ray]
                                  [--nodes 16] [--cores-per-node 16] [--json FILE]

The model is a zoo topology (tests/data) with the tests' seeded weights and BN statistics calibrated on
N(0, 1) images (tests/weights.py); the calibration data is seeded N(0, 1) images too. Each run is
``api.sensitivity`` with ``--compensate calib`` (the default with data: calibration's linear rebuild)
at the default widths (0.875, 0.75, 0.5, 0.25), ``--sensitivity-samples`` = ``--samples``. Every run's JSON
(its wall time aside) must equal the first's, or the benchmark fails. Prints the tables.

On a shared machine the wall times measure what the other load left over; the "idle projection" column
is what a local run would take alone on the machine, from CPU time: this process's CPU time (its part
runs alone: analysis, calibration statistics, waiting costs none) plus the workers' CPU time divided by
their number (each took an equal share of the tasks). It is a projection, not a measurement.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import pickle
import resource
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
from onnxprune.search.sensitivity import SensitivityOptions, jobs, plan_for, units  # noqa: E402
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


def cpu_seconds() -> tuple[float, float]:
    """CPU time of this process, and of its children that have ended (a pool's workers, once closed)."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime, children.ru_utime + children.ru_stime


def scan(model: Any, samples: dict, per_task: int, workers: int, ray: str | None) -> tuple[dict, dict]:
    """One ``api.sensitivity`` call: its wall and CPU times, and its JSON."""
    options = PlanOptions(ratio=0.0, compensate="calib")
    search = api.SearchOptions(sensitivity=SensitivityOptions(samples=per_task), workers=workers, ray=ray)
    own, children = cpu_seconds()
    start = time.perf_counter()
    found = api.sensitivity(model, options, api.CalibRequest(samples=samples), search)
    seconds = time.perf_counter() - start
    own_after, children_after = cpu_seconds()
    record = found.to_dict()
    times = {"seconds": seconds, "scan_seconds": record.pop("seconds"), "cpu_here": own_after - own,
             "cpu_workers": children_after - children}  # fmt: skip
    return times, record


def job_of(model: Any, samples: dict, per_task: int) -> tuple[EvaluationJob, Plan, int]:
    """The job the workers would be sent (calibration statistics measured), the plan of its first task,
    and how many units the model has."""
    options = PlanOptions(ratio=0.0, compensate="calib")
    prepared = prepare(model, options)
    data = SearchData(samples, 0.1, sensitivity=SensitivityOptions(samples=per_task))
    data = replace(data, moments=moments_for(prepared, options, data))
    evaluate, _ = evaluation(prepared, options, data)
    unit, kept = jobs(prepared, options, data.sensitivity)[0]
    return (
        EvaluationJob.of(prepared, evaluate.evaluation),
        plan_for(prepared, options, unit.counts(kept)),
        len(units(prepared, options)),
    )


def task_cost(job: EvaluationJob, plan: Plan) -> dict[str, float]:
    """A worker's start on the job (prepare, session, the original's outputs) and one task, here."""
    found = {"job_mib": len(pickle.dumps(job)) / 2**20}
    start, cpu = time.perf_counter(), time.process_time()
    built = job.build()
    found["build_here_s"] = time.perf_counter() - start
    found["build_here_cpu_s"] = time.process_time() - cpu
    start, cpu = time.perf_counter(), time.process_time()
    built(plan)
    found["one_task_here_s"] = time.perf_counter() - start
    found["one_task_here_cpu_s"] = time.process_time() - cpu
    return found


def fixed_costs(job: EvaluationJob, plan: Plan, workers: int, ray: bool) -> dict[str, float]:
    """What placing the work costs before the first task: a pool's start (spawned interpreters, imports,
    each worker preparing the model and building its evaluator) to its first results, a Ray cluster's
    start, the job's transfer into Ray's object store, and Ray's first results (each worker fetching and
    building the job)."""
    found = task_cost(job, plan)
    _, children = cpu_seconds()
    with Workers(WorkerOptions(workers=workers)) as pool:
        start = time.perf_counter()
        pool.run(job, [plan] * workers)
        found["pool_first_results_s"] = time.perf_counter() - start
    # A worker's start (interpreter, imports, preparing the model, building its evaluator) in CPU time:
    # what it would take on an idle core, the workers starting side by side.
    per_worker = (cpu_seconds()[1] - children) / workers
    found["pool_start_cpu_per_worker_s"] = per_worker - found["one_task_here_cpu_s"]
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
        cluster.run(job, [plan] * workers)
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
    parser.add_argument("--model", default="resnet18", help="the model of the timed scans")
    # The defaults make a scan of a few minutes on one worker (the case): short scans measure
    # mostly the workers' start (about 5 s of CPU each).
    parser.add_argument("--samples", type=int, default=64, help="samples each evaluation runs")
    parser.add_argument("--calib", type=int, default=128, help="calibration samples in all")
    parser.add_argument("--workers", default="1,2")
    parser.add_argument("--no-ray", action="store_true")
    parser.add_argument("--detector", default="yolov8n", help="the model of the paper estimate")
    parser.add_argument("--detector-samples", type=int, default=2, help="samples of its timed task")
    parser.add_argument("--nodes", type=int, default=16)
    parser.add_argument("--cores-per-node", type=int, default=16)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    import weights

    model = weights.load(args.model)
    samples = calibration(model, args.calib)
    counts = [int(w) for w in args.workers.split(",")]
    job, plan, _ = job_of(model, samples, args.samples)
    tasks = len(jobs(prepare(model, job.options), job.options, SensitivityOptions(samples=args.samples)))
    print(f"{args.model}: {tasks} evaluations of {args.samples} samples each; {cores()} cores here, "
          f"load average {os.getloadavg()[0]:.1f} at the start (a shared machine)")  # fmt: skip

    runs = speed_ups(model, samples, args.samples, counts, not args.no_ray)
    fixed = fixed_costs(job, plan, max(counts), not args.no_ray)
    print("\n| fixed cost | value |\n|---|---|")
    for key, value in fixed.items():
        print(f"| {key} | {value:.2f} |")

    detector = weights.load(args.detector)
    shots = calibration(detector, 3 * args.detector_samples)
    found_job, found_plan, found_units = job_of(detector, shots, args.detector_samples)
    cost = task_cost(found_job, found_plan)
    per_sample = cost["one_task_here_s"] / args.detector_samples
    overhead = fixed.get("ray_start_s", 0.0) + fixed.get("ray_first_results_s", 0.0)
    sample_bytes = sum(v[0].nbytes for v in shots.values())
    estimate = paper(per_sample, found_units, overhead, sample_bytes, args.nodes, args.cores_per_node)
    where = args.detector
    print(f"\n{where}: one task of {args.detector_samples} samples {cost['one_task_here_s']:.2f} s here "
          f"(a worker's start on it {cost['build_here_s']:.1f} s), {per_sample:.3f} s a sample")  # fmt: skip
    print(f"paper estimate, {where} at its input size, {PAPER_SAMPLES} samples, {PAPER_WIDTHS} widths, "
          f"{found_units} units = {estimate['tasks']} tasks of {estimate['per_task_s']:.0f} s: one core "
          f"{estimate['one_core_s'] / 3600:.1f} h; {args.nodes} nodes x {args.cores_per_node} cores "
          f"({estimate['slots']} workers): {estimate['cluster_s'] / 60:.1f} min, of which "
          f"{estimate['transfer_s']:.0f} s moving the samples")  # fmt: skip
    if args.json is not None:
        result = {"runs": runs, "fixed": fixed, "detector": cost, "paper": estimate, "tasks": tasks}
        args.json.write_text(json.dumps(result, indent=2))


def speed_ups(model: Any, samples: dict, per_task: int, counts: list[int], ray: bool) -> list[dict]:
    """The same scan on each placement: whole call and scan alone, checked identical to the first; and
    for the local ones, what an idle machine would take, projected from CPU time: this process's part
    runs alone, the workers' CPU time splits over the workers."""
    runs: list[dict[str, Any]] = []
    first: dict | None = None
    places = [(w, None) for w in counts] + ([(max(counts), "local")] if ray else [])
    for workers, where in places:
        times, record = scan(model, samples, per_task, workers, where)
        first = first if first is not None else record
        name = f"Ray local, {workers} CPUs" if where else f"{workers} worker{'s' if workers > 1 else ''}"
        if record != first:
            raise SystemExit(f"{name}: the curves differ from the first run's")
        idle = None if where else times["cpu_here"] + times["cpu_workers"] / workers
        runs.append({"where": name, **times, "idle_projection": idle, "load": os.getloadavg()[0]})
    base, scan_base = runs[0]["seconds"], runs[0]["scan_seconds"]
    idle_base = runs[0]["idle_projection"]
    print("\n| where | whole call s | speed-up | scan s | speed-up | CPU s here + workers | idle projection "
          "| same JSON | load avg after |\n|---|---|---|---|---|---|---|---|---|")  # fmt: skip
    for run in runs:
        whole, scanned = base / run["seconds"], scan_base / run["scan_seconds"]
        cpu = f"{run['cpu_here']:.0f} + {run['cpu_workers']:.0f}" if run["idle_projection"] else "-"
        idle = run["idle_projection"]
        projected = f"{idle:.0f} s, {idle_base / idle:.2f}x" if idle else "-"
        print(f"| {run['where']} | {run['seconds']:.1f} | {whole:.2f}x | {run['scan_seconds']:.1f} | "
              f"{scanned:.2f}x | {cpu} | {projected} | yes | {run['load']:.1f} |")  # fmt: skip
    return runs


if __name__ == "__main__":
    main()
