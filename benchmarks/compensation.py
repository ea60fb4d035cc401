"""Data-free compensation on trained models: top-1 after pruning, without and with ``--compensate bn``.

    PYTHONPATH=. .venv/bin/python benchmarks/compensation.py                 # the two l1 models
    PYTHONPATH=. .venv/bin/python benchmarks/compensation.py --models vgg.l1 resnet.plain --ratios 0.5

Models and data are the bundled ``models/mnist`` files: top-1 on the 1,000 test images
(``mnist5k_test.npz``), no fine-tuning, no calibration data. Each pruning runs ``api.prune_model`` with the
defaults (global |gamma| ranking, round_to 8, min_keep 8) and its verification (the pruned model must match
its masked reference), so every row is also a checked surgery.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import onnx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
MNIST = ROOT / "models" / "mnist"


def top1(model: onnx.ModelProto, x: np.ndarray, y: np.ndarray) -> float:
    import onnxruntime as ort

    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    logits = np.concatenate([session.run(None, {"input": x[i : i + 250]})[0] for i in range(0, len(x), 250)])
    return float((logits.argmax(1) == y).mean() * 100)


def row(name: str, ratio: float, mode: str, x: np.ndarray, y: np.ndarray) -> dict:
    from onnxprune import api

    model = onnx.load(str(MNIST / f"mnist_{name}.onnx"))
    start = time.perf_counter()
    result = api.prune_model(model, api.PlanOptions(ratio=ratio, compensate=mode), api.VerifyOptions())
    seconds = time.perf_counter() - start
    macs = result.report["macs"]
    return {
        "model": name,
        "ratio": ratio,
        "compensate": mode,
        "unpruned": top1(model, x, y),
        "top1": top1(result.pruned, x, y),
        "macs": macs["after"] / macs["before"],
        "seconds": seconds,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["vgg.l1", "resnet.l1"])
    parser.add_argument("--ratios", nargs="+", type=float, default=[0.5, 0.7])
    parser.add_argument("--modes", nargs="+", default=["none", "bn"])
    args = parser.parse_args()
    data = np.load(MNIST / "mnist5k_test.npz")
    x, y = data["x"].astype(np.float32), data["y"]
    print("| model | ratio | compensate | unpruned | top-1 | MACs kept | seconds |")
    print("|---|---|---|---|---|---|---|")
    for name in args.models:
        for ratio in args.ratios:
            for mode in args.modes:
                r = row(name, ratio, mode, x, y)
                print(
                    f"| mnist_{r['model']} | {r['ratio']} | {r['compensate']} | {r['unpruned']:.1f} | "
                    f"{r['top1']:.1f} | {r['macs']:.1%} | {r['seconds']:.2f} |",
                    flush=True,
                )


if __name__ == "__main__":
    main()
