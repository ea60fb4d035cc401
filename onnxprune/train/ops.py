"""ONNX operators as PyTorch functions, for the training interpreter (``torchgraph.py``).

Each entry of ``OPS`` takes ``(node, inputs)``: ``node`` carries the ONNX attributes, the opset and whether
the module is training; ``inputs`` are tensors (``None`` for an omitted optional input). An op returns one
tensor or a tuple (one per ONNX output). Only what the ONNX spec defines is implemented; an attribute
value that is not is refused with the op named, and the conversion check against ONNX Runtime catches any
difference that slips through. Shape-like values (``Shape``, ``Gather`` on shapes) are int64 tensors.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F

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
    n_outputs: int = 1
    state: dict[str, Any] = field(default_factory=dict)

    def get(self, key: str, default: Any = None) -> Any:
        return self.attrs.get(key, default)

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


def _axis(axis: int, rank: int) -> int:
    return axis + rank if axis < 0 else axis


# ---- convolution and normalisation -------------------------------------------------------------------
def _same_pads(node: NodeCall, spatial: Sequence[int], kernel: Sequence[int]) -> list[int]:
    strides = node.get("strides", [1] * len(kernel))
    dilations = node.get("dilations", [1] * len(kernel))
    begins, ends = [], []
    for size, k, s, d in zip(spatial, kernel, strides, dilations, strict=True):
        total = max((math.ceil(size / s) - 1) * s + (k - 1) * d + 1 - size, 0)
        small, large = total // 2, total - total // 2
        lower = node.get("auto_pad") == b"SAME_LOWER" or node.get("auto_pad") == "SAME_LOWER"
        begins.append(large if lower else small)
        ends.append(small if lower else large)
    return begins + ends


def _pads(node: NodeCall, x: Tensor, kernel: Sequence[int]) -> list[int]:
    auto = node.get("auto_pad", "NOTSET")
    auto = auto.decode() if isinstance(auto, bytes) else auto
    n = len(kernel)
    if auto in ("SAME_UPPER", "SAME_LOWER"):
        return _same_pads(node, list(x.shape[2:]), kernel)
    if auto == "VALID":
        return [0] * (2 * n)
    return list(node.get("pads", [0] * (2 * n)))


def _padded(x: Tensor, pads: list[int], value: float = 0.0) -> tuple[Tensor, list[int]]:
    """Symmetric pads go to the op itself; asymmetric ones are applied here with F.pad first."""
    n = len(pads) // 2
    begins, ends = pads[:n], pads[n:]
    if begins == ends:
        return x, begins
    flat: list[int] = []
    for b, e in zip(reversed(begins), reversed(ends), strict=True):
        flat += [b, e]
    return F.pad(x, flat, value=value), [0] * n


_CONV = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}
_CONV_T = {1: F.conv_transpose1d, 2: F.conv_transpose2d, 3: F.conv_transpose3d}


@op("Conv")
def conv(node: NodeCall, xs: list[Any]) -> Tensor:
    x, w, b = xs[0], xs[1], xs[2] if len(xs) > 2 else None
    n = w.dim() - 2
    if n not in _CONV:
        raise node.refuse(f"a {n}-d kernel")
    x, padding = _padded(x, _pads(node, x, list(w.shape[2:])))
    strides, dilations = node.get("strides", [1] * n), node.get("dilations", [1] * n)
    return _CONV[n](x, w, b, strides, padding, dilations, node.get("group", 1))


@op("ConvTranspose")
def conv_transpose(node: NodeCall, xs: list[Any]) -> Tensor:
    x, w, b = xs[0], xs[1], xs[2] if len(xs) > 2 else None
    n = w.dim() - 2
    pads = list(node.get("pads", [0] * (2 * n)))
    if n not in _CONV_T or node.get("output_shape") or pads[:n] != pads[n:]:
        raise node.refuse("output_shape, asymmetric pads or this kernel rank")
    if node.get("auto_pad", "NOTSET") not in ("NOTSET", b"NOTSET"):
        raise node.refuse("auto_pad")
    return _CONV_T[n](
        x, w, b, node.get("strides", [1] * n), pads[:n], node.get("output_padding", [0] * n),
        node.get("group", 1), node.get("dilations", [1] * n),
    )  # fmt: skip


@op("BatchNormalization")
def batch_norm(node: NodeCall, xs: list[Any]) -> Tensor:
    """ONNX's momentum weighs the old running value; torch's weighs the new batch: 1 - m."""
    if node.n_outputs > 1 or node.get("training_mode", 0):
        raise node.refuse("training_mode / running-statistics outputs")
    x, scale, bias, mean, var = xs
    momentum = 1.0 - float(node.get("momentum", 0.9))
    eps = float(node.get("epsilon", 1e-5))
    return F.batch_norm(x, mean, var, scale, bias, node.training, momentum, eps)


@op("InstanceNormalization")
def instance_norm(node: NodeCall, xs: list[Any]) -> Tensor:
    return F.instance_norm(xs[0], weight=xs[1], bias=xs[2], eps=float(node.get("epsilon", 1e-5)))


@op("LayerNormalization")
def layer_norm(node: NodeCall, xs: list[Any]) -> Tensor:
    if node.n_outputs > 1:
        raise node.refuse("mean / inverse std outputs")
    x = xs[0]
    axis = _axis(node.get("axis", -1), x.dim())
    bias = xs[2] if len(xs) > 2 else None
    return F.layer_norm(x, list(x.shape[axis:]), xs[1], bias, float(node.get("epsilon", 1e-5)))


# ---- activations and elementwise ---------------------------------------------------------------------
_UNARY: dict[str, Callable[[Tensor], Tensor]] = {
    "Relu": torch.relu, "Sigmoid": torch.sigmoid, "Tanh": torch.tanh, "Exp": torch.exp, "Log": torch.log,
    "Sqrt": torch.sqrt, "Neg": torch.neg, "Abs": torch.abs, "Reciprocal": torch.reciprocal,
    "Erf": torch.erf, "Floor": torch.floor, "Ceil": torch.ceil, "Softplus": F.softplus,
    "Softsign": F.softsign, "HardSwish": F.hardswish, "Mish": F.mish, "Not": torch.logical_not,
    "Sin": torch.sin, "Cos": torch.cos, "Sign": torch.sign, "Round": torch.round, "Identity": lambda x: x,
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


@op("Selu")
def selu(node: NodeCall, xs: list[Any]) -> Tensor:
    alpha, gamma = (
        float(node.get("alpha", 1.67326319217681884)),
        float(node.get("gamma", 1.05070102214813232)),
    )
    return gamma * torch.where(xs[0] > 0, xs[0], alpha * (torch.exp(xs[0]) - 1))


@op("HardSigmoid")
def hard_sigmoid(node: NodeCall, xs: list[Any]) -> Tensor:
    alpha, beta = float(node.get("alpha", 0.2)), float(node.get("beta", 0.5))
    return torch.clamp(alpha * xs[0] + beta, 0.0, 1.0)


@op("Gelu")
def gelu(node: NodeCall, xs: list[Any]) -> Tensor:
    approximate = node.get("approximate", "none")
    return F.gelu(xs[0], approximate=approximate.decode() if isinstance(approximate, bytes) else approximate)


@op("PRelu")
def prelu(node: NodeCall, xs: list[Any]) -> Tensor:
    return torch.where(xs[0] >= 0, xs[0], xs[0] * xs[1])


@op("Clip")
def clip(node: NodeCall, xs: list[Any]) -> Tensor:
    if node.opset < 11:
        return torch.clamp(xs[0], node.get("min", -math.inf), node.get("max", math.inf))
    low = xs[1] if len(xs) > 1 and xs[1] is not None else None
    high = xs[2] if len(xs) > 2 and xs[2] is not None else None
    return torch.clamp(xs[0], low, high)


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


@op("Pow")
def power(node: NodeCall, xs: list[Any]) -> Tensor:
    return torch.pow(xs[0], xs[1]).to(xs[0].dtype)


@op("Max", "Min", "Sum", "Mean")
def variadic(node: NodeCall, xs: list[Any]) -> Tensor:
    out = xs[0]
    for x in xs[1:]:
        out = {"Max": torch.maximum, "Min": torch.minimum}.get(node.op, torch.add)(out, x)
    return out / len(xs) if node.op == "Mean" else out


@op("Equal", "Greater", "Less", "GreaterOrEqual", "LessOrEqual")
def compare(node: NodeCall, xs: list[Any]) -> Tensor:
    funcs = {"Equal": torch.eq, "Greater": torch.gt, "Less": torch.lt, "GreaterOrEqual": torch.ge}
    return funcs.get(node.op, torch.le)(xs[0], xs[1])


@op("Where")
def where(node: NodeCall, xs: list[Any]) -> Tensor:
    return torch.where(xs[0], xs[1], xs[2])


@op("Softmax", "LogSoftmax")
def softmax(node: NodeCall, xs: list[Any]) -> Tensor:
    x = xs[0]
    func = F.softmax if node.op == "Softmax" else F.log_softmax
    if node.opset >= 13:
        return func(x, dim=node.get("axis", -1))
    axis = _axis(node.get("axis", 1), x.dim())  # before opset 13: over everything from `axis` on
    flat = x.reshape(math.prod(x.shape[:axis]), -1)
    return func(flat, dim=1).reshape(x.shape)


# ---- pooling and linear ------------------------------------------------------------------------------
_MAX_POOL = {1: F.max_pool1d, 2: F.max_pool2d, 3: F.max_pool3d}
_AVG_POOL = {1: F.avg_pool1d, 2: F.avg_pool2d, 3: F.avg_pool3d}


@op("MaxPool")
def max_pool(node: NodeCall, xs: list[Any]) -> Tensor:
    kernel = list(node.get("kernel_shape"))
    n = len(kernel)
    if node.n_outputs > 1 or n not in _MAX_POOL or node.get("storage_order", 0):
        raise node.refuse("the Indices output, storage_order or this kernel rank")
    x, padding = _padded(xs[0], _pads(node, xs[0], kernel), value=-math.inf)
    strides, dilations = node.get("strides", [1] * n), node.get("dilations", [1] * n)
    return _MAX_POOL[n](x, kernel, strides, padding, dilations, ceil_mode=bool(node.get("ceil_mode", 0)))


@op("AveragePool")
def average_pool(node: NodeCall, xs: list[Any]) -> Tensor:
    kernel = list(node.get("kernel_shape"))
    n = len(kernel)
    pads = _pads(node, xs[0], kernel)
    if n not in _AVG_POOL or pads[:n] != pads[n:] or any(d != 1 for d in node.get("dilations", [1] * n)):
        raise node.refuse("asymmetric pads, dilations or this kernel rank")
    return _AVG_POOL[n](
        xs[0], kernel, node.get("strides", [1] * n), pads[:n], ceil_mode=bool(node.get("ceil_mode", 0)),
        count_include_pad=bool(node.get("count_include_pad", 0)),
    )  # fmt: skip


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
    if len(xs) > 2 and xs[2] is not None:
        out = out + float(node.get("beta", 1.0)) * xs[2]
    return out


@op("MatMul")
def matmul(node: NodeCall, xs: list[Any]) -> Tensor:
    return torch.matmul(xs[0], xs[1])


# ---- shapes and data movement ------------------------------------------------------------------------
@op("Flatten")
def flatten(node: NodeCall, xs: list[Any]) -> Tensor:
    x = xs[0]
    axis = _axis(node.get("axis", 1), x.dim())
    return x.reshape(math.prod(x.shape[:axis]), -1)


@op("Reshape")
def reshape(node: NodeCall, xs: list[Any]) -> Tensor:
    x, shape = xs[0], ints(xs[1])
    if not node.get("allowzero", 0):
        shape = [x.shape[i] if d == 0 else d for i, d in enumerate(shape)]
    return x.reshape(shape)


@op("Transpose")
def transpose(node: NodeCall, xs: list[Any]) -> Tensor:
    perm = node.get("perm") or list(reversed(range(xs[0].dim())))
    return xs[0].permute(*perm)


@op("Concat")
def concat(node: NodeCall, xs: list[Any]) -> Tensor:
    return torch.cat([x for x in xs if x is not None], dim=node.get("axis"))


@op("Split")
def split(node: NodeCall, xs: list[Any]) -> tuple[Tensor, ...]:
    x = xs[0]
    axis = _axis(node.get("axis", 0), x.dim())
    sizes = ints(xs[1]) if len(xs) > 1 and xs[1] is not None else list(node.get("split", []))
    if not sizes:
        count = node.get("num_outputs", node.n_outputs)
        chunk = -(-x.shape[axis] // count)
        sizes = [min(chunk, x.shape[axis] - i * chunk) for i in range(count)]
    return tuple(torch.split(x, sizes, dim=axis))


@op("Slice")
def slice_(node: NodeCall, xs: list[Any]) -> Tensor:
    x = xs[0]
    if node.opset < 10:
        starts, ends = node.get("starts"), node.get("ends")
        axes, steps = node.get("axes") or list(range(len(starts))), [1] * len(starts)
    else:
        starts, ends = ints(xs[1]), ints(xs[2])
        axes = ints(xs[3]) if len(xs) > 3 and xs[3] is not None else list(range(len(starts)))
        steps = ints(xs[4]) if len(xs) > 4 and xs[4] is not None else [1] * len(starts)
    index: list[slice] = [slice(None)] * x.dim()
    for start, end, axis, step in zip(starts, ends, axes, steps, strict=True):
        if step <= 0:
            raise node.refuse("a negative step")
        size = x.shape[_axis(axis, x.dim())]
        index[_axis(axis, x.dim())] = slice(*slice(start, end, step).indices(size))
    return x[tuple(index)]


def _axes_of(node: NodeCall, xs: list[Any], since: int) -> list[int] | None:
    if node.opset >= since:
        return ints(xs[1]) if len(xs) > 1 and xs[1] is not None else None
    return node.get("axes")


@op("Squeeze")
def squeeze(node: NodeCall, xs: list[Any]) -> Tensor:
    x, axes = xs[0], _axes_of(node, xs, 13)
    if axes is None:
        return x.squeeze()
    return x.squeeze(tuple(_axis(a, x.dim()) for a in axes))


@op("Unsqueeze")
def unsqueeze(node: NodeCall, xs: list[Any]) -> Tensor:
    x, axes = xs[0], _axes_of(node, xs, 13) or []
    rank = x.dim() + len(axes)
    for axis in sorted(_axis(a, rank) for a in axes):
        x = x.unsqueeze(axis)
    return x


@op("Shape")
def shape(node: NodeCall, xs: list[Any]) -> Tensor:
    dims = list(xs[0].shape)[node.get("start", 0) : node.get("end", None)]
    return torch.tensor(dims, dtype=torch.int64, device=xs[0].device)


@op("Size")
def size(node: NodeCall, xs: list[Any]) -> Tensor:
    return torch.tensor(xs[0].numel(), dtype=torch.int64, device=xs[0].device)


@op("Gather")
def gather(node: NodeCall, xs: list[Any]) -> Tensor:
    x, idx = xs[0], xs[1].long()
    axis = _axis(node.get("axis", 0), x.dim())
    idx = torch.where(idx < 0, idx + x.shape[axis], idx)
    picked = x.index_select(axis, idx.reshape(-1))
    return picked.reshape(list(x.shape[:axis]) + list(idx.shape) + list(x.shape[axis + 1 :]))


@op("Expand")
def expand(node: NodeCall, xs: list[Any]) -> Tensor:
    target = torch.broadcast_shapes(tuple(xs[0].shape), tuple(ints(xs[1])))
    return xs[0].expand(target)


@op("Tile")
def tile(node: NodeCall, xs: list[Any]) -> Tensor:
    return xs[0].repeat(*ints(xs[1]))


@op("Pad")
def pad(node: NodeCall, xs: list[Any]) -> Tensor:
    x = xs[0]
    if node.opset < 11:
        pads, value = list(node.get("pads")), float(node.get("value", 0.0))
    else:
        pads = ints(xs[1])
        value = float(xs[2].item()) if len(xs) > 2 and xs[2] is not None else 0.0
        if len(xs) > 3 and xs[3] is not None:
            raise node.refuse("the axes input")
    mode = node.get("mode", "constant")
    mode = {"constant": "constant", "reflect": "reflect", "edge": "replicate"}.get(
        mode.decode() if isinstance(mode, bytes) else mode
    )
    n = x.dim()
    flat: list[int] = []
    for axis in reversed(range(n)):
        flat += [pads[axis], pads[axis + n]]
    while len(flat) > 2 and flat[-2:] == [0, 0]:
        flat = flat[:-2]  # torch pads the last dims only: drop leading untouched axes
    if mode is None:
        raise node.refuse(f"mode {node.get('mode')!r}")
    return F.pad(x, flat, mode=mode, value=value if mode == "constant" else None)


@op("Resize", "Upsample")
def resize(node: NodeCall, xs: list[Any]) -> Tensor:
    x = xs[0]
    mode = _text(node.get("mode", "nearest"))
    ctm = _text(node.get("coordinate_transformation_mode", "half_pixel" if node.op == "Resize" else ""))
    sizes = ints(xs[3]) if len(xs) > 3 and xs[3] is not None else None
    scale_input = xs[1] if node.op == "Upsample" or node.opset < 11 else (xs[2] if len(xs) > 2 else None)
    scales = [float(s) for s in scale_input.reshape(-1).tolist()] if scale_input is not None else []
    size = (
        sizes[2:] if sizes else [int(math.floor(d * s)) for d, s in zip(x.shape[2:], scales[2:], strict=True)]
    )
    if (
        mode == "nearest"
        and _text(node.get("nearest_mode", "round_prefer_floor")) == "floor"
        or (mode == "nearest" and ctm in ("asymmetric", ""))
    ):
        return F.interpolate(x, size=size, mode="nearest")
    if mode == "linear" and ctm in ("half_pixel", "pytorch_half_pixel", "align_corners") and x.dim() == 4:
        return F.interpolate(x, size=size, mode="bilinear", align_corners=ctm == "align_corners")
    raise node.refuse(f"mode {mode!r} with coordinate_transformation_mode {ctm!r}")


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


@op("ReduceMean", "ReduceSum", "ReduceMax", "ReduceMin")
def reduce(node: NodeCall, xs: list[Any]) -> Tensor:
    x = xs[0]
    since = 13 if node.op == "ReduceSum" else 18
    axes = _axes_of(node, xs, since)
    keep = bool(node.get("keepdims", 1))
    if not axes:
        if node.get("noop_with_empty_axes", 0):
            return x
        axes = list(range(x.dim()))
    dims = tuple(_axis(a, x.dim()) for a in axes)
    funcs: dict[str, Callable[..., Tensor]] = {
        "ReduceMean": torch.mean, "ReduceSum": torch.sum, "ReduceMax": torch.amax, "ReduceMin": torch.amin,
    }  # fmt: skip
    return funcs[node.op](x, dim=dims, keepdim=keep)


@op("Dropout")
def dropout(node: NodeCall, xs: list[Any]) -> Tensor:
    """Inactive at inference, as ONNX Runtime runs it; while training, the ratio the model asks for."""
    if node.n_outputs > 1:
        raise node.refuse("the mask output")
    ratio = float(xs[1].item()) if len(xs) > 1 and xs[1] is not None else float(node.get("ratio", 0.5))
    return F.dropout(xs[0], ratio, node.training)


_DTYPES = {
    1: torch.float32, 2: torch.uint8, 3: torch.int8, 5: torch.int16, 6: torch.int32, 7: torch.int64,
    9: torch.bool, 10: torch.float16, 11: torch.float64, 16: torch.bfloat16,
}  # fmt: skip


@op("Cast")
def cast(node: NodeCall, xs: list[Any]) -> Tensor:
    to = int(node.get("to"))
    if to not in _DTYPES:
        raise node.refuse(f"a cast to ONNX type {to}")
    return xs[0].to(_DTYPES[to])


@op("ConstantOfShape")
def constant_of_shape(node: NodeCall, xs: list[Any]) -> Tensor:
    value = node.state.get("value")
    fill = value if value is not None else torch.zeros(1, dtype=torch.float32)
    return fill.reshape(-1)[0].expand(ints(xs[0])).clone().to(xs[0].device)


@op("Range")
def range_(node: NodeCall, xs: list[Any]) -> Tensor:
    return torch.arange(xs[0].item(), xs[1].item(), xs[2].item(), dtype=xs[0].dtype, device=xs[0].device)
