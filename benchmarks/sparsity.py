#!/usr/bin/env python3
"""Benchmark: 2:4 sparsity per model: eligible layers, their MAC share, fidelity by magnitude vs calibrated
(SparseGPT) selection, and the time each takes.

usage: python benchmarks/sparsity.py [--mnist-min-channels 32] [--zoo resnet18 ...] [--zoo-calibrate resnet18]
       [--zoo-samples 16] [--json out.json]

MNIST (models/mnist, trained): calibrated on `mnist5k_calib.npz` (its last quarter held out for the
fidelity), top-1 accuracy measured on the 1,000 test images, never calibrated on. The floor is lowered
(`--mnist-min-channels`): at the default 256 no layer of these small CNNs qualifies. Zoo topologies
(tests/data, seeded random weights): eligible layers and MAC share at the default floor for every one; for
`--zoo-calibrate`, fidelity on held-out seeded random inputs (random weights: a check of the machinery and
of the relative merit, not an accuracy). Engine latency needs a GPU: scripts/gpu_sparse.sh.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
MNIST = ROOT / "models" / "mnist"


def _top1(model: Any, x: np.ndarray, y: np.ndarray) -> float:
    from onnxprune import runtime

    logits = next(iter(runtime.run_model(model, {"input": x}).values()))
    return float((logits.argmax(axis=1) == y).mean())


def _run(model: Any, options: Any) -> tuple[Any, float]:
    from onnxprune.sparsity import sparsify_model

    start = time.perf_counter()
    result = sparsify_model(model, options)
    return result, time.perf_counter() - start


def _fidelity(result: Any) -> dict[str, Any]:
    output = result.report["fidelity"]["outputs"][0]
    return {
        "cosine": output["cosine"],
        "max_rel": output["max_rel_err"],
        "top1_agree": output["top1_agreement"],
    }


def mnist_row(name: str, min_channels: int) -> dict[str, Any]:
    import onnx

    from onnxprune.sparsity import SparsifyOptions

    model = onnx.load(str(MNIST / f"{name}.onnx"))
    test = np.load(MNIST / "mnist5k_test.npz")
    calib = MNIST / "mnist5k_calib.npz"
    row: dict[str, Any] = {
        "model": name,
        "min_channels": min_channels,
        "dense_top1": _top1(model, test["x"], test["y"]),
    }
    for method, options in (
        ("magnitude", SparsifyOptions(min_channels=min_channels, calib=calib, selection="magnitude")),
        ("one_pass", SparsifyOptions(min_channels=min_channels, calib=calib, sequential=False)),
        ("sparsegpt", SparsifyOptions(min_channels=min_channels, calib=calib)),
    ):
        result, seconds = _run(model, options)
        report = result.report
        row.update(layers=f"{report['sparsified']}/{report['candidates']}", macs_share=report["macs_share"])
        row[method] = {
            "top1": _top1(result.model, test["x"], test["y"]),
            "seconds": seconds,
            **_fidelity(result),
        }
        if method != "magnitude":
            done = [r for r in report["layers"] if r["sparsified"]]
            # Each on its own Grams: a one-pass layer's inputs are the original's, a sequential one's are
            # those of the model sparsified so far (what it will see).
            row[method]["mean_layer_error"] = {
                "sparsegpt": float(np.mean([r["output_error"] for r in done])),
                "magnitude": float(np.mean([r["magnitude_output_error"] for r in done])),
            }
            row[method]["fidelity_data"] = report["fidelity"]["data"]
    return row


def zoo_row(name: str, calibrate: bool, samples: int) -> dict[str, Any]:
    sys.path.insert(0, str(ROOT / "tests"))
    import weights

    from onnxprune.inputs import make_inputs
    from onnxprune.sparsity import SparsifyOptions, survey

    model = weights.load(name)
    layers, total = survey(model)
    eligible = [layer for layer in layers if layer.eligible]
    row: dict[str, Any] = {
        "model": name,
        "layers": f"{len(eligible)}/{len(layers)}",
        "macs_share": sum(layer.macs for layer in eligible) / total if total else 0.0,
    }
    if not calibrate or not eligible:
        return row
    feeds = make_inputs(model, iterations=samples, seed=1)
    data = {key: np.concatenate([feed[key] for feed in feeds]) for key in feeds[0]}
    for method, sequential in (("magnitude", True), ("one_pass", False), ("sparsegpt", True)):
        selection = "magnitude" if method == "magnitude" else "sparsegpt"
        options = SparsifyOptions(calib=data, batch=4, selection=selection, sequential=sequential)
        result, seconds = _run(model, options)
        row[method] = {"seconds": seconds, **_fidelity(result), "data": result.report["fidelity"]["data"]}
    return row


def main() -> None:
    formatter = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=formatter)
    mnist = ["mnist_vgg.plain", "mnist_resnet.plain", "mnist_vgg.l1", "mnist_resnet.l1"]
    parser.add_argument("--mnist", nargs="*", default=mnist)
    parser.add_argument("--mnist-min-channels", type=int, default=32)
    parser.add_argument("--zoo", nargs="*", default=None, help="topologies in tests/data (default: all)")
    parser.add_argument("--zoo-calibrate", nargs="*", default=["resnet18"])
    parser.add_argument("--zoo-samples", type=int, default=16)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT / "tests"))
    import weights

    zoo = args.zoo if args.zoo is not None else weights.topologies()
    results: dict[str, list] = {"mnist": [], "zoo": []}
    for name in args.mnist:
        results["mnist"].append(mnist_row(name, args.mnist_min_channels))
        print(json.dumps(results["mnist"][-1]), flush=True)
    for name in zoo:
        results["zoo"].append(zoo_row(name, name in args.zoo_calibrate, args.zoo_samples))
        print(json.dumps(results["zoo"][-1]), flush=True)
    if args.json is not None:
        args.json.write_text(json.dumps(results, indent=2))
    _print_tables(results)


def _print_tables(results: dict[str, list]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    table = Table(
        title="MNIST: top-1 on the 1,000 test images; held-out cosine (magnitude / SparseGPT one-pass / "
        "SparseGPT sequential)"
    )
    for column in ("model", "2:4 layers", "MACs", "dense", "top-1 mag/1-pass/seq", "cosine mag/1-pass/seq",
                   "layer err 1-pass/seq", "s mag/1-pass/seq"):  # fmt: skip
        table.add_column(column, justify="right")
    methods = ("magnitude", "one_pass", "sparsegpt")
    for r in results["mnist"]:
        errors = [r[m]["mean_layer_error"]["sparsegpt"] for m in methods[1:]]
        table.add_row(r["model"], r["layers"], f"{r['macs_share']:.1%}", f"{r['dense_top1']:.1%}",
                      "/".join(f"{r[m]['top1']:.1%}" for m in methods),
                      "/".join(f"{r[m]['cosine']:.4f}" for m in methods),
                      "/".join(f"{e:.2e}" for e in errors),
                      "/".join(f"{r[m]['seconds']:.1f}" for m in methods))  # fmt: skip
    console.print(table)
    table = Table(title="zoo (random weights): eligible at the default floor; held-out fidelity cosine")
    for column in ("model", "2:4 layers", "MACs", "cosine mag/1-pass/seq", "s mag/1-pass/seq"):
        table.add_column(column, justify="right")
    for r in results["zoo"]:
        done = all(m in r for m in methods)
        table.add_row(r["model"], r["layers"], f"{r['macs_share']:.1%}",
                      "/".join(f"{r[m]['cosine']:.5f}" for m in methods) if done else "-",
                      "/".join(f"{r[m]['seconds']:.1f}" for m in methods) if done else "-")  # fmt: skip
    console.print(table)


if __name__ == "__main__":
    main()
