#!/usr/bin/env python3
"""FP16 fidelity per zoo topology: the float32 model (tests/data, BN-calibrated seeded weights, as the tests
load them) against its FP16 conversion (onnxprune.fp16), on one seeded input, ONNX Runtime on the CPU.

usage: python benchmarks/fp16_fidelity.py [TOPOLOGY ...]

Per output: cosine similarity, max|a-b| / max|a| (what the former 2% bound tested), RMS error over the
output's standard deviation, and top-1 agreement for class scores. README "FP16 fidelity" holds a run.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def rows(name: str) -> list[dict]:
    import weights

    from onnxprune import runtime
    from onnxprune.fp16 import convert_to_fp16
    from onnxprune.inputs import make_inputs

    model = weights.load(name)
    feed = make_inputs(model, iterations=1, seed=0)[0]
    dense, half = runtime.run_model(model, feed), runtime.run_model(convert_to_fp16(model), feed)
    found = []
    for output, value in dense.items():
        a, b = value.astype(np.float64), half[output].astype(np.float64)
        row = {
            "model": name,
            "output": output,
            "cosine": float((a * b).sum() / (np.linalg.norm(a) * np.linalg.norm(b))),
            "max_rel": float(np.abs(a - b).max() / np.abs(a).max()),
            "rms_over_std": float(np.sqrt(((a - b) ** 2).mean()) / a.std()),
        }
        if a.ndim == 2 and a.shape[1] > 1:
            row["top1_agreement"] = float((a.argmax(1) == b.argmax(1)).mean())
        found.append(row)
    return found


def main() -> None:
    sys.path.insert(0, str(ROOT / "tests"))
    import weights

    for name in sys.argv[1:] or weights.topologies():
        for row in rows(name):
            print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
