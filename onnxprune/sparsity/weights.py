"""A layer's weight as stored: the constant, and the ops between it and the layer, followed both ways.

Exporters do not always hand a Conv or Gemm its weight directly. The chain from the stored constant to the
layer may pass through ``Identity``, ``Transpose`` (a MatMul whose weight PyTorch stores as ``[N, K]``),
``Cast`` (an FP16-stored model computing in float32) and ``DequantizeLinear`` (a QDQ model); each is
followed forwards (the values the layer sees) and backwards (new values written into the constant, in its
own dtype and layout), so the file keeps one copy of each weight. Anything else declines, with a reason.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import onnx_graphsurgeon as gs
from onnx import helper

FOLLOWED = ("Identity", "Transpose", "Cast", "DequantizeLinear")


class Declined(Exception):
    """A weight chain that cannot be followed; the message is the reason, as shown to the user."""


@dataclass
class StoredWeight:
    """``constant`` (an initializer or a ``Constant`` node's value) and the ``steps`` from it to the layer."""

    constant: gs.Constant
    steps: list[gs.Node] = field(default_factory=list)

    @property
    def chain(self) -> list[str]:
        return [step.op for step in self.steps]

    def values(self) -> np.ndarray:
        """The weight as the layer sees it."""
        value = np.asarray(self.constant.values)
        for step in self.steps:
            value = _forward(step, value)
        return value

    def store(self, weight: np.ndarray) -> None:
        """Writes ``weight`` (the layer's view) back into the constant, through every step in reverse."""
        stored = np.asarray(self.constant.values)
        inputs = [stored]  # each step's input, old values: the dtypes and zero points to map back into
        for step in self.steps[:-1]:
            inputs.append(_forward(step, inputs[-1]))
        value = weight
        for step, before in zip(reversed(self.steps), reversed(inputs[: len(self.steps)]), strict=True):
            value = _backward(step, value, before)
        self.constant.values = np.ascontiguousarray(value.astype(stored.dtype, copy=False))


def resolve(layer: gs.Node, index: int = 1) -> StoredWeight:
    """The stored weight behind ``layer.inputs[index]``, or ``Declined`` saying why there is none."""
    tensor = layer.inputs[index]
    steps: list[gs.Node] = []
    consumer = layer
    while True:
        _check_private(tensor, consumer)
        if isinstance(tensor, gs.Constant):
            return StoredWeight(tensor, steps[::-1])
        if not tensor.inputs:
            raise Declined(f"weight {tensor.name!r} is a graph input, computed at run time")
        producer = tensor.inputs[0]
        if producer.op == "Constant" and isinstance(producer.attrs.get("value"), gs.Constant):
            return StoredWeight(producer.attrs["value"], steps[::-1])
        if producer.op not in FOLLOWED:
            raise Declined(
                f"weight {tensor.name!r} is computed at run time by {producer.op} {producer.name!r}"
            )
        _check_step(producer)
        steps.append(producer)
        consumer, tensor = producer, producer.inputs[0]


def _check_private(tensor: gs.Tensor, consumer: gs.Node) -> None:
    """Sparsifying a weight that something else also reads would change that reader too."""
    others = [node for node in tensor.outputs if node is not consumer]
    if others:
        raise Declined(f"weight {tensor.name!r} is shared with {others[0].op} {others[0].name!r}")


def _check_step(node: gs.Node) -> None:
    if node.op == "DequantizeLinear":
        if int(node.attrs.get("block_size", 0)):
            raise Declined(f"blocked DequantizeLinear {node.name!r} is not followed")
        for extra in node.inputs[1:]:
            if not isinstance(extra, gs.Constant):
                raise Declined(f"DequantizeLinear {node.name!r}: scale or zero point computed at run time")


def _forward(step: gs.Node, value: np.ndarray) -> np.ndarray:
    if step.op == "Transpose":
        return value.transpose(_perm(step, value.ndim))
    if step.op == "Cast":
        return value.astype(_cast_dtype(step))
    if step.op == "DequantizeLinear":
        scale, zero = _quant_params(step, value)
        return ((value.astype(np.int64) - zero) * scale).astype(scale.dtype)
    return value


def _backward(step: gs.Node, value: np.ndarray, before: np.ndarray) -> np.ndarray:
    """``value`` in the step's output space → its input space (``before`` is the input's old value)."""
    if step.op == "Transpose":
        return value.transpose(np.argsort(_perm(step, value.ndim)))
    if step.op == "Cast":
        return value.astype(before.dtype)
    if step.op == "DequantizeLinear":
        scale, zero = _quant_params(step, before)
        info = np.iinfo(before.dtype)
        # An exact zero stays exactly the zero point; the others round to the nearest level.
        levels = np.where(value == 0, zero, np.rint(value / scale) + zero)
        return np.clip(levels, info.min, info.max).astype(before.dtype)
    return value


def _perm(step: gs.Node, ndim: int) -> list[int]:
    perm = step.attrs.get("perm")
    return list(perm) if perm is not None else list(range(ndim))[::-1]


def _cast_dtype(step: gs.Node) -> np.dtype:
    return np.dtype(helper.tensor_dtype_to_np_dtype(int(step.attrs["to"])))


def _quant_params(step: gs.Node, quantized: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Scale and zero point broadcast against the quantized tensor (per-tensor or per-axis)."""
    scale = np.asarray(step.inputs[1].values)
    zero = np.asarray(step.inputs[2].values) if len(step.inputs) > 2 else np.zeros((), np.int64)
    if scale.ndim == 1 and quantized.ndim > 1:
        axis = int(step.attrs.get("axis", 1)) % quantized.ndim
        shape = [1] * quantized.ndim
        shape[axis] = -1
        scale, zero = scale.reshape(shape), zero.reshape(shape) if zero.ndim == 1 else zero
    return scale, zero.astype(np.int64)
