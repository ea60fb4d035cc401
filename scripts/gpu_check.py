#!/usr/bin/env python3
"""The Python half of scripts/gpu_check.sh: the models it times, the timing of engine plans, and its table.

    gpu_check.py models OUT TOPOLOGY        # OUT/original.onnx: tests/data/TOPOLOGY, seeded weights, batch N
    gpu_check.py time-plan PLAN OUT.json --shape NAME:DIMS [--rtx]   # median ms of TrtRunner.infer
    gpu_check.py table OUT                  # one table of every OUT/*.time.json and OUT/ort_*.json

Timings are written as JSON so that a step that could not run (no provider, no TensorRT, a GPU TensorRT-RTX
does not compile for) leaves a ``{"skipped": why}`` record and the table says so.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def models(out: Path, topology: str) -> None:
    """A seeded copy of a tests/data topology whose batch dimension is free (dim_param N), so that the same
    files run at batch 1 and 32."""
    sys.path[:0] = [str(ROOT), str(ROOT / "tests")]
    import weights

    model = weights.load(topology)
    for value in [*model.graph.input, *model.graph.output]:
        value.type.tensor_type.shape.dim[0].dim_param = "N"
    out.mkdir(parents=True, exist_ok=True)
    import onnx

    onnx.save(model, str(out / "original.onnx"))
    print(out / "original.onnx")


def time_plan(plan: Path, target: Path, shape: str, rtx: bool, runs: int = 200) -> None:
    """Median wall time of ``TrtRunner.infer`` (host-device copies included) on seeded data."""
    if rtx:
        os.environ["POLYGRAPHY_USE_TENSORRT_RTX"] = "1"  # before Polygraphy picks its TensorRT module
    import numpy as np
    from polygraphy.backend.trt import EngineFromBytes, TrtRunner

    name, dims = shape.rsplit(":", 1)
    feed = {
        name: np.random.default_rng(0).standard_normal([int(d) for d in dims.split("x")]).astype(np.float32)
    }
    with TrtRunner(EngineFromBytes(plan.read_bytes())) as runner:
        for _ in range(20):
            runner.infer(feed)
        times = []
        for _ in range(runs):
            began = time.perf_counter()
            runner.infer(feed)
            times.append((time.perf_counter() - began) * 1e3)
    record = {"plan": plan.name, "batch": int(dims.split("x")[0]), "median_ms": statistics.median(times)}
    target.write_text(json.dumps(record))


def table(out: Path) -> None:
    rows = []
    for path in sorted(out.glob("ort_cuda_b*.json")):
        record = json.loads(path.read_text())
        batch = path.stem.split("_b")[-1]
        if "skipped" in record:
            rows.append(("ORT CUDA EP", "-", batch, "skipped: " + record["skipped"], ""))
            continue
        base = record["models"][0]["median_ms"]
        for model in record["models"]:
            rows.append(("ORT CUDA EP", model["name"], batch, f"{model['median_ms']:.3f}",
                         f"{model['median_ms'] / base:.3f}"))  # fmt: skip
    for path in sorted(out.glob("*.time.json")):
        record = json.loads(path.read_text())
        what = "TensorRT-RTX" if ".rtx." in path.name else "TensorRT fp16"
        if "skipped" in record:
            rows.append((what, path.name.split(".")[0], "-", "skipped: " + record["skipped"], ""))
        else:
            rows.append((what, record["plan"], str(record["batch"]), f"{record['median_ms']:.3f}", ""))
    print(f"\n{'runtime':16s} {'model':34s} {'batch':>5s} {'median ms':>12s} {'ratio':>6s}")
    for what, model, batch, ms, ratio in rows:
        print(f"{what:16s} {model:34s} {batch:>5s} {ms:>12s} {ratio:>6s}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    made = commands.add_parser("models")
    made.add_argument("out", type=Path)
    made.add_argument("topology")
    timed = commands.add_parser("time-plan")
    timed.add_argument("plan", type=Path)
    timed.add_argument("target", type=Path)
    timed.add_argument("--shape", required=True)
    timed.add_argument("--rtx", action="store_true")
    shown = commands.add_parser("table")
    shown.add_argument("out", type=Path)
    args = parser.parse_args()
    if args.command == "models":
        models(args.out, args.topology)
    elif args.command == "time-plan":
        time_plan(args.plan, args.target, args.shape, args.rtx)
    else:
        table(args.out)


if __name__ == "__main__":
    main()
