"""A plan's anatomy: the kernel source a TensorRT-RTX plan carries is found, and what is left of the plan
shrinks with the weights when a model is pruned."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import weights

from engine._rtx import needs_rtx
from onnxprune import api
from onnxprune.engine import BuildOptions, measure_engine
from onnxprune.engine.anatomy import SOURCE_RUN, source_bytes
from onnxprune.measure.counter import count
from onnxprune.search.targets import Target


def test_long_text_counts_as_source_and_weights_do_not():
    floats = np.random.default_rng(0).normal(size=250_000).astype(np.float32).tobytes()
    kernel = b"__device__ void k(float* x) { x[threadIdx.x] *= 2.0f; }\n" * 20
    short = b"x" * (SOURCE_RUN - 1)  # a name, not a kernel
    assert source_bytes(floats) == 0
    nul = b"\0"  # as in a plan, where a string ends
    plan = floats + nul + kernel + nul + floats[:4096] + nul + short + nul + floats
    assert source_bytes(plan) == len(kernel)


@needs_rtx
def test_pruning_shrinks_the_plan_without_its_kernel_source(tmp_path):
    source, path = tmp_path / "efficientnet_b0.onnx", tmp_path / "pruned.onnx"
    onnx.save(weights.load("efficientnet_b0"), str(source))
    api.prune(
        source, path, api.PlanOptions(ratio=0.0), verify=api.VerifyOptions(enabled=False),
        target=Target("macs", 0.5),
    )  # fmt: skip
    before, after = (measure_engine(p, BuildOptions(backend="rtx")) for p in (source, path))
    # Squeeze-excite and swish kernels are compiled at load: megabytes of source, whatever the widths.
    assert before.source_bytes > 2**20 and abs(after.source_bytes / before.source_bytes - 1) < 0.05
    params = count(onnx.load(str(path))).params / count(onnx.load(str(source))).params
    assert after.size_bytes / before.size_bytes > params * 1.08  # the whole plan does not keep up ...
    assert after.rest_bytes / before.rest_bytes == pytest.approx(params, rel=0.05)  # ... the rest does
