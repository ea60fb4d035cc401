#!/usr/bin/env python3
"""Benchmark: does the epoch that fine-tuning keeps follow the task? Every epoch scored through the client.

usage: python benchmarks/epoch_choice.py [--model v5-rec] [--target 0.5] [--calib-samples 1000]
                                         [--minutes 15] [--seeds 0,1] [--out out/epochs] [--json FILE]

Needs the ``[bench]`` and ``[train]`` extras. The model (benchmarks/realmodels/models.py) is pruned once as
a user would (``onnxprune prune MODEL --target-macs T --calib CALIB``, real_models.py's command), then for
each seed distilled from its original as ``onnxprune train PRUNED --teacher MODEL --data CALIB --minutes M
--lr 1e-4 --seed S`` does (the train API with those options). The training loop keeps one state only, the
one its epoch choice picks; here every epoch's trained values are taken as the loop records the epoch (a
wrapper around ``_Trainer._record``, the one place that sees each epoch's state), written into the pruned
graph, and scored by the task's own metric through the real client on the evaluation split
(realmodels/score.py; never the calibration data). The table gives per epoch the held-out loss and
agreement the choice sees and the task score it does not; below it, the Spearman correlation of each with
the score, and the epoch that each rule would keep: the one in use (``fidelity.improves``: the lowest loss
among epochs within held-out noise of the best agreement), the strict one before it (agreement and loss,
neither worse), the lowest loss, the last epoch.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import onnx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from real_models import prune_command  # noqa: E402
from realmodels import calib, score  # noqa: E402
from realmodels.models import MODELS  # noqa: E402

from onnxprune.train import export, loop  # noqa: E402
from onnxprune.train.fidelity import agreement, improves  # noqa: E402
from onnxprune.train.options import TrainOptions  # noqa: E402
from onnxprune.train.run import train  # noqa: E402


def every_epoch(pruned: Path, teacher: Path, data: Path, options: TrainOptions, out: Path) -> dict[str, Any]:
    """Train; every epoch's model written under ``out`` as ``epN.onnx``; the history and the kept epoch."""
    states: dict[int, dict[str, np.ndarray]] = {}
    sources: dict[str, str] = {}  # where each trained value lives in the graph (the module knows)
    record = loop._Trainer._record

    def recording(self: Any, epoch: int, loss: float | None, seconds: float) -> dict[str, Any]:
        found = record(self, epoch, loss, seconds)
        states[epoch] = self.module.trained_arrays()
        sources.update(self.module.sources)
        return found

    loop._Trainer._record = recording  # type: ignore[method-assign]
    try:
        result = train(pruned, out / "kept.onnx", data, teacher=teacher, options=options)
    finally:
        loop._Trainer._record = record  # type: ignore[method-assign]
    model = onnx.load(str(pruned))
    for epoch, arrays in states.items():
        onnx.save(export.write_back(model, arrays, sources), str(out / f"ep{epoch}.onnx"))
    return {"history": result.history, "kept": result.best_epoch, "held_out": result.held_out}


def choices(rows: list[dict[str, Any]], count: int) -> dict[str, int]:
    """The epoch each rule keeps, from (agreement, loss) per epoch."""
    results = [(r["agreement"], r["loss"]) for r in rows]

    def by(rule_count: int) -> int:
        kept, top = 0, results[0][0]
        for epoch, result in enumerate(results[1:], 1):
            top = max(top, result[0]) if result[0] is not None else top
            kept = epoch if improves(result, results[kept], top, rule_count) else kept
        return kept

    return {
        "in use": by(count),
        "neither worse": by(0),
        "lowest loss": int(np.argmin([r[1] for r in results])),
        "last": len(results) - 1,
    }


def spearman(a: list[float], b: list[float]) -> float:
    """Rank correlation, tied values sharing their mean rank (scores of 300 lines tie often)."""

    def ranks(values: list[float]) -> np.ndarray:
        v = np.asarray(values, float)
        return np.array([np.mean(np.flatnonzero(np.sort(v) == x)) for x in v])

    x, y = ranks(a), ranks(b)
    if x.std() == 0 or y.std() == 0:  # one of them never moved: no order to correlate
        return float("nan")
    return float(np.corrcoef(x, y)[0, 1])


def run_seed(spec: Any, pruned: Path, data: Path, seed: int, minutes: float, out: Path) -> dict[str, Any]:
    folder = out / f"seed{seed}"
    folder.mkdir(parents=True, exist_ok=True)
    options = TrainOptions(minutes=minutes, lr=1e-4, seed=seed, progress=False)
    found = every_epoch(pruned, spec.file(), data, options, folder)
    if not found["held_out"]:  # the choice has nothing to go by: too few samples to hold any out
        raise SystemExit(f"no held-out samples among {data.name}'s: give more --calib-samples")
    rows = []
    for record in found["history"]:
        measures = record.get("fidelity") or {}
        rows.append({
            "epoch": record["epoch"], "loss": record["holdout_loss"], "agreement": agreement(measures),
            "score": score.evaluate(spec.task, folder / f"ep{record['epoch']}.onnx").value,
        })  # fmt: skip
        print(
            " | ".join(f"{v:.4g}" if isinstance(v, float) else str(v) for v in rows[-1].values()), flush=True
        )
    later = rows[1:]  # the input (epoch 0) is far below every trained epoch on all three
    return {
        "seed": seed, "kept": found["kept"], "held_out": found["held_out"], "rows": rows,
        "chosen": choices(rows, found["held_out"]),
        "spearman_loss": spearman([r["loss"] for r in later], [r["score"] for r in later]),
        "spearman_agreement": spearman([r["agreement"] for r in later], [r["score"] for r in later]),
    }  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="v5-rec", choices=sorted(MODELS))
    parser.add_argument("--target", type=float, default=0.5)
    parser.add_argument("--calib-samples", type=int, default=1000)
    parser.add_argument("--minutes", type=float, default=15.0)
    parser.add_argument("--seeds", default="0,1")
    parser.add_argument("--out", type=Path, default=ROOT / "out" / "epochs")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    spec = MODELS[args.model]
    args.out.mkdir(parents=True, exist_ok=True)
    data = calib.calibration_file(spec.task, args.calib_samples)
    pruned = args.out / f"{spec.name}-macs{args.target:g}.onnx"
    command = prune_command(spec, pruned, args.out / "prune.json", args.target, "calib", "sensitivity", data)
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    results = []
    for seed in (int(s) for s in args.seeds.split(",")):
        print(f"seed {seed}: epoch | held-out loss | held-out agreement | {spec.task} score", flush=True)
        results.append(run_seed(spec, pruned, data, seed, args.minutes, args.out))
        found = results[-1]
        print(f"seed {seed}: kept {found['kept']}; rules: {found['chosen']}; Spearman with the score: "
              f"loss {found['spearman_loss']:.2f}, agreement {found['spearman_agreement']:.2f}")  # fmt: skip
        if args.json:
            args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
