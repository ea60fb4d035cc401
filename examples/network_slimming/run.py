#!/usr/bin/env python3
"""Network Slimming end to end on a plain trained MNIST CNN, with onnxprune's commands only.

usage: python examples/network_slimming/run.py [--out DIR] [--model models/mnist/mnist_vgg.plain.onnx]

  0. the plain model (trained without any sparsity penalty: all |gamma| in 0.77-1.25)
  1. onnxprune train --l1-gamma: sparsity training (the proximal step: unimportant gammas become exactly
     0), distilled from the model itself on the 512 unlabelled calibration images (no labels needed)
  2. onnxprune prune --ratio 0.7: remove the 70% of channels with the smallest |gamma|
  3. onnxprune train --teacher --augment shift: fine-tune the pruned model by distillation from the
     original, on the same images shifted by up to 2 pixels

Prints each command, then a table of test accuracy (the 1,000 held-out test images), MACs, parameters and
the share of |gamma| < 1e-2 at every step. CPU only; a few minutes on a free core.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx

ROOT = Path(__file__).resolve().parents[2]
MNIST = ROOT / "models" / "mnist"
# Sparsity training as measured in benchmarks/train.py (README, Measured: Training).
L1_GAMMA, SPARSITY_LR, SPARSITY_EPOCHS = 0.3, 0.05, 30
SPARSITY_EXTRA: tuple[str, ...] = ("--augment", "shift")


def onnxprune(*args: object) -> None:
    command = [sys.executable, "-m", "onnxprune.cli", *map(str, args)]
    print("$ onnxprune " + " ".join(map(str, args)), flush=True)
    subprocess.run(command, check=True)


def measure(path: Path) -> dict[str, float]:
    from onnxprune.measure.counter import count
    from onnxprune.runtime import run_model

    model = onnx.load(path)
    test = np.load(MNIST / "mnist5k_test.npz")
    logits = run_model(model, {"input": test["x"]})[model.graph.output[0].name]
    weights = {t.name: onnx.numpy_helper.to_array(t) for t in model.graph.initializer}
    gammas = np.concatenate(
        [np.abs(weights[n.input[1]]) for n in model.graph.node if n.op_type == "BatchNormalization"]
    )
    counts = count(model)
    params, macs = counts.params, counts.macs
    return {"accuracy": float((logits.argmax(1) == test["y"]).mean()), "macs": macs, "params": params,
            "small": float((gammas < 1e-2).mean())}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "out" / "slimming")
    parser.add_argument("--model", type=Path, default=MNIST / "mnist_vgg.plain.onnx")
    parser.add_argument("--l1-gamma", type=float, default=L1_GAMMA)
    parser.add_argument("--sparsity-lr", type=float, default=SPARSITY_LR)
    parser.add_argument("--sparsity-epochs", type=int, default=SPARSITY_EPOCHS)
    parser.add_argument("--ratio", type=float, default=0.7)
    parser.add_argument("--finetune-epochs", type=int, default=2)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    calib, model = MNIST / "mnist5k_calib.npz", args.model
    slim, pruned, tuned = (args.out / f"{model.stem}.{s}.onnx" for s in ("slim", "pruned", "tuned"))
    onnxprune("train", model, "-o", slim, "--data", calib, "--teacher", model, "--l1-gamma", args.l1_gamma,
              "--epochs", args.sparsity_epochs, "--batch", 16, "--lr", args.sparsity_lr, "--temperature", 4,
              *SPARSITY_EXTRA)  # fmt: skip
    onnxprune("prune", slim, "-o", pruned, "--ratio", args.ratio, "--report", args.out / "prune.report.json")
    onnxprune("train", pruned, "-o", tuned, "--data", calib, "--teacher", model,
              "--epochs", args.finetune_epochs, "--batch", 16, "--optimizer", "adam", "--lr", 3e-4,
              "--temperature", 4, "--augment", "shift")  # fmt: skip
    steps = [("plain model", model), ("train --l1-gamma", slim), (f"prune --ratio {args.ratio}", pruned),
             ("train --teacher", tuned)]  # fmt: skip
    print("\n| step | test accuracy | MACs | params | abs(gamma) < 1e-2 |")
    print("|---|---|---|---|---|")
    for label, path in steps:
        m = measure(path)
        print(f"| {label} | {m['accuracy']:.1%} | {m['macs'] / 1e6:.2f}M | {m['params'] / 1e3:.0f}k "
              f"| {m['small']:.1%} |")  # fmt: skip


if __name__ == "__main__":
    main()
