"""Pooling and the linear ops: MaxPool, AveragePool, the global pools, LpPool, Gemm, MatMul, Einsum."""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F

from onnxprune.train.ops.base import NodeCall, Tensor, given, op
from onnxprune.train.ops.conv import padded, pads_of

_MAX_POOL = {1: F.max_pool1d, 2: F.max_pool2d, 3: F.max_pool3d}
_AVG_POOL = {1: F.avg_pool1d, 2: F.avg_pool2d, 3: F.avg_pool3d}


@op("MaxPool")
def max_pool(node: NodeCall, xs: list[Any]) -> Tensor:
    kernel = list(node.get("kernel_shape"))
    n = len(kernel)
    if node.n_outputs > 1 or n not in _MAX_POOL or node.get("storage_order", 0):
        raise node.refuse("the Indices output, storage_order or this kernel rank")
    x, padding = padded(xs[0], pads_of(node, xs[0], kernel), value=-math.inf)
    strides, dilations = node.get("strides", [1] * n), node.get("dilations", [1] * n)
    return _MAX_POOL[n](x, kernel, strides, padding, dilations, ceil_mode=bool(node.get("ceil_mode", 0)))


@op("AveragePool")
def average_pool(node: NodeCall, xs: list[Any]) -> Tensor:
    kernel = list(node.get("kernel_shape"))
    n = len(kernel)
    pads = pads_of(node, xs[0], kernel)
    if n not in _AVG_POOL or pads[:n] != pads[n:] or any(d != 1 for d in node.get("dilations", [1] * n)):
        raise node.refuse("asymmetric pads, dilations or this kernel rank")
    return _AVG_POOL[n](
        xs[0], kernel, node.get("strides", [1] * n), pads[:n], ceil_mode=bool(node.get("ceil_mode", 0)),
        count_include_pad=bool(node.get("count_include_pad", 0)),
    )  # fmt: skip


@op("LpPool")
def lp_pool(node: NodeCall, xs: list[Any]) -> Tensor:
    """(sum over the window of |x|^p)^(1/p); pads count as zeros."""
    kernel, p = list(node.get("kernel_shape")), float(node.get("p", 2))
    n = len(kernel)
    if n not in _AVG_POOL or any(d != 1 for d in node.get("dilations", [1] * n)):
        raise node.refuse("dilations or this kernel rank")
    x, padding = padded(xs[0].abs().pow(p), pads_of(node, xs[0], kernel))
    mean = _AVG_POOL[n](x, kernel, node.get("strides", [1] * n), padding, count_include_pad=True,
                        ceil_mode=bool(node.get("ceil_mode", 0)))  # fmt: skip
    return (mean * math.prod(kernel)).pow(1.0 / p)


@op("GlobalAveragePool")
def global_average_pool(node: NodeCall, xs: list[Any]) -> Tensor:
    return xs[0].mean(dim=tuple(range(2, xs[0].dim())), keepdim=True)


@op("GlobalMaxPool")
def global_max_pool(node: NodeCall, xs: list[Any]) -> Tensor:
    return xs[0].amax(dim=tuple(range(2, xs[0].dim())), keepdim=True)


@op("Gemm")
def gemm(node: NodeCall, xs: list[Any]) -> Tensor:
    a = xs[0].t() if node.get("transA", 0) else xs[0]
    b = xs[1].t() if node.get("transB", 0) else xs[1]
    out = float(node.get("alpha", 1.0)) * (a @ b)
    c = given(xs, 2)
    return out if c is None else out + float(node.get("beta", 1.0)) * c


@op("MatMul")
def matmul(node: NodeCall, xs: list[Any]) -> Tensor:
    return torch.matmul(xs[0], xs[1])


@op("Einsum")
def einsum(node: NodeCall, xs: list[Any]) -> Tensor:
    return torch.einsum(node.text("equation", "").replace(" ", ""), *xs)
