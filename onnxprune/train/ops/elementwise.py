"""Activations, arithmetic, comparisons and logic, Softmax: the ops that map values one by one (or one row
at a time), broadcasting as numpy does."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F

from onnxprune.train.ops.base import OPS, NodeCall, Op, Tensor, axis_of, given, op

_UNARY: dict[str, Callable[[Tensor], Tensor]] = {
    "Relu": torch.relu, "Sigmoid": torch.sigmoid, "Tanh": torch.tanh, "Exp": torch.exp, "Log": torch.log,
    "Sqrt": torch.sqrt, "Neg": torch.neg, "Abs": torch.abs, "Reciprocal": torch.reciprocal,
    "Erf": torch.erf, "Floor": torch.floor, "Ceil": torch.ceil, "Softplus": F.softplus,
    "Softsign": F.softsign, "HardSwish": F.hardswish, "Mish": F.mish, "Not": torch.logical_not,
    "Sin": torch.sin, "Cos": torch.cos, "Tan": torch.tan, "Sign": torch.sign, "Round": torch.round,
    "Identity": lambda x: x, "IsNaN": torch.isnan, "Sinh": torch.sinh, "Cosh": torch.cosh,
    "Asin": torch.asin, "Acos": torch.acos, "Atan": torch.atan,
}  # fmt: skip


def _unary(func: Callable[[Tensor], Tensor]) -> Op:
    return lambda node, xs: func(xs[0])


for _name, _func in _UNARY.items():
    OPS[_name] = _unary(_func)


@op("LeakyRelu")
def leaky_relu(node: NodeCall, xs: list[Any]) -> Tensor:
    return F.leaky_relu(xs[0], float(node.get("alpha", 0.01)))


@op("Elu")
def elu(node: NodeCall, xs: list[Any]) -> Tensor:
    return F.elu(xs[0], float(node.get("alpha", 1.0)))


@op("Celu")
def celu(node: NodeCall, xs: list[Any]) -> Tensor:
    return F.celu(xs[0], float(node.get("alpha", 1.0)))


@op("Selu")
def selu(node: NodeCall, xs: list[Any]) -> Tensor:
    alpha, gamma = (
        float(node.get("alpha", 1.67326319217681884)),
        float(node.get("gamma", 1.05070102214813232)),
    )
    return gamma * torch.where(xs[0] > 0, xs[0], alpha * (torch.exp(xs[0]) - 1))


@op("ThresholdedRelu")
def thresholded_relu(node: NodeCall, xs: list[Any]) -> Tensor:
    return torch.where(xs[0] > float(node.get("alpha", 1.0)), xs[0], torch.zeros_like(xs[0]))


@op("Shrink")
def shrink(node: NodeCall, xs: list[Any]) -> Tensor:
    x, bias, lambd = xs[0], float(node.get("bias", 0.0)), float(node.get("lambd", 0.5))
    return torch.where(x < -lambd, x + bias, torch.where(x > lambd, x - bias, torch.zeros_like(x)))


@op("HardSigmoid")
def hard_sigmoid(node: NodeCall, xs: list[Any]) -> Tensor:
    alpha, beta = float(node.get("alpha", 0.2)), float(node.get("beta", 0.5))
    return torch.clamp(alpha * xs[0] + beta, 0.0, 1.0)


@op("Gelu")
def gelu(node: NodeCall, xs: list[Any]) -> Tensor:
    return F.gelu(xs[0], approximate=node.text("approximate", "none"))


@op("PRelu")
def prelu(node: NodeCall, xs: list[Any]) -> Tensor:
    return torch.where(xs[0] >= 0, xs[0], xs[0] * xs[1])


@op("Clip")
def clip(node: NodeCall, xs: list[Any]) -> Tensor:
    if node.opset < 11:
        return torch.clamp(xs[0], node.get("min", -math.inf), node.get("max", math.inf))
    return torch.clamp(xs[0], given(xs, 1), given(xs, 2))


@op("Add")
def add(node: NodeCall, xs: list[Any]) -> Tensor:
    return xs[0] + xs[1]


@op("Sub")
def sub(node: NodeCall, xs: list[Any]) -> Tensor:
    return xs[0] - xs[1]


@op("Mul")
def mul(node: NodeCall, xs: list[Any]) -> Tensor:
    return xs[0] * xs[1]


@op("Div")
def div(node: NodeCall, xs: list[Any]) -> Tensor:
    if xs[0].is_floating_point():
        return xs[0] / xs[1]
    return torch.div(xs[0], xs[1], rounding_mode="trunc")  # ONNX integer Div truncates


@op("Mod")
def mod(node: NodeCall, xs: list[Any]) -> Tensor:
    """fmod=1: the sign of the dividend (C's fmod); fmod=0 (integers only): the divisor's (Python's %)."""
    return torch.fmod(xs[0], xs[1]) if node.get("fmod", 0) else torch.remainder(xs[0], xs[1])


@op("Pow")
def power(node: NodeCall, xs: list[Any]) -> Tensor:
    return torch.pow(xs[0], xs[1]).to(xs[0].dtype)


@op("Max", "Min", "Sum", "Mean")
def variadic(node: NodeCall, xs: list[Any]) -> Tensor:
    out = xs[0]
    for x in xs[1:]:
        out = {"Max": torch.maximum, "Min": torch.minimum}.get(node.op, torch.add)(out, x)
    return out / len(xs) if node.op == "Mean" else out


_COMPARE = {
    "Equal": torch.eq, "Greater": torch.gt, "Less": torch.lt, "GreaterOrEqual": torch.ge,
    "LessOrEqual": torch.le, "And": torch.logical_and, "Or": torch.logical_or, "Xor": torch.logical_xor,
}  # fmt: skip


@op(*_COMPARE)
def compare(node: NodeCall, xs: list[Any]) -> Tensor:
    return _COMPARE[node.op](xs[0], xs[1])


@op("IsInf")
def is_inf(node: NodeCall, xs: list[Any]) -> Tensor:
    x = xs[0]
    positive, negative = node.get("detect_positive", 1), node.get("detect_negative", 1)
    return (torch.isposinf(x) & bool(positive)) | (torch.isneginf(x) & bool(negative))


@op("Where")
def where(node: NodeCall, xs: list[Any]) -> Tensor:
    return torch.where(xs[0], xs[1], xs[2])


@op("Softmax", "LogSoftmax", "Hardmax")
def softmax(node: NodeCall, xs: list[Any]) -> Tensor:
    x = xs[0]
    if node.opset >= 13:
        return _softmax(node.op, x, axis_of(node.get("axis", -1), x.dim()))
    axis = axis_of(node.get("axis", 1), x.dim())  # before opset 13: over everything from `axis` on
    flat = x.reshape(math.prod(x.shape[:axis]), -1)
    return _softmax(node.op, flat, 1).reshape(x.shape)


def _softmax(kind: str, x: Tensor, dim: int) -> Tensor:
    if kind == "Hardmax":  # 1 at the first maximum, as ONNX
        return F.one_hot(x.argmax(dim), x.shape[dim]).movedim(-1, dim).to(x.dtype)
    return (F.softmax if kind == "Softmax" else F.log_softmax)(x, dim=dim)
