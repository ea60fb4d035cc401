"""Reductions over axes (ReduceMean and the rest), ArgMax/ArgMin, TopK and CumSum.

Reduce ops take ``axes`` as an attribute before opset 18 (ReduceSum: 13) and as an input from then on; no
axes reduce everything, unless ``noop_with_empty_axes`` says to pass the input through.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from onnxprune.train.ops.base import NodeCall, Tensor, axis_of, given, ints, op

_REDUCE: dict[str, Callable[[Tensor, tuple[int, ...], bool], Tensor]] = {
    "ReduceMean": lambda x, d, k: torch.mean(x, dim=d, keepdim=k),
    "ReduceSum": lambda x, d, k: torch.sum(x, dim=d, keepdim=k),
    "ReduceMax": lambda x, d, k: torch.amax(x, dim=d, keepdim=k),
    "ReduceMin": lambda x, d, k: torch.amin(x, dim=d, keepdim=k),
    "ReduceProd": lambda x, d, k: _prod(x, d, k),
    "ReduceL1": lambda x, d, k: torch.sum(x.abs(), dim=d, keepdim=k),
    "ReduceL2": lambda x, d, k: torch.sum(x * x, dim=d, keepdim=k).sqrt(),
    "ReduceSumSquare": lambda x, d, k: torch.sum(x * x, dim=d, keepdim=k),
    "ReduceLogSum": lambda x, d, k: torch.sum(x, dim=d, keepdim=k).log(),
    "ReduceLogSumExp": lambda x, d, k: torch.logsumexp(x, dim=d, keepdim=k),
}


def _prod(x: Tensor, dims: tuple[int, ...], keep: bool) -> Tensor:
    for dim in sorted(dims, reverse=True):
        x = torch.prod(x, dim=dim, keepdim=keep)
    return x


@op(*_REDUCE)
def reduce(node: NodeCall, xs: list[Any]) -> Tensor:
    x = xs[0]
    since = 13 if node.op == "ReduceSum" else 18
    axes = (ints(given(xs, 1)) or None) if node.opset >= since else node.get("axes")
    keep = bool(node.get("keepdims", 1))
    if not axes:
        if node.get("noop_with_empty_axes", 0):
            return x
        axes = list(range(x.dim()))
    return _REDUCE[node.op](x, tuple(axis_of(a, x.dim()) for a in axes), keep)


@op("ArgMax", "ArgMin")
def arg_max(node: NodeCall, xs: list[Any]) -> Tensor:
    x = xs[0]
    axis = axis_of(node.get("axis", 0), x.dim())
    keep = bool(node.get("keepdims", 1))
    if node.get("select_last_index", 0):  # the last extreme: the first one of the reversed axis
        flipped = x.flip(axis)
        found = (
            flipped.argmax(axis, keepdim=keep) if node.op == "ArgMax" else flipped.argmin(axis, keepdim=keep)
        )
        return x.shape[axis] - 1 - found
    return x.argmax(axis, keepdim=keep) if node.op == "ArgMax" else x.argmin(axis, keepdim=keep)


@op("TopK")
def top_k(node: NodeCall, xs: list[Any]) -> tuple[Tensor, Tensor]:
    x, k = xs[0], int(xs[1].reshape(-1)[0].item())
    axis = axis_of(node.get("axis", -1), x.dim())
    values, indices = torch.topk(x, k, dim=axis, largest=bool(node.get("largest", 1)), sorted=True)
    return values, indices


@op("CumSum")
def cum_sum(node: NodeCall, xs: list[Any]) -> Tensor:
    x, axis = xs[0], axis_of(int(xs[1].item()), xs[0].dim())
    reverse, exclusive = bool(node.get("reverse", 0)), bool(node.get("exclusive", 0))
    y = x.flip(axis) if reverse else x
    out = torch.cumsum(y, axis)
    if exclusive:
        out = out - y
    return out.flip(axis) if reverse else out
