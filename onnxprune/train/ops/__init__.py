"""ONNX operators as PyTorch functions, for the training interpreter (``torchgraph.py``).

Each entry of ``OPS`` takes ``(node, inputs)``: ``node`` carries the ONNX attributes, the opset and whether
the module is training; ``inputs`` are tensors (``None`` for an omitted optional input). An op returns one
tensor or a tuple (one per ONNX output). Only what the ONNX spec defines is implemented; an attribute
value that is not is refused with the op named, and the conversion check against ONNX Runtime (op by op,
on ONNX Runtime's own inputs) catches any difference that slips through. Shape-like values (``Shape``,
``Gather`` on shapes) are int64 tensors.

One module per family, each registering its ops with ``@op``: ``conv`` (convolutions, normalisations),
``elementwise`` (activations, arithmetic, logic, softmax), ``linear`` (pools, Gemm, MatMul, Einsum),
``movement`` (shapes, slicing, gathering, padding), ``resize``, ``reduce`` (reductions, ArgMax, TopK).
"""

from onnxprune.train.ops import conv, elementwise, linear, movement, reduce, resize  # noqa: F401 - registers
from onnxprune.train.ops.base import OPS, NodeCall, Op, UnsupportedOpError, ints, op

__all__ = ["OPS", "NodeCall", "Op", "UnsupportedOpError", "ints", "op"]
