#!/usr/bin/env python3
"""Benchmark `onnxprune train` at its default options on the bundled plain (not slimming-trained) MNIST CNNs.

usage: python benchmarks/train.py [--out DIR] [--models vgg,resnet] [--seeds 0,1,2] [--calib]
                                  [--skip-finetune] [--skip-sparsity] [--threads 1] [--json FILE]

1. Fine-tuning, the issue's workflow: each plain model pruned with `prune --ratio 0.5` (data-free; `--calib`:
   with the 512 calibration images, `--compensate calib`), then `train --teacher ORIGINAL --data
   mnist5k_calib.npz` with every option at its default (2 epochs; the 512 images, 10% of them held out for
   early stopping; no labels): test accuracy unpruned / pruned / fine-tuned, MACs, seconds per epoch, once
   per seed. The aim: back within 1 pp of unpruned.
2. Sparsity training: `train --teacher ORIGINAL --l1-gamma 0.3` (the documented value; every other option at
   its sparsity default: 30 epochs, SGD 0.05) on the plain VGG: the share of BN gammas under 1e-2 (aim >= 50%)
   and test accuracy (aim: within 1 pp); then, as the honest measure (small gammas may still matter if the
   next layer scaled up), the accuracy and MACs after `prune --threshold 0.01` of those channels.

Accuracy is top-1 on the 1,000 test images (never trained or calibrated on), with ONNX Runtime on the
written ONNX files. One image is 0.1 pp; the binomial standard error near 98.5% is about 0.4 pp.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import onnx

ROOT = Path(__file__).resolve().parents[1]
MNIST = ROOT / "models" / "mnist"
CALIB = MNIST / "mnist5k_calib.npz"


def accuracy(path: Path) -> float:
    from onnxprune.runtime import run_model

    test = np.load(MNIST / "mnist5k_test.npz")
    logits = run_model(onnx.load(path), {"input": test["x"]})["logits"]
    return float((logits.argmax(1) == test["y"]).mean())


def macs(path: Path) -> int:
    from onnxprune.measure.counter import count

    return count(onnx.load(path)).macs


def seconds_per_epoch(history: list[dict[str, Any]]) -> float:
    trained = [h["seconds"] for h in history if h["epoch"] > 0]
    return sum(trained) / max(len(trained), 1)


def prune(source: Path, output: Path, plan: Any, calib: bool) -> None:
    from dataclasses import replace

    from onnxprune import api

    request = api.CalibRequest(CALIB) if calib else None
    if calib:
        plan = replace(plan, compensate="calib")
    api.prune(source, output, plan, verify=api.VerifyOptions(enabled=False), calib=request)


def finetune(name: str, seed: int, out: Path, args: argparse.Namespace) -> dict[str, Any]:
    from onnxprune import api
    from onnxprune.train import TrainOptions, train

    original = MNIST / f"mnist_{name}.plain.onnx"
    pruned, tuned = out / f"{name}.pruned.onnx", out / f"{name}.tuned{seed}.onnx"
    if not pruned.exists():
        prune(original, pruned, api.PlanOptions(ratio=0.5), calib=args.calib)
    options = TrainOptions(seed=seed, threads=args.threads, progress=not args.quiet)
    result = train(pruned, tuned, CALIB, teacher=original, options=options)
    row = {"model": f"mnist_{name}.plain", "seed": seed, "unpruned": accuracy(original)}
    row |= {"pruned": accuracy(pruned), "fine_tuned": accuracy(tuned), "macs_before": macs(original)}
    row |= {"macs_after": macs(tuned), "seconds_per_epoch": seconds_per_epoch(result.history)}
    return row | {
        "epochs": len(result.history) - 1,
        "best_epoch": result.best_epoch,
        "options": result.options,
    }


def sparsity(out: Path, args: argparse.Namespace) -> dict[str, Any]:
    from onnxprune import api
    from onnxprune.train import TrainOptions, train
    from onnxprune.train.options import L1_GAMMA

    original = MNIST / "mnist_vgg.plain.onnx"
    slim, cut = out / "vgg.slim.onnx", out / "vgg.slim.pruned.onnx"
    options = TrainOptions(l1_gamma=L1_GAMMA, threads=args.threads, progress=not args.quiet)
    result = train(original, slim, CALIB, teacher=original, options=options)
    prune(slim, cut, api.PlanOptions(threshold=0.01), calib=False)
    last = result.history[-1]
    row = {"model": "mnist_vgg.plain", "l1_gamma": L1_GAMMA, "epochs": len(result.history) - 1}
    row |= {"unpruned": accuracy(original), "slimmed": accuracy(slim), "gamma_small": last["gamma_small"]}
    row |= {"gammas": last["gammas"], "seconds_per_epoch": seconds_per_epoch(result.history)}
    return row | {"pruned": accuracy(cut), "macs_before": macs(original), "macs_pruned": macs(cut)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=None, help="keep the models here (default: a temp dir)")
    parser.add_argument("--models", default="vgg,resnet")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument(
        "--calib", action="store_true", help="prune with --calib (compensation fitted on the 512)"
    )
    parser.add_argument("--skip-finetune", action="store_true")
    parser.add_argument("--skip-sparsity", action="store_true")
    parser.add_argument("--threads", type=int, default=None, help="PyTorch threads (1 on a shared machine)")
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        out = args.out or Path(tmp)
        out.mkdir(parents=True, exist_ok=True)
        models = [] if args.skip_finetune else args.models.split(",")
        rows = [finetune(name, seed, out, args) for name in models for seed in seeds]
        slim = None if args.skip_sparsity else sparsity(out, args)
    prune_how = "--ratio 0.5 --calib" if args.calib else "--ratio 0.5 (data-free)"
    print(f"| model | unpruned | prune {prune_how} | + default train --teacher (seed) | MACs | s/epoch |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        counted = f"{r['macs_before'] / 1e6:.1f}M → {r['macs_after'] / 1e6:.1f}M"
        accuracies = f"{r['unpruned']:.1%} | {r['pruned']:.1%} | {r['fine_tuned']:.1%} ({r['seed']})"
        print(f"| {r['model']} | {accuracies} | {counted} | {r['seconds_per_epoch']:.1f} |")
    if slim is not None:
        s = slim
        print(f"\nsparsity: {s['model']} --l1-gamma {s['l1_gamma']:g} ({s['epochs']} epochs): "
              f"|gamma| < 1e-2 for {s['gamma_small']:.1%} of {s['gammas']} gammas, accuracy "
              f"{s['unpruned']:.1%} → {s['slimmed']:.1%}, {s['seconds_per_epoch']:.1f} s/epoch; "
              f"prune --threshold 0.01: {s['pruned']:.1%} at {s['macs_before'] / 1e6:.1f}M → "
              f"{s['macs_pruned'] / 1e6:.1f}M MACs")  # fmt: skip
    if args.json is not None:
        args.json.write_text(json.dumps({"finetune": rows, "sparsity": slim, "argv": sys.argv[1:]}, indent=2))


if __name__ == "__main__":
    main()
