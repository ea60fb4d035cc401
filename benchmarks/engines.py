"""Engines of every ``tests/data`` topology, original and pruned at ``--target-macs 0.5``: plan size against
the parameter ratio, and build seconds, on the backend ``auto`` picks here (TensorRT-RTX on a CPU-only
machine).

    .venv/bin/python benchmarks/engines.py                       # every topology
    .venv/bin/python benchmarks/engines.py --models resnet50 yolov8n --repeats 3

Weights are the tests' seeded ones (``tests/weights.py``: random, BN statistics re-estimated), pruned with the
defaults (``--compensate bn``, so padded Convs after removed channels get bias maps) and no verification.
Aims (issue 23): the pruned plan's size within 5% of the pruned/original parameter ratio, and its build no
slower than the original's. ``source MB``: the kernel source a TensorRT-RTX plan carries (compiled on the GPU
at load; ``onnxprune/engine/anatomy.py``), the same whatever the widths; ``rest off``: the plan without it
against the parameter ratio. Build seconds are the builder's alone (``build_serialized_network``), the best of
``--repeats``. A topology the target cannot be reached on is listed with the reason.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import onnx

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from onnxprune import api  # noqa: E402
from onnxprune.engine import BuildOptions, measure_engine  # noqa: E402
from onnxprune.engine.report import EngineReport  # noqa: E402
from onnxprune.errors import OnnxPruneError  # noqa: E402
from onnxprune.measure.counter import count  # noqa: E402
from onnxprune.search.targets import Target  # noqa: E402

TOLERANCE = 0.05


def pruned_topology(name: str, folder: Path, compensate: str = "bn", macs: float = 0.5) -> tuple[Path, Path]:
    """``folder/NAME.onnx`` (seeded weights) and ``folder/NAME.pruned.onnx`` at ``--target-macs macs``."""
    import weights

    original, pruned = folder / f"{name}.onnx", folder / f"{name}.{compensate}.pruned.onnx"
    if not original.exists():
        onnx.save(weights.load(name), str(original))
    options = api.PlanOptions(ratio=0.0, compensate=compensate)
    api.prune(original, pruned, options, verify=api.VerifyOptions(enabled=False), target=Target("macs", macs))
    return original, pruned


def best_of(path: Path, options: BuildOptions, repeats: int) -> EngineReport:
    reports = [measure_engine(path, options) for _ in range(repeats)]
    return min(reports, key=lambda r: r.build_seconds)


def row(name: str, folder: Path, options: BuildOptions, repeats: int) -> dict:
    began = time.perf_counter()
    try:
        original, pruned = pruned_topology(name, folder)
    except OnnxPruneError as err:
        return {"model": name, "error": str(err)}
    base, small = best_of(original, options, repeats), best_of(pruned, options, repeats)
    params = count(onnx.load(str(original))).params, count(onnx.load(str(pruned))).params
    size_ratio, params_ratio = small.size_bytes / base.size_bytes, params[1] / params[0]
    return {
        "model": name,
        "backend": base.backend,
        "params_ratio": params_ratio,
        "size_ratio": size_ratio,
        "size_off": size_ratio / params_ratio - 1,
        # The plan without its kernel source (TensorRT-RTX: the CUDA C++ it compiles at load), which pruning
        # leaves as it is: the part that can shrink with the weights.
        "source_mb": (base.source_bytes / 2**20, small.source_bytes / 2**20),
        "rest_off": small.rest_bytes / base.rest_bytes / params_ratio - 1,
        "plan_mb": (base.size_bytes / 2**20, small.size_bytes / 2**20),
        # What is not the float32 weights: kernels, bias maps, the engine's own records.
        "other_mb": tuple((e.size_bytes - 4 * p) / 2**20 for e, p in ((base, params[0]), (small, params[1]))),
        "layers": (base.layers, small.layers),
        "build_s": (base.build_seconds, small.build_seconds),
        "maps": small.bias_maps,
        "seconds": time.perf_counter() - began,
    }


def print_table(rows: list[dict]) -> None:
    print(f"backend: {next((r['backend'] for r in rows if 'backend' in r), '-')}")
    head = ("model", "params", "plan MB", "plan", "off", "size", "other MB", "source MB", "rest off",
            "layers", "build s", "build")  # fmt: skip
    print(f"{head[0]:20s} {head[1]:>7s} {head[2]:>15s} {head[3]:>6s} {head[4]:>7s} {head[5]:>5s} "
          f"{head[6]:>12s} {head[7]:>12s} {head[8]:>8s} {head[9]:>9s} {head[10]:>12s} "
          f"{head[11]:>5s}  maps")  # fmt: skip
    for r in rows:
        if "error" in r:
            print(f"{r['model']:20s} not pruned: {r['error'][:100]}")
            continue
        (mb0, mb1), (s0, s1), (o0, o1), (l0, l1) = r["plan_mb"], r["build_s"], r["other_mb"], r["layers"]
        k0, k1 = r["source_mb"]
        size_ok = "ok" if abs(r["size_off"]) <= TOLERANCE else "MISS"
        time_ok = "ok" if s1 <= s0 else "MISS"
        maps = f"{r['maps']['converted']}/{r['maps']['maps']} {r['maps']['form']}"
        print(f"{r['model']:20s} {r['params_ratio']:7.3f} {mb0:7.2f}->{mb1:6.2f} {r['size_ratio']:6.3f} "
              f"{r['size_off']:+7.1%} {size_ok:>5s} {o0:5.2f}->{o1:5.2f} {k0:5.2f}->{k1:5.2f} "
              f"{r['rest_off']:+8.1%} {l0:4d}->{l1:3d} "
              f"{s0:5.2f}->{s1:5.2f} {time_ok:>5s}  {maps}")  # fmt: skip


def main() -> None:
    import weights

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=weights.topologies())
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--backend", default="auto")
    parser.add_argument("--bias-maps", default="auto")
    args = parser.parse_args()
    options = BuildOptions(backend=args.backend, bias_maps=args.bias_maps)
    with tempfile.TemporaryDirectory(prefix="onnxprune-engines-") as tmp:
        rows = []
        for name in args.models:
            rows.append(row(name, Path(tmp), options, args.repeats))
            print(f"  {name}: {rows[-1].get('seconds', 0):.1f} s", file=sys.stderr, flush=True)
    print_table(rows)


if __name__ == "__main__":
    main()
