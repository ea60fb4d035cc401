#!/usr/bin/env python3
"""Benchmark: prune time and peak memory next to the time to just load and save the same model.

usage: python benchmarks/prune_speed.py [--model resnet50] [--repeat 3]

Each measurement runs in a fresh subprocess so that its peak RSS (VmHWM) is its own. "load+save" reads
the ONNX file and writes it back; "prune" is `api.prune` at --ratio 0.5 without verification (load, analyse,
plan, rewrite, checker, shape inference, one ONNX Runtime run for the output-shape check, save); "prune +
verify" adds the two Polygraphy comparisons. Prints a table; the aim is prune within 2x of load+save.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

STEP = r"""
import json, sys, time
sys.path.insert(0, {tests!r})
import onnx
from onnxprune import api, files
mode, src, dst = sys.argv[1:4]
start = time.perf_counter()
if mode == "load+save":
    files.save_model(files.read_model(src), dst)
else:
    checks = api.VerifyOptions(enabled=(mode == "prune+verify"))
    api.prune(src, dst, api.PlanOptions(ratio=0.5), verify=checks)
elapsed = time.perf_counter() - start
# VmHWM, not ru_maxrss: the latter can carry the parent's peak over an exec.
peak = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM")) / 1024
print(json.dumps({{"seconds": elapsed, "peak_mib": peak}}))
"""


def measure(mode: str, src: Path, dst: Path) -> dict[str, float]:
    code = STEP.format(tests=str(ROOT / "tests"))
    command = [sys.executable, "-c", code, mode, str(src), str(dst)]
    out = subprocess.run(command, capture_output=True, text=True)
    if out.returncode:
        raise SystemExit(out.stderr)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    formatter = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=formatter)
    parser.add_argument("--model", default="resnet50", help="a topology in tests/data")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT / "tests"))
    import onnx
    import weights
    from rich.console import Console
    from rich.table import Table

    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / f"{args.model}.onnx"
        onnx.save(weights.load(args.model, seed=0), src)
        size_mib = src.stat().st_size / 2**20
        rows = {}
        for mode in ("load+save", "prune", "prune+verify"):
            runs = [measure(mode, src, Path(tmp) / f"out_{mode}.onnx") for _ in range(args.repeat)]
            rows[mode] = (min(r["seconds"] for r in runs), max(r["peak_mib"] for r in runs))
    table = Table(title=f"{args.model} ({size_mib:.0f} MiB of weights), best of {args.repeat}, 2 CPU cores")
    for column in ("step", "seconds", "x load+save", "peak RSS MiB"):
        table.add_column(column, justify="right")
    base = rows["load+save"][0]
    for mode, (seconds, peak) in rows.items():
        table.add_row(mode, f"{seconds:.2f}", f"{seconds / base:.1f}", f"{peak:.0f}")
    Console().print(table)


if __name__ == "__main__":
    main()
