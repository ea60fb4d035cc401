#!/usr/bin/env python3
"""Benchmark: prune time and peak memory next to the time to just load and save the same model, and the
delivered efficiency of --target-macs 0.5 (MACs ratio / ONNX Runtime CPU latency ratio).

usage: python benchmarks/prune_speed.py [--model resnet50] [--repeat 3] [--efficiency resnet50,mobilenet_v2]
                                       [--compensate bn] [--round-to auto] [--no-speed]

Each measurement runs in a fresh subprocess so that its peak RSS (VmHWM) is its own. "load+save" reads
the ONNX file and writes it back; "prune" is `api.prune` at --ratio 0.5 without verification (load, analyse,
plan, rewrite, checker, shape inference, one ONNX Runtime run for the output-shape check, save); "prune +
verify" adds verification (both questions, the per-layer errors). "whole process" rows time the commands,
interpreter start-up and imports included: `python -c "onnx.save(onnx.load(A), B)"` against `onnxprune prune
A -o B --ratio 0.5 --no-verify`, in turns, best of at least 7 each; onnxprune's modules are byte-compiled
first (as an installed package's are). The efficiency table prunes each model with --target-macs 0.5 and times
original and pruned interleaved on ONNX Runtime (1 thread, at least 5 s each), with the --compensate mode
given (default bn, prune's: bias-map Adds after padded Convs that lost constant channels) and the --round-to
given (default auto, prune's: 8, or 16 where ONNX Runtime's CPU convolutions use blocks of 16). ``--no-speed``
skips the prune timing for the efficiency table alone. Prints the tables.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

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


LOAD_SAVE = "import onnx, sys; onnx.save(onnx.load(sys.argv[1]), sys.argv[2])"


def whole_process(command: list[str]) -> float:
    import time

    start = time.perf_counter()
    out = subprocess.run(command, capture_output=True, text=True, env=_env())
    if out.returncode:
        raise SystemExit(out.stderr)
    return time.perf_counter() - start


def interleaved(commands: dict[str, list[str]], repeat: int) -> dict[str, float]:
    """Best wall time of each command line, run in turns (a, b, a, b, ...) so that a busy spell of this
    shared machine hits all of them alike."""
    times: dict[str, list[float]] = {name: [] for name in commands}
    for _ in range(repeat):
        for name, command in commands.items():
            times[name].append(whole_process(command))
    return {name: min(seconds) for name, seconds in times.items()}


def console_script() -> list[str]:
    """The installed ``onnxprune`` command next to this Python (what a user runs), else ``python -m``."""
    script = Path(sys.executable).parent / "onnxprune"
    return [str(script)] if script.exists() else [sys.executable, "-m", "onnxprune.cli"]


def byte_compile() -> None:
    """Compile onnxprune's modules once, as pip does when it installs a package: this checkout is editable
    and the machine may set PYTHONDONTWRITEBYTECODE, so every CLI start would compile them again (0.27 s)."""
    import compileall

    compileall.compile_dir(str(ROOT / "onnxprune"), quiet=1)


def _env() -> dict[str, str]:
    import os

    return dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))


def efficiency(
    name: str, tmp: Path, compensate: str = "bn", round_to: str = "auto", rounds: int = 3
) -> tuple[float, list[float], int]:
    """MACs ratio of --target-macs 0.5 and its latency ratio on ONNX Runtime CPU, once per round (each
    round times both models interleaved for at least 4 s each), and the width step the plan used."""
    import onnx
    import weights

    from onnxprune import api
    from onnxprune.measure.bench import BenchOptions, bench

    src, dst = tmp / f"{name}.onnx", tmp / f"{name}.m50.onnx"
    onnx.save(weights.load(name, seed=0), src)
    options = api.PlanOptions(ratio=0.0, compensate=compensate, round_to=round_to)
    result = api.prune(src, dst, options, verify=api.VerifyOptions(enabled=False),
                       target=api.Target("macs", 0.5))  # fmt: skip
    macs = result.report["macs"]["after"] / result.report["macs"]["before"]
    ratios = []
    for _ in range(rounds):
        original, pruned = bench([src, dst], BenchOptions(runs=10, warmup=2, threads=1, min_seconds=4.0))
        ratios.append(pruned.median_ms / original.median_ms)
    return macs, ratios, result.report["options"]["width_step"]


def main() -> None:
    formatter = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=formatter)
    parser.add_argument("--model", default="resnet50", help="a topology in tests/data")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--efficiency", default="resnet50,mobilenet_v2", help="topologies ('' for none)")
    parser.add_argument("--compensate", default="bn", help="what the efficiency prunes leave: none | bn")
    parser.add_argument("--round-to", default="auto", help="the efficiency prunes' --round-to (auto | N)")
    parser.add_argument("--no-speed", action="store_true", help="only the efficiency table")
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT / "tests"))
    from rich.console import Console

    console = Console()
    byte_compile()
    with tempfile.TemporaryDirectory() as tmp:
        if not args.no_speed:
            console.print(speed_table(args.model, args.repeat, Path(tmp)))
        names = [n for n in args.efficiency.split(",") if n]
        if names:
            console.print(efficiency_table(names, Path(tmp), args.compensate, args.round_to))


def speed_table(model: str, repeat: int, tmp: Path) -> Any:
    import onnx
    import weights
    from rich.table import Table

    src = tmp / f"{model}.onnx"
    onnx.save(weights.load(model, seed=0), src)
    size_mib = src.stat().st_size / 2**20
    rows = {}
    for mode in ("load+save", "prune", "prune+verify"):
        runs = [measure(mode, src, tmp / f"out_{mode}.onnx") for _ in range(repeat)]
        rows[mode] = (min(r["seconds"] for r in runs), max(r["peak_mib"] for r in runs))
    cli = [*console_script(), "prune", str(src), "-o", str(tmp / "cli.onnx")]
    bare = [sys.executable, "-c", LOAD_SAVE, str(src), str(tmp / "bare.onnx")]
    processes = interleaved(
        {
            "whole process: load+save": bare,
            "whole process: onnxprune prune": [*cli, "--ratio", "0.5", "--no-verify"],
        },
        max(repeat, 7),
    )
    cores = os.cpu_count()
    turns = max(repeat, 7)
    title = f"{model} ({size_mib:.0f} MiB), best of {repeat} (processes: of {turns}), {cores} CPU cores"
    table = Table(title=title)
    for column in ("step", "seconds", "x load+save", "peak RSS MiB"):
        table.add_column(column, justify="right")
    base = rows["load+save"][0]
    for mode, (seconds, peak) in rows.items():
        table.add_row(mode, f"{seconds:.2f}", f"{seconds / base:.1f}", f"{peak:.0f}")
    bare_seconds = processes["whole process: load+save"]
    for mode, seconds in processes.items():
        table.add_row(mode, f"{seconds:.2f}", f"{seconds / bare_seconds:.2f} (of the process)", "")
    return table


def efficiency_table(names: list[str], tmp: Path, compensate: str, round_to: str) -> Any:
    from rich.table import Table

    title = (
        f"--target-macs 0.5 --compensate {compensate} --round-to {round_to}, ONNX Runtime CPU (1 thread): "
        "delivered efficiency"
    )
    table = Table(title=title, caption="median of 3 rounds (each: both models in turns, >= 4 s each); range")
    for column in ("model", "widths", "MACs ratio", "latency ratio", "MACs / latency", "range"):
        table.add_column(column, justify="right")
    for name in names:
        macs, ratios, step = efficiency(name, tmp, compensate, round_to)
        latency = statistics.median(ratios)
        spread = f"{macs / max(ratios):.2f}-{macs / min(ratios):.2f}"
        table.add_row(name, f"x{step}", f"{macs:.3f}", f"{latency:.3f}", f"{macs / latency:.2f}", spread)
    return table


if __name__ == "__main__":
    main()
