"""What every op module shares: the node's call, the registry, and small conversions."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from onnxprune.errors import OnnxPruneError

Tensor = torch.Tensor


class UnsupportedOpError(OnnxPruneError):
    """An ONNX operator, or an attribute value of one, that the training backend does not implement."""


@dataclass
class NodeCall:
    """What an op needs to know about its node besides the input tensors."""

    op: str
    name: str
    attrs: dict[str, Any]
    opset: int
    training: bool = False
    # In training: BatchNormalization normalises by the batch and updates its running statistics (else it
    # keeps them, as at inference, and trains its scale and bias only).
    batch_statistics: bool = False
    n_outputs: int = 1
    state: dict[str, Any] = field(default_factory=dict)

    def get(self, key: str, default: Any = None) -> Any:
        return self.attrs.get(key, default)

    def text(self, key: str, default: str) -> str:
        """A string attribute (ONNX stores them as bytes)."""
        value = self.attrs.get(key, default)
        return value.decode() if isinstance(value, bytes) else str(value)

    def refuse(self, what: str) -> UnsupportedOpError:
        return UnsupportedOpError(f"train: {self.op} node {self.name!r}: {what} is not supported")


Op = Callable[[NodeCall, list[Any]], Any]
OPS: dict[str, Op] = {}


def op(*names: str) -> Callable[[Op], Op]:
    def register(func: Op) -> Op:
        for name in names:
            OPS[name] = func
        return func

    return register


def ints(t: Tensor | None) -> list[int]:
    return [] if t is None else [int(v) for v in t.reshape(-1).tolist()]


def axis_of(axis: int, rank: int) -> int:
    return axis + rank if axis < 0 else axis


def given(xs: list[Any], index: int) -> Any:
    """Input ``index`` if the node has it (an omitted optional input is ``None`` too)."""
    return xs[index] if len(xs) > index else None


DTYPES = {
    1: torch.float32, 2: torch.uint8, 3: torch.int8, 5: torch.int16, 6: torch.int32, 7: torch.int64,
    9: torch.bool, 10: torch.float16, 11: torch.float64, 16: torch.bfloat16,
}  # fmt: skip
