#!/usr/bin/env python3
"""Benchmark: top-1 of the bundled MNIST CNNs after pruning, per ratio and compensation, no fine-tuning.

usage: python benchmarks/accuracy.py [--models mnist_vgg.plain,...] [--ratios 0.5,0.7]
                                     [--modes none,bn,calib] [--max-group-ratio 1.0] [--resnet50]
                                     [--peers]

Modes: ``none`` plain pruning; ``bn`` the data-free compensation (``--compensate bn``); ``calib``
calibration on models/mnist/mnist5k_calib.npz (512 training images) with the default steps;
``calib:STEPS`` with others (``calib:bn``, ``calib:refit+bn``).
Top-1 is on the 1,000 test images (models/mnist/mnist5k_test.npz), which calibration never sees.
``--peers`` adds, after each row, peers' choices of channels at the same MACs with the same compensation:
``l1-layer`` (Li et al. 2017: filter L1 norm, ``--criterion l1 --scope layer``, ``--target-macs`` set to
what the gamma plan reached) and ``random`` (the gamma plan's widths, channels drawn with seed 0).
``--resnet50`` also times calibrating the seeded ResNet-50 topology (tests/weights.py) at ratio 0.5 on
256 random 224x224 samples, in a fresh subprocess so that its peak RSS (VmHWM) is its own.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
MNIST = ROOT / "models" / "mnist"
MODELS = ("mnist_vgg.l1", "mnist_vgg.plain", "mnist_resnet.l1", "mnist_resnet.plain")


def top1(model, x: np.ndarray, y: np.ndarray) -> float:
    from onnxprune.runtime import ort_session

    session = ort_session(model, threads=2)
    return float((session.run(None, {"input": x})[0].argmax(1) == y).mean())


def run_one(
    name: str, ratio: float, mode: str, max_group_ratio: float, data, peer: str | None = None, gamma=None
) -> dict:
    """One prune of ``name``; ``peer``: "l1-layer" or "random" at the MACs of ``gamma`` (the gamma plan's
    report at the same ratio and mode), with the same compensation."""
    import dataclasses

    import onnx

    from onnxprune import api
    from onnxprune.compensate.calibrate import CalibOptions

    model = onnx.load(str(MNIST / f"{name}.onnx"))
    plan = api.PlanOptions(ratio=ratio, max_group_ratio=max_group_ratio, compensate=mode.split(":")[0])
    target = None
    if peer == "l1-layer":  # Li et al. 2017: filter L1 norm, the same fraction of every layer
        plan = dataclasses.replace(plan, criterion="l1", scope="layer", max_group_ratio=1.0)
        target = api.Target("macs", gamma["macs"]["after"] / gamma["macs"]["before"])
    elif peer == "random":  # the gamma plan's widths, channels drawn at random (seeded): the same MACs
        plan = api.PlanOptions(replay=random_plan(gamma), compensate=plan.compensate)
    calib = None
    if mode.startswith("calib"):
        steps = tuple(mode.split(":")[1].split("+")) if ":" in mode else CalibOptions().steps
        calib = api.CalibRequest(MNIST / "mnist5k_calib.npz", options=CalibOptions(steps=steps))
    start = time.perf_counter()
    result = api.prune_model(model, plan, api.VerifyOptions(enabled=False), calib, target=target)
    seconds = time.perf_counter() - start
    x, y = data
    return {
        "top1": top1(result.pruned, x, y),
        "macs": result.report["macs"]["after"],
        "macs_before": result.report["macs"]["before"],
        "seconds": round(seconds, 1),
        "report": result.report,
    }


def random_plan(report: dict, seed: int = 0) -> dict:
    """``report``'s plan with each group's kept channels drawn at random, as many as it keeps."""
    rng = np.random.default_rng(seed)
    groups = []
    for group in report["groups"]:
        kept = np.sort(rng.choice(group["channels_before"], group["channels_after"], replace=False))
        groups.append({**group, "kept": [int(i) for i in kept]})
    return {"groups": groups}


def mnist_table(
    models: list[str],
    ratios: list[float],
    modes: list[str],
    max_group_ratio: float,
    peers: tuple[str, ...] = (),
) -> list[dict]:
    import onnx

    with np.load(MNIST / "mnist5k_test.npz") as test:
        data = test["x"][:1000], test["y"][:1000]
    rows = []
    for name in models:
        base = top1(onnx.load(str(MNIST / f"{name}.onnx")), *data)
        print(f"\n{name}: unpruned top-1 {100 * base:.1f}%", flush=True)
        print("| ratio | mode | top-1 % | MACs | seconds |\n|---|---|---|---|---|")
        for ratio in ratios:
            for mode in modes:
                gamma = None
                for peer in (None, *peers):
                    row = {"model": name, "ratio": ratio, "mode": mode, "unpruned": base, "choice": peer}
                    try:
                        row.update(run_one(name, ratio, mode, max_group_ratio, data, peer, gamma))
                    except Exception as err:  # a peer's plan the model cannot take: say so, go on
                        row.update(top1=None, error=str(err).splitlines()[0])
                    gamma = gamma or row.pop("report", None)
                    row.pop("report", None)
                    rows.append(row)
                    t1 = "n/a" if row["top1"] is None else f"{100 * row['top1']:.1f}"
                    macs = f"{row['macs'] / 1e6:.2f}M" if "macs" in row else row.get("error", "")
                    label = mode if peer is None else f"{mode}, {peer}"
                    print(f"| {ratio} | {label} | {t1} | {macs} | {row.get('seconds', '')} |", flush=True)
    return rows


RESNET50 = r"""
import json, os, sys, time
sys.path.insert(0, {tests!r})
import numpy as np
from weights import load
from onnxprune import api
from onnxprune.compensate.calibrate import CalibOptions
model = load("resnet50")
# Drawn in float32: a float64 draw would be a transient 300 MiB of the harness in the peak.
samples = {{"input": np.random.default_rng(0).standard_normal((256, 3, 224, 224), dtype=np.float32)}}
load_before = os.getloadavg()[0]
start = time.perf_counter()
calib = api.CalibRequest(samples=samples, options=CalibOptions(steps=tuple({steps!r})))
plan = api.PlanOptions(ratio=0.5, compensate="calib")
result = api.prune_model(model, plan, api.VerifyOptions(enabled=False), calib)
total = time.perf_counter() - start
peak = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM")) / 1024
c = result.report["calibration"]
import resource
usage = resource.getrusage(resource.RUSAGE_SELF)
# CPU seconds too: on a shared machine the wall clock measures the neighbours as much as the work.
print(json.dumps({{
    "prune_and_calibrate_s": round(total, 1), "calibration_s": c["seconds"], "peak_mib": round(peak),
    "cpu_s": round(usage.ru_utime + usage.ru_stime, 1),
    "load_average": [round(load_before, 2), round(os.getloadavg()[0], 2)],
    "declined": sum("refit_declined" in la for la in c["layers"]),
    "layers": len(c["layers"]), "bn": c.get("bn", {{}}).get("count"), "fidelity": c["fidelity"],
    "positions": c["positions"],
}}))
"""


def resnet50(steps: tuple[str, ...]) -> dict:
    code = RESNET50.format(tests=str(ROOT / "tests"), steps=list(steps))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--ratios", default="0.5,0.7")
    parser.add_argument("--modes", default="none,bn,calib")
    parser.add_argument("--max-group-ratio", type=float, default=1.0)
    parser.add_argument("--resnet50", action="store_true")
    parser.add_argument(
        "--peers",
        action="store_true",
        help="per row, peers' choices of channels at the same MACs: l1-layer (Li et al. 2017), random",
    )
    parser.add_argument("--json", type=Path, help="Also write the rows as JSON here.")
    args = parser.parse_args()
    ratios = [float(r) for r in args.ratios.split(",")]
    models, modes = args.models.split(",") if args.models else [], args.modes.split(",")
    peers = ("l1-layer", "random") if args.peers else ()
    rows = mnist_table(models, ratios, modes, args.max_group_ratio, peers)
    if args.resnet50:
        from onnxprune.compensate.calibrate import CalibOptions

        measured = resnet50(CalibOptions().steps)
        print("\nResNet-50, ratio 0.5, 256 samples 224x224:", json.dumps(measured))
        rows.append({"resnet50": measured})
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
