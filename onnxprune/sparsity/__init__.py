"""Fine-grained 2:4 sparsity for sparse Tensor Cores (``onnxprune sparsify``).

``pattern``: the pattern TensorRT checks; ``weights``: a layer's stored weight, through Cast / Transpose /
DequantizeLinear; ``layers``: eligibility per layer; ``sparsegpt`` and ``gram``: calibrated selection and
update; ``measure``: calibration data, Grams and fidelity; ``options``; ``apply``: the stage itself.
"""

from onnxprune.sparsity.apply import (
    NothingToSparsify,
    SparsifyResult,
    holds_24,
    sparsify,
    sparsify_model,
    survey,
)
from onnxprune.sparsity.options import SparsifyOptions

__all__ = [
    "NothingToSparsify",
    "SparsifyOptions",
    "SparsifyResult",
    "holds_24",
    "sparsify",
    "sparsify_model",
    "survey",
]
