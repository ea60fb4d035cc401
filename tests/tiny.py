"""Tiny models built in code, and the checks every pruning test shares.

``Net`` appends ONNX nodes with seeded weights; its BatchNormalization can be made dead on chosen channels
(gamma = beta = 0, so its output there is exactly 0). ``REGISTRY`` names one small model per channel pattern;
rule tests and the exactness suite parametrise over it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from onnxprune import api, runtime
from onnxprune.options import PlanOptions
from onnxprune.verify import max_relative_error


class Net:
    """A builder: each method adds nodes and returns the name of the output tensor."""

    def __init__(self, seed: int = 0, dead: float = 0.5) -> None:
        self.rng = np.random.default_rng(seed)
        self.dead = dead
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self.count = 0

    def name(self, op: str) -> str:
        self.count += 1
        return f"/{op.lower()}{self.count}/{op}"

    def param(self, values: np.ndarray, hint: str = "w") -> str:
        self.count += 1
        name = f"{hint}{self.count}"
        values = np.asarray(values)
        if values.dtype.kind == "f":
            values = values.astype(np.float32)  # integer parameters (Split sizes, shapes) keep their type
        self.inits.append(numpy_helper.from_array(values, name))
        return name

    def node(self, op: str, inputs: Sequence[str], n_out: int = 1, **attrs: object) -> str:
        name = self.name(op)
        outs = [f"{name}_out{k}" for k in range(n_out)]
        self.nodes.append(helper.make_node(op, list(inputs), outs, name=name, **attrs))
        return outs[0] if n_out == 1 else outs  # type: ignore[return-value]

    def conv(
        self, x: str, c_in: int, c_out: int, k: int = 3, group: int = 1, stride: int = 1, bias=False
    ) -> str:
        fan_in = c_in // group * k * k
        w = self.param(self.rng.normal(0, np.sqrt(2 / fan_in), (c_out, c_in // group, k, k)))
        ins = [x, w] + ([self.param(self.rng.normal(0, 0.1, c_out), "b")] if bias else [])
        return self.node(
            "Conv", ins, kernel_shape=[k, k], pads=[k // 2] * 4, group=group, strides=[stride] * 2
        )

    def bn(self, x: str, c: int, dead: np.ndarray | None = None) -> str:
        if dead is None:
            dead = self.rng.random(c) < self.dead
        gamma = np.where(dead, 0.0, self.rng.uniform(0.5, 1.5, c))
        beta = np.where(dead, 0.0, self.rng.normal(0, 0.1, c))
        mean, var = self.rng.normal(0, 0.1, c), self.rng.uniform(0.5, 2.0, c)
        params = [self.param(v, "bn") for v in (gamma, beta, mean, var)]
        return self.node("BatchNormalization", [x, *params])

    def cbr(self, x: str, c_in: int, c_out: int, k: int = 3, act: str = "Relu", **kw: object) -> str:
        """Conv → BN → activation, the unit every CNN repeats."""
        h = self.bn(self.conv(x, c_in, c_out, k, **kw), c_out)  # type: ignore[arg-type]
        return self.act(h, act)

    def act(self, x: str, act: str) -> str:
        if act == "SiLU":
            return self.node("Mul", [x, self.node("Sigmoid", [x])])
        if act == "Relu6":
            lo, hi = self.param(np.array(0.0), "min"), self.param(np.array(6.0), "max")
            return self.node("Clip", [x, lo, hi])
        return self.node(act, [x]) if act else x

    def head(self, x: str, c: int, classes: int = 10) -> str:
        """GlobalAveragePool → Flatten → Gemm."""
        flat = self.node("Flatten", [self.node("GlobalAveragePool", [x])], axis=1)
        w = self.param(self.rng.normal(0, np.sqrt(1 / c), (classes, c)))
        return self.node("Gemm", [flat, w, self.param(self.rng.normal(0, 0.1, classes), "b")], transB=1)

    def model(
        self, outputs: Sequence[str], shape: Sequence[int] = (1, 3, 16, 16), opset: int = 17
    ) -> onnx.ModelProto:
        graph = helper.make_graph(
            self.nodes,
            "tiny",
            [helper.make_tensor_value_info("input", TensorProto.FLOAT, list(shape))],
            [helper.make_tensor_value_info(o, TensorProto.FLOAT, None) for o in outputs],
            self.inits,
        )
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
        model.ir_version = 8
        return onnx.shape_inference.infer_shapes(model)


# ---- the registry: one small model per channel pattern ----------------------------------------------
def chain(seed: int = 0, dead: float = 0.5) -> onnx.ModelProto:
    n = Net(seed, dead)
    x = n.cbr("input", 3, 24)
    x = n.node("MaxPool", [n.cbr(x, 24, 32, act="LeakyRelu")], kernel_shape=[2, 2], strides=[2, 2])
    x = n.cbr(x, 32, 16, act="Relu6")
    return n.model([n.head(x, 16)])


def residual(seed: int = 0, dead: float = 0.5) -> onnx.ModelProto:
    n = Net(seed, dead)
    stem = n.cbr("input", 3, 16)
    h = n.bn(n.conv(n.cbr(stem, 16, 24), 24, 16), 16)
    x = n.node("Relu", [n.node("Add", [h, stem])])
    return n.model([n.head(x, 16)])


def concat(seed: int = 0, dead: float = 0.5) -> onnx.ModelProto:
    n = Net(seed, dead)
    a, b = n.cbr("input", 3, 12), n.cbr("input", 3, 20, k=1)
    x = n.node("Concat", [a, b], axis=1)
    return n.model([n.head(n.cbr(x, 32, 16), 16)])


def depthwise(seed: int = 0, dead: float = 0.5) -> onnx.ModelProto:
    """MobileNetV2's inverted residual: a dead expand channel becomes a constant after the depthwise BN,
    which the 1x1 projection folds into its bias."""
    n = Net(seed, dead)
    stem = n.cbr("input", 3, 16, act="Relu6")
    h = n.cbr(stem, 16, 48, k=1, act="Relu6")
    h = n.act(n.bn(n.conv(h, 48, 48, group=48), 48, dead=np.zeros(48, bool)), "Relu6")
    h = n.bn(n.conv(h, 48, 16, k=1), 16)
    return n.model([n.head(n.node("Add", [h, stem]), 16)])


def squeeze_gemm(seed: int = 0, dead: float = 0.5) -> onnx.ModelProto:
    """A pooled map squeezed into a Gemm, and a spatial map flattened into another."""
    n = Net(seed, dead)
    x = n.cbr("input", 3, 16)
    x = n.node("AveragePool", [x], kernel_shape=[4, 4], strides=[4, 4])  # 16x16 → 4x4
    flat = n.node("Flatten", [x], axis=1)
    w = n.param(n.rng.normal(0, 0.1, (16 * 16, 10)))
    return n.model([n.node("MatMul", [flat, w])])


REGISTRY: dict[str, Callable[..., onnx.ModelProto]] = {
    "chain": chain,
    "residual": residual,
    "concat": concat,
    "depthwise": depthwise,
    "squeeze_gemm": squeeze_gemm,
}


def every_model() -> dict[str, Callable[..., onnx.ModelProto]]:
    """The one index of the tiny models the tests build in code: the pruning family above (what the
    exactness tests parametrise over) and the 2:4 family (sparse_models.py: every weight route and
    decline). Rule tests build their one-op graphs beside each rule (rules/_build.py); hypothesis draws
    random graphs (fuzz_graphs.py)."""
    import sparse_models

    found = {f"prune/{name}": build for name, build in REGISTRY.items()}
    found.update({f"sparse/{b.__name__}": b for b in (sparse_models.routes, sparse_models.declines)})
    found["sparse/branches"] = sparse_models.branches
    return found


# ---- shared checks ----------------------------------------------------------------------------------
def outputs(model: onnx.ModelProto, seed: int = 0) -> dict[str, np.ndarray]:
    from onnxprune.inputs import make_inputs

    return runtime.run_model(model, make_inputs(model, seed=seed)[0])


def assert_exact(a: onnx.ModelProto, b: onnx.ModelProto, rtol: float = 1e-5) -> None:
    """Same outputs within ``rtol`` of each output's scale, on two seeded inputs."""
    for seed in (0, 1):
        before, after = outputs(a, seed), outputs(b, seed)
        for name, ref in before.items():
            assert after[name].shape == ref.shape, name
            err = max_relative_error(ref, after[name])
            assert err <= rtol, f"{name}: relative error {err:.3g}"


def prune_dead(model: onnx.ModelProto, **kw: object) -> api.PruneResult:
    """Prune exactly the channels whose gamma is 0, without rounding."""
    options = PlanOptions(threshold=0.0, round_to=1, min_keep=1, **kw)  # type: ignore[arg-type]
    return api.prune_model(model, options)


def removed_channels(result: api.PruneResult) -> int:
    return sum(g["channels_before"] - g["channels_after"] for g in result.report["groups"])


def with_dead_beta(model: onnx.ModelProto, seed: int = 1, scale: float = 0.5) -> onnx.ModelProto:
    """Every BN channel with gamma = 0 gets a non-zero beta: it outputs the constant beta exactly."""
    rng = np.random.default_rng(seed)
    inits = {t.name: t for t in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type != "BatchNormalization" or node.input[2] not in inits:
            continue
        gamma = numpy_helper.to_array(inits[node.input[1]])
        beta = numpy_helper.to_array(inits[node.input[2]]).copy()
        beta[gamma == 0] = rng.normal(0, scale, int((gamma == 0).sum()))
        inits[node.input[2]].CopyFrom(numpy_helper.from_array(beta.astype(beta.dtype), node.input[2]))
    return model
