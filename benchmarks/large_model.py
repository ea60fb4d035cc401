"""Large models: a synthetic CNN over protobuf's 2 GB limit, loaded, pruned and saved with external data.

    .venv/bin/python benchmarks/large_model.py                 # ~2.2 GB of weights (needs ~10 GB of RAM)
    .venv/bin/python benchmarks/large_model.py --size-gb 0.3   # a quick run

The model is a chain of 3x3 Conv → BN → Relu at ``--channels`` channels (1024: 37.7 MB a Conv), as many as
``--size-gb`` needs, then GlobalAveragePool → Flatten → Gemm. It is written with external data to a
temporary directory (removed afterwards unless ``--keep``). A fresh child process then loads it
(``files.read_model``), prunes it (``api.prune_model``, ratio 0.5, with the usual ONNX Runtime check and,
with ``--verify``, the masked-reference verification) and saves it with external data
(``files.save_model``), timing each step.

Peak memory is the child's high-water resident set (``VmHWM`` of /proc/self/status; elsewhere
``resource.getrusage(RUSAGE_SELF).ru_maxrss``) of the whole process (Python, numpy, protobuf, ONNX
Runtime), read after each step, so each value is the peak so far. tracemalloc would miss protobuf's and ONNX
Runtime's own allocations. The baseline is the peak after importing onnxprune, before loading.
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from onnx import TensorProto, helper, numpy_helper

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def build(path: Path, size_gb: float, channels: int, seed: int = 0) -> int:
    """Write the synthetic model with external data; returns the bytes of weights."""
    from onnxprune.files import save_model

    rng = np.random.default_rng(seed)
    per_conv = channels * channels * 9 * 4
    blocks = max(1, round(size_gb * 1e9 / per_conv))
    nodes, inits = [], []
    x, c_in = "input", 3

    def param(name: str, values: np.ndarray) -> str:
        inits.append(numpy_helper.from_array(values.astype(np.float32), name))
        return name

    for k in range(blocks + 1):
        c_out = channels
        w = rng.standard_normal((c_out, c_in, 3, 3), dtype=np.float32) * np.float32(np.sqrt(2 / (9 * c_in)))
        conv = f"/block{k}/Conv"
        nodes.append(helper.make_node("Conv", [x, param(f"w{k}", w)], [conv], name=conv, pads=[1] * 4))
        gamma = rng.uniform(0.0, 1.5, c_out)
        bn = [param(f"bn{k}_{p}", v) for p, v in zip("gbmv", (gamma, rng.normal(0, 0.1, c_out),
              rng.normal(0, 0.1, c_out), rng.uniform(0.5, 2.0, c_out)), strict=True)]  # fmt: skip
        nodes.append(
            helper.make_node("BatchNormalization", [conv, *bn], [f"/block{k}/BN"], name=f"/block{k}/BN")
        )
        nodes.append(helper.make_node("Relu", [f"/block{k}/BN"], [f"/block{k}/Relu"], name=f"/block{k}/Relu"))
        x, c_in = f"/block{k}/Relu", c_out
        del w
    nodes.append(helper.make_node("GlobalAveragePool", [x], ["pooled"], name="/head/GAP"))
    nodes.append(helper.make_node("Flatten", ["pooled"], ["flat"], name="/head/Flatten", axis=1))
    fc = param("fc_w", rng.normal(0, 0.03, (10, channels)))
    nodes.append(helper.make_node("Gemm", ["flat", fc, param("fc_b", np.zeros(10))], ["logits"], transB=1))
    graph = helper.make_graph(
        nodes,
        "large",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, 4, 4])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 10])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    weights = sum(len(t.raw_data) for t in model.graph.initializer)
    save_model(model, path, external_data=True)
    return weights


def rss_bytes() -> int:
    """Peak resident set of this process so far: VmHWM on Linux. getrusage's ru_maxrss would do too, but it
    survives fork + exec, so a child started by a big parent would report the parent's peak."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux


def measure(path: Path, out: Path, ratio: float, verify: bool) -> dict[str, float]:
    """Load, prune and save in this (fresh) process; times in s and peak RSS in bytes after each step."""
    from onnxprune import api, files

    row: dict[str, float] = {"rss_base": rss_bytes()}
    t = time.perf_counter()
    model = files.read_model(path)
    row["load_s"], row["rss_load"] = time.perf_counter() - t, rss_bytes()
    t = time.perf_counter()
    options = api.PlanOptions(ratio=ratio)
    result = api.prune_model(model, options, api.VerifyOptions() if verify else None)
    row["prune_s"], row["rss_prune"] = time.perf_counter() - t, rss_bytes()
    t = time.perf_counter()
    files.save_model(result.pruned, out, external_data=True)
    row["save_s"], row["rss_save"] = time.perf_counter() - t, rss_bytes()
    row["pruned_weights"] = sum(p.stat().st_size for p in out.parent.iterdir() if p.name.startswith(out.name))
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size-gb", type=float, default=2.2, help="weights to generate (GB, 1e9 bytes)")
    parser.add_argument("--channels", type=int, default=1024)
    parser.add_argument("--ratio", type=float, default=0.5)
    parser.add_argument("--verify", action="store_true", help="also verify against the masked reference")
    parser.add_argument("--keep", type=Path, help="build here and keep the files")
    parser.add_argument("--measure", nargs=2, type=Path, help=argparse.SUPPRESS)  # the child's entry
    args = parser.parse_args()
    if args.measure:
        src, dst = args.measure
        print(json.dumps(measure(src, dst, args.ratio, args.verify)))
        return
    workdir = args.keep or Path(tempfile.mkdtemp(prefix="onnxprune-large-"))
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        src, dst = workdir / "large.onnx", workdir / "large.pruned.onnx"
        t = time.perf_counter()
        weights = build(src, args.size_gb, args.channels)
        print(f"built {src} ({weights / 1e9:.2f} GB of weights) in {time.perf_counter() - t:.1f} s")
        child = [sys.executable, __file__, "--measure", str(src), str(dst), "--ratio", str(args.ratio)]
        done = subprocess.run(child + (["--verify"] if args.verify else []), capture_output=True, text=True)
        if done.returncode:
            sys.exit(f"pruning failed:\n{done.stderr.strip()[-3000:]}")
        report(weights, json.loads(done.stdout.strip().splitlines()[-1]))
    finally:
        if args.keep is None:
            shutil.rmtree(workdir, ignore_errors=True)


def report(weights: int, row: dict[str, float]) -> None:
    gb = 1e9
    lines = [
        ("weights (model + .data)", f"{weights / gb:.2f} GB"),
        ("pruned files", f"{row['pruned_weights'] / gb:.2f} GB"),
        ("load (files.read_model)", f"{row['load_s']:.1f} s"),
        ("prune (api.prune_model)", f"{row['prune_s']:.1f} s"),
        ("save (files.save_model, external data)", f"{row['save_s']:.1f} s"),
        ("peak RSS after imports", f"{row['rss_base'] / gb:.2f} GB"),
        ("peak RSS after load", f"{row['rss_load'] / gb:.2f} GB"),
        ("peak RSS after prune", f"{row['rss_prune'] / gb:.2f} GB"),
        ("peak RSS after save", f"{row['rss_save'] / gb:.2f} GB"),
        ("peak RSS / weights", f"{row['rss_save'] / weights:.2f}x"),
        ("(peak RSS - imports) / weights", f"{(row['rss_save'] - row['rss_base']) / weights:.2f}x"),
    ]
    width = max(len(k) for k, _ in lines)
    print("peak RSS: VmHWM (high-water resident set) of the child process that loads, prunes and saves")
    for key, value in lines:
        print(f"  {key:<{width}}  {value:>10}")


if __name__ == "__main__":
    main()
