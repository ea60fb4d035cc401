#!/usr/bin/env python3
"""Stand-in for scripts/gpu_sparse.sh where TensorRT is absent: each 2:4 layer of a sparsified model as the
matrix product it is (weight rows [K, C*R*S] times unfolded inputs [C*R*S, M]), timed on a CUDA device in
FP16 dense (torch.mm) and 2:4 sparse (torch.sparse.to_sparse_semi_structured, CUTLASS/cuSPARSELt).

usage: python scripts/gpu_sparse_torch.py SPARSE.onnx [--batch 32] [--repeat 50]

M is the layer's output positions at batch 1 (its MACs over K*C*R*S, from `inspect --sparsity`'s counter)
times --batch. A shape the sparse kernels refuse is listed as skipped. Needs PyTorch with CUDA on an
Ampere-or-later GPU; elsewhere it exits 1 with one line.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # onnxprune from this checkout


def _time(torch, fn, repeat: int) -> float:
    for _ in range(5):
        fn()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(repeat):
        fn()
    end.record()
    torch.cuda.synchronize()
    return start.elapsed_time(end) / repeat


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("model")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--repeat", type=int, default=50)
    args = parser.parse_args()
    try:
        import torch
        from torch.sparse import to_sparse_semi_structured
    except ImportError:
        sys.exit("gpu_sparse_torch: PyTorch with torch.sparse.to_sparse_semi_structured is not installed")
    if not torch.cuda.is_available():
        sys.exit("gpu_sparse_torch: no CUDA device visible to PyTorch")
    try:
        import onnx

        from onnxprune.sparsity import SparsifyOptions, survey
    except ImportError as err:  # a bare GPU box: onnx-graphsurgeon or onnxruntime may be missing
        sys.exit(f"gpu_sparse_torch: onnxprune cannot be imported ({err}); pip install -e . first")

    layers, _ = survey(onnx.load(args.model), SparsifyOptions(min_channels=1))
    total_dense = total_sparse = 0.0
    print(f"{'layer':48} {'K x D x M':>22} {'dense ms':>9} {'2:4 ms':>9}")
    for layer in (entry for entry in layers if entry.already and entry.layout is not None):
        rows = layer.layout.to_rows(layer.weight.values())
        k, d = rows.shape
        m = max(layer.macs // (k * d), 1) * args.batch
        w = torch.tensor(rows, dtype=torch.float16, device="cuda")
        x = torch.randn(d, m, dtype=torch.float16, device="cuda")
        try:  # the sparse kernels refuse some shapes, at conversion or at the first product
            sparse = to_sparse_semi_structured(w)
            sparse_ms = _time(torch, lambda s=sparse, x=x: torch.mm(s, x), args.repeat)
        except (RuntimeError, ValueError, NotImplementedError) as err:
            print(f"{layer.name[:48]:48} {f'{k}x{d}x{m}':>22} skipped: {str(err).splitlines()[0][:60]}")
            continue
        dense_ms = _time(torch, lambda w=w, x=x: torch.mm(w, x), args.repeat)
        total_dense, total_sparse = total_dense + dense_ms, total_sparse + sparse_ms
        print(f"{layer.name[:48]:48} {f'{k}x{d}x{m}':>22} {dense_ms:9.3f} {sparse_ms:9.3f}")
    if total_sparse:
        print(f"all timed layers: dense {total_dense:.3f} ms, 2:4 {total_sparse:.3f} ms, "
              f"speed-up {total_dense / total_sparse:.2f}x")  # fmt: skip


if __name__ == "__main__":
    main()
