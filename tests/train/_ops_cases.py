"""One tiny ONNX model per training op (and per variant of its attributes), built in code.

A case is a list of nodes over the graph input ``x`` (float32, normal), the initializers they use, and the
outputs to compare; ``CASES`` maps ``Op`` or ``Op:variant`` to a case, so a test can check that every op in
the training registry has one. ``pattern:...`` cases are the compound shapes of real exports (SiLU, the
squeeze-excite gate, LayerNorm decomposed into ReduceMean/Sub/Pow/Sqrt/Div, a MatMul attention block).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

X = (2, 4, 6, 6)
RNG = np.random.default_rng(7)


@dataclass
class Case:
    nodes: list[onnx.NodeProto]
    consts: dict[str, np.ndarray] = field(default_factory=dict)
    shape: tuple[int, ...] = X
    opset: int = 17
    outputs: list[str] = field(default_factory=list)  # default: the last node's outputs
    low: float | None = None  # x ~ U(low, high) instead of N(0, 1)
    high: float = 1.0

    def model(self) -> onnx.ModelProto:
        inits = [numpy_helper.from_array(np.asarray(v), k) for k, v in self.consts.items()]
        outs = self.outputs or [o for o in self.nodes[-1].output if o]
        graph = helper.make_graph(
            self.nodes,
            "op",
            [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(self.shape))],
            [onnx.ValueInfoProto(name=o) for o in outs],
            inits,
        )
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", self.opset)])
        model.ir_version = 8 if self.opset <= 17 else 10
        return model

    def feed(self, seed: int) -> dict[str, np.ndarray]:
        rng = np.random.default_rng(seed)
        if self.low is None:
            return {"x": rng.normal(size=self.shape).astype(np.float32)}
        return {"x": rng.uniform(self.low, self.high, self.shape).astype(np.float32)}


NAMES: dict[str, int] = {}


def node(op: str, inputs: list[str], outputs: list[str] | None = None, **attrs: Any) -> onnx.NodeProto:
    """A node named /Op, /Op_1, ... (names are unique within a model, as ONNX Runtime wants)."""
    NAMES[op] = NAMES.get(op, -1) + 1
    name = f"/{op}" + (f"_{NAMES[op]}" if NAMES[op] else "")
    return helper.make_node(op, inputs, outputs or ["out"], name=name, **attrs)


def one(
    op: str,
    *extra: str,
    consts: dict[str, Any] | None = None,
    opset: int = 17,
    shape: tuple[int, ...] = X,
    n_out: int = 1,
    low: float | None = None,
    high: float = 1.0,
    **attrs: Any,
) -> Case:
    """``op`` on ``x`` (and the named extra inputs, initializers from ``consts``)."""
    outs = ["out"] if n_out == 1 else [f"out{k}" for k in range(n_out)]
    values = {k: np.asarray(v) for k, v in (consts or {}).items()}
    return Case([node(op, ["x", *extra], outs, **attrs)], values, shape, opset, low=low, high=high)


def chain(*nodes: onnx.NodeProto, consts: dict[str, Any] | None = None, opset: int = 17, **kw: Any) -> Case:
    return Case(list(nodes), {k: np.asarray(v) for k, v in (consts or {}).items()}, opset=opset, **kw)


def f32(*shape: int, scale: float = 1.0) -> np.ndarray:
    return (RNG.normal(size=shape) * scale).astype(np.float32)


def i64(*values: int) -> np.ndarray:
    return np.array(values, dtype=np.int64)


UNARY = [
    "Relu",
    "Sigmoid",
    "Tanh",
    "Exp",
    "Neg",
    "Abs",
    "Erf",
    "Floor",
    "Ceil",
    "Softplus",
    "Softsign",
    "HardSwish",
    "Mish",
    "Sin",
    "Cos",
    "Sign",
    "Round",
    "Identity",
    "Sinh",
    "Cosh",
    "Atan",
    "Tan",
    "HardSigmoid",
    "LeakyRelu",
    "Elu",
    "Celu",
    "Selu",
    "Gelu",
    "ThresholdedRelu",
    "Shrink",
]
POSITIVE = ["Log", "Sqrt", "Reciprocal"]
REDUCE = [
    "ReduceMean",
    "ReduceSum",
    "ReduceMax",
    "ReduceMin",
    "ReduceProd",
    "ReduceL1",
    "ReduceL2",
    "ReduceSumSquare",
    "ReduceLogSumExp",
]
COMPARE = ["Equal", "Greater", "Less", "GreaterOrEqual", "LessOrEqual"]


def _cases() -> dict[str, Case]:
    cases: dict[str, Case] = {op: one(op) for op in UNARY}
    cases |= {"Gelu": one("Gelu", opset=20), "Mish": one("Mish", opset=18)}
    cases |= {op: one(op, low=0.2, high=3.0) for op in POSITIVE}
    cases |= {"Asin": one("Asin", low=-0.9, high=0.9), "Acos": one("Acos", low=-0.9, high=0.9)}
    cases |= {op: one(op, axes=[2, 3], opset=13) for op in REDUCE}
    cases["ReduceSum"] = one("ReduceSum", "axes", consts={"axes": i64(1)}, keepdims=0, opset=13)
    cases["ReduceMean:18"] = one("ReduceMean", "axes", consts={"axes": i64(-1)}, opset=18)
    cases["ReduceLogSum"] = one("ReduceLogSum", low=0.2, high=2.0, axes=[1], opset=13)
    cases |= _convolutions() | _arithmetic() | _movement() | _resizes() | _patterns()
    return cases


def _convolutions() -> dict[str, Case]:
    w, b = f32(6, 4, 3, 3, scale=0.3), f32(6)
    conv = {"w": w, "b": b}
    dw = {"w": f32(4, 1, 3, 3), "b": f32(4)}
    wt = {"w": f32(4, 3, 2, 2, scale=0.3), "b": f32(3)}
    bn = {"s": f32(4) + 1, "bb": f32(4), "m": f32(4) * 0.1, "v": np.abs(f32(4)) + 0.5}
    return {
        "Conv": one("Conv", "w", "b", consts=conv, pads=[1, 1, 1, 1], strides=[2, 2]),
        "Conv:same-upper": one("Conv", "w", consts=conv, auto_pad="SAME_UPPER", strides=[2, 2]),
        "Conv:asymmetric": one("Conv", "w", "b", consts=conv, pads=[0, 1, 2, 1], dilations=[2, 1]),
        "Conv:depthwise": one("Conv", "w", "b", consts=dw, group=4, pads=[1, 1, 1, 1]),
        "Conv:1d": one("Conv", "w", consts={"w": f32(5, 6, 3)}, shape=(2, 6, 9), pads=[1, 1]),
        "ConvTranspose": one("ConvTranspose", "w", "b", consts=wt, kernel_shape=[2, 2], strides=[2, 2]),
        "ConvTranspose:pads": one(
            "ConvTranspose",
            "w",
            "b",
            consts={**wt, "w": f32(4, 3, 3, 3)},
            strides=[2, 2],
            pads=[1, 0, 0, 1],
            output_padding=[1, 1],
        ),
        "ConvTranspose:output-shape": one(
            "ConvTranspose", "w", consts={"w": f32(4, 3, 3, 3)}, strides=[2, 2], output_shape=[13, 12]
        ),
        "ConvTranspose:same-upper": one(
            "ConvTranspose", "w", consts={"w": f32(4, 3, 3, 3)}, strides=[2, 2], auto_pad="SAME_UPPER"
        ),
        "ConvTranspose:grouped": one(
            "ConvTranspose", "w", consts={"w": f32(4, 2, 3, 3)}, group=2, dilations=[2, 2], pads=[1, 1, 1, 1]
        ),
        "BatchNormalization": one("BatchNormalization", "s", "bb", "m", "v", consts=bn),
        "InstanceNormalization": one("InstanceNormalization", "s", "bb", consts=bn),
        "LayerNormalization": one("LayerNormalization", "s", "b", consts={"s": f32(6) + 1, "b": f32(6)}),
        "LayerNormalization:axis1": one("LayerNormalization", "s", consts={"s": f32(4, 6, 6) + 1}, axis=1),
        "GroupNormalization": one("GroupNormalization", "s", "bb", consts=bn, num_groups=2, opset=21),
        "LpNormalization": one("LpNormalization", axis=1, p=2),
        "LpNormalization:p1": one("LpNormalization", axis=-1, p=1),
        "PRelu": one("PRelu", "s", consts={"s": f32(4, 1, 1)}),
        "MaxPool": one("MaxPool", kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1], ceil_mode=1),
        "MaxPool:same": one("MaxPool", kernel_shape=[5, 5], pads=[2, 2, 2, 2]),  # YOLO's SPPF
        "MaxPool:asymmetric": one("MaxPool", kernel_shape=[2, 2], strides=[2, 2], pads=[0, 0, 1, 1]),
        "AveragePool": one("AveragePool", kernel_shape=[3, 2], strides=[3, 2]),  # SVTR's neck
        "AveragePool:pads": one("AveragePool", kernel_shape=[3, 3], pads=[1, 1, 1, 1], count_include_pad=1),
        "LpPool": one("LpPool", kernel_shape=[2, 2], strides=[2, 2], p=2),
        "GlobalAveragePool": one("GlobalAveragePool"),
        "GlobalMaxPool": one("GlobalMaxPool"),
    }


def _arithmetic() -> dict[str, Case]:
    y = {"y": f32(1, 4, 1, 6)}
    cases = {op: one(op, "y", consts=y) for op in ("Add", "Sub", "Mul", "Max", "Min", "Sum", "Mean")}
    cases["Div"] = one("Div", "y", consts={"y": np.abs(f32(6)) + 0.5})
    cases["Pow"] = one("Pow", "y", consts={"y": np.float32(2.0)})
    cases["Mod"] = one("Mod", "y", consts={"y": np.float32(0.7)}, fmod=1)
    cases["Mod:int"] = chain(
        node("Cast", ["x"], ["i"], to=TensorProto.INT64),
        node("Mul", ["i", "k"], ["j"]),
        node("Mod", ["j", "m"], fmod=0),
        consts={"k": i64(7), "m": i64(3)},
        low=-3.0,
        high=3.0,
    )
    for op in COMPARE:
        cases[op] = chain(node("Round", ["x"], ["r"]), node(op, ["r", "z"]), consts={"z": np.float32(0)})
    for op in ("And", "Or", "Xor"):
        cases[op] = chain(
            node("Greater", ["x", "z"], ["a"]),
            node("Less", ["x", "h"], ["b"]),
            node(op, ["a", "b"]),
            consts={
                "z": np.float32(0.5 if op != "And" else -0.5),
                "h": np.float32(-0.5 if op != "And" else 0.5),
            },
        )
    cases["Not"] = chain(node("Greater", ["x", "z"], ["a"]), node("Not", ["a"]), consts={"z": np.float32(0)})
    cases["Where"] = chain(
        node("Greater", ["x", "z"], ["a"]),
        node("Where", ["a", "x", "y"]),
        consts={"z": np.float32(0), "y": f32(6)},
    )
    cases["IsNaN"] = chain(node("Round", ["x"], ["r"]), node("Div", ["r", "r"], ["q"]), node("IsNaN", ["q"]))
    cases["IsInf"] = chain(
        node("Round", ["x"], ["r"]),
        node("Div", ["one", "r"], ["q"]),
        node("IsInf", ["q"], detect_negative=0),
        consts={"one": np.float32(1)},
    )
    cases["Clip"] = one("Clip", "lo", "hi", consts={"lo": np.float32(-0.5), "hi": np.float32(0.7)})
    cases["Clip:6"] = one("Clip", opset=6, min=-0.5, max=0.7)
    cases["Clip:max-only"] = one("Clip", "", "hi", consts={"hi": np.float32(0.3)})
    cases["Softmax"] = one("Softmax", axis=1)
    cases["Softmax:11"] = one("Softmax", axis=2, opset=11)  # before 13: over axes 2.. flattened
    cases["LogSoftmax"] = one("LogSoftmax", axis=-1)
    cases["Hardmax"] = one("Hardmax", axis=1)
    cases["Gemm"] = chain(
        node("Flatten", ["x"], ["f"]),
        node("Gemm", ["f", "w", "c"], transB=1, alpha=0.5),
        consts={"w": f32(5, 144), "c": f32(5)},
    )
    cases["Gemm:transA"] = chain(
        node("Flatten", ["x"], ["f"]), node("Gemm", ["f", "w"], transA=1), consts={"w": f32(2, 3)}
    )
    cases["MatMul"] = one("MatMul", "w", consts={"w": f32(6, 5)})
    cases["Einsum"] = one("Einsum", "w", consts={"w": f32(3, 4)}, equation="bchw,dc->bdhw", opset=12)
    cases["ArgMax"] = one("ArgMax", axis=1, keepdims=0)
    cases["ArgMin"] = one("ArgMin", axis=-1, select_last_index=1)
    cases["TopK"] = one("TopK", "k", consts={"k": i64(3)}, n_out=2, axis=-1)
    cases["CumSum"] = one("CumSum", "a", consts={"a": np.int64(2)}, exclusive=1, reverse=1)
    return cases


def _movement() -> dict[str, Case]:
    cases = {
        "Flatten": one("Flatten", axis=2),
        "Reshape": one("Reshape", "s", consts={"s": i64(0, -1, 6)}),
        "Transpose": one("Transpose", perm=[0, 2, 3, 1]),
        "Concat": one("Concat", "y", consts={"y": f32(2, 3, 6, 6)}, axis=1),
        "Split": one("Split", "s", consts={"s": i64(1, 3)}, n_out=2, axis=1),
        "Split:18": one("Split", n_out=3, axis=-1, num_outputs=3, opset=18),
        "Split:11": one("Split", n_out=2, axis=1, split=[3, 1], opset=11),
        "Slice": one(
            "Slice",
            "s",
            "e",
            "a",
            "t",
            consts={"s": i64(1, -1), "e": i64(100, -7), "a": i64(1, 3), "t": i64(2, -2)},
        ),
        "Slice:9": one("Slice", opset=9, starts=[1], ends=[3], axes=[2]),
        "Squeeze": chain(
            node("ReduceMean", ["x"], ["m"], axes=[2], keepdims=1),
            node("Squeeze", ["m", "a"]),
            consts={"a": i64(2)},
        ),
        "Squeeze:11": chain(
            node("ReduceMean", ["x"], ["m"], axes=[2], keepdims=1), node("Squeeze", ["m"], axes=[2]), opset=11
        ),
        "Unsqueeze": one("Unsqueeze", "a", consts={"a": i64(0, -1)}),
        "Unsqueeze:11": one("Unsqueeze", axes=[1], opset=11),
        "Shape": chain(
            node("Shape", ["x"], ["s"], start=1),
            node("Slice", ["s", "z", "o"], ["c"]),
            node("Concat", ["m", "c", "r"], ["t"], axis=0),
            node("Reshape", ["x", "t"]),
            consts={"z": i64(0), "o": i64(1), "m": i64(2), "r": i64(-1)},
        ),
        "Size": chain(
            node("Size", ["x"], ["n"]),
            node("Cast", ["n"], ["f"], to=TensorProto.FLOAT),
            node("Div", ["x", "f"]),
        ),
        "Gather": one("Gather", "i", consts={"i": i64(3, -1, 0)}, axis=1),
        "Gather:shape": chain(
            node("Shape", ["x"], ["s"]),
            node("Gather", ["s", "i"], ["d"]),
            node("Unsqueeze", ["d", "z"], ["u"]),
            node("Concat", ["u", "m"], ["t"], axis=0),
            node("Reshape", ["x", "t"]),
            consts={"i": np.int64(0), "z": i64(0), "m": i64(-1)},
        ),
        "GatherElements": one("GatherElements", "i", consts={"i": RNG.integers(-4, 4, (2, 3, 6, 6))}, axis=1),
        "GatherND": one("GatherND", "i", consts={"i": i64(0, 1, 1, 2, 0, 3).reshape(3, 2)}),
        "ScatterND": one("ScatterND", "i", "u", consts={"i": i64(1).reshape(1, 1), "u": f32(1, 4, 6, 6)}),
        "ScatterElements": one(
            "ScatterElements",
            "i",
            "u",
            axis=3,
            consts={"i": i64(5, 0).reshape(1, 1, 1, 2), "u": f32(1, 1, 1, 2)},
        ),
        "Expand": one("Expand", "s", consts={"s": i64(3, 1, 1, 1, 1)}),
        "Tile": one("Tile", "r", consts={"r": i64(1, 2, 1, 3)}),
        "Pad": one("Pad", "p", "v", consts={"p": i64(0, 0, 1, 2, 0, 0, 3, 0), "v": np.float32(0.5)}),
        "Pad:reflect": one("Pad", "p", consts={"p": i64(0, 0, 2, 1, 0, 0, 1, 2)}, mode="reflect"),
        "Pad:edge": one("Pad", "p", consts={"p": i64(0, 0, 2, 1, 0, 0, 1, 2)}, mode="edge"),
        "Pad:axes": one("Pad", "p", "", "a", consts={"p": i64(1, 2, 0, 1), "a": i64(-1, 1)}, opset=18),
        "Pad:wrap": one("Pad", "p", consts={"p": i64(0, 0, 2, 1, 0, 0, 1, 2)}, mode="wrap", opset=19),
        "Pad:2": one("Pad", opset=2, pads=[0, 1, 1, 0, 0, 1, 0, 2], value=-1.0),
        "DepthToSpace": one("DepthToSpace", blocksize=2, mode="DCR"),
        "DepthToSpace:crd": one("DepthToSpace", blocksize=2, mode="CRD"),
        "SpaceToDepth": one("SpaceToDepth", blocksize=2),
        "Trilu": one("Trilu", "k", consts={"k": np.int64(1)}, upper=0, opset=14),
        "Dropout": one("Dropout", "r", consts={"r": np.float32(0.3)}),
        "Cast": chain(
            node("Mul", ["x", "k"], ["y"]),
            node("Cast", ["y"], to=TensorProto.INT32),
            consts={"k": np.float32(3)},
        ),
        "CastLike": chain(
            node("Mul", ["x", "k"], ["y"]),
            node("CastLike", ["y", "t"]),
            consts={"k": np.float32(3), "t": i64(0)},
        ),
        "ConstantOfShape": chain(
            node("Shape", ["x"], ["s"]),
            node(
                "ConstantOfShape", ["s"], ["c"], value=numpy_helper.from_array(np.array([0.25], np.float32))
            ),
            node("Add", ["x", "c"]),
        ),
        "Range": chain(
            node("Shape", ["x"], ["s"]),
            node("Gather", ["s", "i"], ["n"]),
            node("Range", ["z", "n", "o"], ["r"]),
            node("Cast", ["r"], ["f"], to=TensorProto.FLOAT),
            node("Mul", ["x", "f"]),
            consts={"i": np.int64(3), "z": np.int64(0), "o": np.int64(1)},
        ),
        "NonZero": chain(
            node("Greater", ["x", "z"], ["a"]), node("NonZero", ["a"]), consts={"z": np.float32(1)}
        ),
    }
    return cases


def _resize(
    scales: list[float] | None = None, sizes: list[int] | None = None, opset: int = 17, **attrs: Any
) -> Case:
    consts: dict[str, Any] = {"roi": np.zeros(0, np.float32)}
    if sizes is not None:
        return one("Resize", "roi", "", "sz", consts={**consts, "sz": i64(*sizes)}, opset=opset, **attrs)
    return one(
        "Resize", "roi", "sc", consts={**consts, "sc": np.array(scales, np.float32)}, opset=opset, **attrs
    )


def _resizes() -> dict[str, Case]:
    return {
        "Resize": _resize(
            [1, 1, 2, 2], mode="nearest", coordinate_transformation_mode="asymmetric", nearest_mode="floor"
        ),  # PP-OCR's DB neck and YOLO's FPN
        "Resize:nearest-3x": _resize([1, 1, 3, 3], mode="nearest"),  # half_pixel, round_prefer_floor
        "Resize:nearest-down": _resize(
            sizes=[2, 4, 4, 5],
            mode="nearest",
            nearest_mode="ceil",
            coordinate_transformation_mode="tf_half_pixel_for_nn",
        ),
        "Resize:linear": _resize([1, 1, 2, 2], mode="linear"),
        "Resize:linear-down": _resize(
            sizes=[2, 4, 4, 3], mode="linear", coordinate_transformation_mode="pytorch_half_pixel"
        ),
        "Resize:align-corners": _resize(
            [1, 1, 1.5, 2.5], mode="linear", coordinate_transformation_mode="align_corners"
        ),
        "Resize:asymmetric-linear": _resize(
            [1, 1, 2, 3], mode="linear", coordinate_transformation_mode="asymmetric"
        ),
        "Resize:cubic": _resize([1, 1, 2, 2], mode="cubic"),
        "Resize:cubic-exclude": _resize(
            [1, 1, 1.7, 0.8], mode="cubic", exclude_outside=1, cubic_coeff_a=-0.5
        ),
        "Resize:axes": one("Resize", "", "", "sz", consts={"sz": i64(9, 4)}, axes=[2, 3], opset=18),
        "Upsample": one("Upsample", "sc", consts={"sc": np.array([1, 1, 2, 2], np.float32)}, opset=9),
    }


def _patterns() -> dict[str, Case]:
    c = 4
    se = {"w1": f32(2, c, 1, 1), "b1": f32(2), "w2": f32(c, 2, 1, 1), "b2": f32(c)}
    ln = {"two": np.float32(2), "eps": np.float32(1e-5), "g": f32(6) + 1, "b": f32(6)}
    att = {"wq": f32(6, 6), "wk": f32(6, 6), "wv": f32(6, 6), "s": i64(2, 24, 6), "scale": np.float32(0.4)}
    return {
        "pattern:silu": chain(node("Sigmoid", ["x"], ["s"]), node("Mul", ["x", "s"])),
        "pattern:squeeze-excite": chain(
            node("GlobalAveragePool", ["x"], ["p"]),
            node("Conv", ["p", "w1", "b1"], ["h"]),
            node("Relu", ["h"], ["r"]),
            node("Conv", ["r", "w2", "b2"], ["g"]),
            node("HardSigmoid", ["g"], ["a"], alpha=0.2, beta=0.5),
            node("Mul", ["x", "a"]),
            consts=se,
        ),
        "pattern:hardswish-decomposed": chain(  # Paddle's older exports: x * clip(x + 3, 0, 6) / 6
            node("Add", ["x", "three"], ["a"]),
            node("Clip", ["a", "zero", "six"], ["c"]),
            node("Mul", ["x", "c"], ["m"]),
            node("Div", ["m", "six"]),
            consts={"three": np.float32(3), "zero": np.float32(0), "six": np.float32(6)},
        ),
        "pattern:layernorm-decomposed": chain(
            node("ReduceMean", ["x"], ["mu"], axes=[-1]),
            node("Sub", ["x", "mu"], ["d"]),
            node("Pow", ["d", "two"], ["sq"]),
            node("ReduceMean", ["sq"], ["var"], axes=[-1]),
            node("Add", ["var", "eps"], ["ve"]),
            node("Sqrt", ["ve"], ["sd"]),
            node("Div", ["d", "sd"], ["n"]),
            node("Mul", ["n", "g"], ["ng"]),
            node("Add", ["ng", "b"]),
            consts=ln,
        ),
        "pattern:attention": chain(
            node("Reshape", ["x", "s"], ["t"]),
            node("MatMul", ["t", "wq"], ["q"]),
            node("MatMul", ["t", "wk"], ["k"]),
            node("MatMul", ["t", "wv"], ["v"]),
            node("Transpose", ["k"], ["kt"], perm=[0, 2, 1]),
            node("MatMul", ["q", "kt"], ["qk"]),
            node("Mul", ["qk", "scale"], ["sc"]),
            node("Softmax", ["sc"], ["p"], axis=-1),
            node("MatMul", ["p", "v"]),
            consts=att,
        ),
    }


CASES = _cases()
