"""onnxprune: an offline channel-pruning compiler for exported ONNX CNNs.

Pipeline, one module per stage: load (graph) → analyse (channels, rules) → plan (plan, importance)
→ rewrite → verify → build (engine: TensorRT or TensorRT-RTX). Heavy modules are imported lazily so
``import onnxprune`` stays cheap.
"""

from onnxprune.errors import OnnxPruneError

__version__ = "0.1.0"
__all__ = ["OnnxPruneError", "__version__"]
