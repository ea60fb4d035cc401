"""Bias maps, each form measured: engine plan size and build seconds, ONNX Runtime CPU latency, and how far
the outputs move from the factored model (the forms but ``interior`` are exact).

    .venv/bin/python benchmarks/bias_maps.py                # resnet18 resnet50 mobilenet_v2 yolov8n
    .venv/bin/python benchmarks/bias_maps.py --models yolov8n --repeats 3 --seconds 4

Each model (``tests/weights.py``'s seeded weights) is pruned at ``--target-macs 0.5`` with
``--compensate bn``, which writes a bias map behind every padded Conv whose removed input channels carried a
constant (factored, ``rules/padmap.py``), and with ``--compensate none`` (no map at all; the search runs
again, so the widths may differ) as the floor a map-free model builds to. The factored model is then
rewritten into each form (``biasmaps.py``) and every variant is built on the ``auto`` backend
(best of ``--repeats``) and timed on ONNX Runtime's CPU provider, all variants of a model
interleaved run by run, one thread.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np
import onnx

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests"), str(ROOT / "benchmarks")]

from engines import best_of, pruned_topology  # noqa: E402

from onnxprune.biasmaps import FORMS, convert_maps  # noqa: E402
from onnxprune.engine import BuildOptions  # noqa: E402
from onnxprune.inputs import make_inputs  # noqa: E402
from onnxprune.measure.bench import BenchOptions, bench  # noqa: E402
from onnxprune.runtime import run_model  # noqa: E402


def output_error(reference: onnx.ModelProto, model: onnx.ModelProto, seed: int = 3) -> float:
    """Largest |a - b| / max|a| over the outputs, on one seeded input."""
    feed = make_inputs(reference, seed=seed)[0]
    want, got = run_model(reference, feed), run_model(model, feed)
    return max(float(np.abs(got[k] - want[k]).max() / max(np.abs(want[k]).max(), 1e-30)) for k in want)


def measure(name: str, folder: Path, repeats: int, seconds: float, backend: str) -> list[dict]:
    _, factored_path = pruned_topology(name, folder, "bn")
    _, plain_path = pruned_topology(name, folder, "none")
    factored = onnx.load(str(factored_path))
    variants: dict[str, tuple[onnx.ModelProto, dict]] = {}
    for form in FORMS:
        model, record = convert_maps(factored, form)
        variants[form] = (model, record.to_dict())
    variants["none (no map)"] = (onnx.load(str(plain_path)), {"maps": 0, "converted": 0})
    timing = bench(
        [model for model, _ in variants.values()],
        BenchOptions(runs=20, warmup=3, threads=1, min_seconds=seconds),
        names=list(variants),
    )
    rows = []
    for (form, (model, record)), latency in zip(variants.items(), timing, strict=True):
        path = folder / f"{name}.{form.split()[0]}.onnx"
        onnx.save(model, str(path))
        # The forms are already applied: the builder is handed each file as it is.
        engine = best_of(path, BuildOptions(backend=backend, bias_maps="factored"), repeats)
        rows.append(
            {
                "model": name,
                "form": form,
                "maps": f"{record['converted']}/{record['maps']}",
                "error": output_error(factored, model) if form in FORMS else None,
                "border": record.get("border_max_abs"),
                "onnx_mb": path.stat().st_size / 2**20,
                "plan_mb": engine.size_bytes / 2**20,
                "build_s": engine.build_seconds,
                "ort_ms": latency.median_ms,
                "backend": engine.backend,
            }
        )
    return rows


def print_table(rows: list[dict]) -> None:
    print(f"backend: {rows[0]['backend']}; ONNX Runtime CPU, 1 thread, median ms")
    print(f"{'model':14s} {'form':14s} {'maps':>7s} {'out err':>9s} {'border':>8s} {'onnx MB':>8s} "
          f"{'plan MB':>8s} {'build s':>8s} {'ORT ms':>8s}")  # fmt: skip
    for r in rows:
        error = "-" if r["error"] is None else f"{r['error']:.1e}"
        border = "-" if r["border"] is None else f"{r['border']:.3g}"
        print(f"{r['model']:14s} {r['form']:14s} {r['maps']:>7s} {error:>9s} {border:>8s} "
              f"{r['onnx_mb']:8.2f} {r['plan_mb']:8.2f} {r['build_s']:8.2f} {r['ort_ms']:8.2f}")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["resnet18", "resnet50", "mobilenet_v2", "yolov8n"])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=3.0, help="ONNX Runtime timing per model")
    parser.add_argument("--backend", default="auto")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="onnxprune-maps-") as tmp:
        for name in args.models:
            rows += measure(name, Path(tmp), args.repeats, args.seconds, args.backend)
            print(f"  {name} done", file=sys.stderr, flush=True)
    print_table(rows)


if __name__ == "__main__":
    main()
