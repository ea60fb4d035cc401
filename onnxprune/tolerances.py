"""Every tolerance a comparison uses, in one place, with why it is what it is.

A comparison passes an output when ``|a - b| <= atol + rtol * |a|`` (elementwise, ``onnxprune check``) or
``max|a - b| <= atol + rtol * max|a|`` (scale-relative: exactness, FP16, TensorRT), ``a`` being the
reference; some also want a cosine similarity of at least ``min_cosine``.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Tolerance:
    rtol: float
    atol: float
    min_cosine: float | None = None


# Pruned vs its masked reference: the same math up to float32 rounding (sums in another order, folded
# biases), whatever was pruned. atol only matters for outputs that are (nearly) all zero.
EXACT = Tolerance(rtol=1e-5, atol=1e-6)

# `onnxprune check`'s defaults: two models that should compute the same, compared element by element.
CHECK = Tolerance(rtol=1e-5, atol=1e-5)

# FP16 ONNX vs FP32, and a TensorRT engine (which may run layers in FP16/TF32) vs ONNX Runtime: every output
# within 2 % of its own scale and pointing the same way.
REDUCED_PRECISION = Tolerance(rtol=2e-2, atol=1e-4, min_cosine=0.999)

# `onnxprune train`: the PyTorch module built from an ONNX graph vs ONNX Runtime, before training (the
# conversion) and after (the written model vs the trained module): the same float32 math, another kernel.
CONVERSION = Tolerance(rtol=1e-5, atol=1e-6)

# Two analysis passes agree on a removed channel's value (float64 arithmetic on per-channel constants).
VALUE_RTOL, VALUE_ATOL = 1e-6, 1e-12
