"""An ONNX graph as a PyTorch module whose parameters are the model's own weights, keyed by their ONNX names.

The module runs the ONNX nodes in order with the functions of ``ops.py``. Weights of Conv, ConvTranspose,
Gemm, MatMul, BatchNormalization (scale, bias), PRelu and the normalisations are trainable parameters;
BatchNormalization's running mean and variance are buffers that training mode updates; every other constant
stays a constant. Because each parameter keeps its ONNX name (through ``Identity`` forwarding and
``Constant`` nodes), training ends by writing the values back into the very same graph (``export.py``):
every node, node name, BatchNormalization and input/output name stays as it was.

Why not onnx2torch: it imports torchvision at import time (the CPU torch wheel here has no matching
torchvision: PyPI's is CUDA-linked and fails to load), and its modules do not say which initializer each
weight came from, which writing back into the same graph needs.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx
import torch
from onnx import helper, numpy_helper
from torch import nn

from onnxprune.train.ops import OPS, NodeCall, UnsupportedOpError

TRAINABLE_SLOTS = {
    "Conv": (1, 2), "ConvTranspose": (1, 2), "Gemm": (0, 1, 2), "MatMul": (0, 1),
    "BatchNormalization": (1, 2), "PRelu": (1,), "InstanceNormalization": (1, 2),
    "LayerNormalization": (1, 2),
}  # fmt: skip
STAT_SLOTS = {"BatchNormalization": (3, 4)}


@dataclass
class Step:
    """One ONNX node: its call, the names its inputs are read from, the names its outputs are stored as."""

    call: NodeCall
    inputs: list[str]
    outputs: list[str]


class OnnxModule(nn.Module):
    """``forward(*inputs)`` returns the graph outputs as a tuple, in the graph's order."""

    def __init__(self, model: onnx.ModelProto) -> None:
        super().__init__()
        self.opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 13)
        # Training mode normalises by the batch and updates BN running statistics (torch's own way); off,
        # training keeps them (TrainOptions.batch_norm "frozen").
        self.batch_statistics = True
        values, self.sources = _constants(model)
        self.alias = _identity_aliases(model, values)
        roles = self._roles(model, values)
        self.params = nn.ParameterList()
        self.slots: dict[str, tuple[str, int]] = {}  # ONNX name -> ("param" | "buffer", index)
        for name, array in values.items():
            tensor = torch.from_numpy(np.array(array, copy=True))
            if roles.get(name) == "param":
                self.slots[name] = ("param", len(self.params))
                self.params.append(nn.Parameter(tensor))
            else:
                index = len(self.slots)
                self.register_buffer(f"c{index}", tensor)
                self.slots[name] = ("buffer", index)
        self.roles = roles
        self.steps = [self._step(node) for node in model.graph.node if not self._skipped(node)]
        self.dead_after = _dead_after(self.steps)
        weights = {t.name for t in model.graph.initializer}
        self.input_names = [v.name for v in model.graph.input if v.name not in weights]
        self.output_names = [v.name for v in model.graph.output]

    def _roles(self, model: onnx.ModelProto, values: Mapping[str, np.ndarray]) -> dict[str, str]:
        roles: dict[str, str] = {}
        for node in model.graph.node:
            for slots, role in ((TRAINABLE_SLOTS, "param"), (STAT_SLOTS, "stat")):
                for slot in slots.get(node.op_type, ()):
                    name = (
                        self.alias.get(node.input[slot], node.input[slot]) if slot < len(node.input) else ""
                    )
                    if name in values and values[name].dtype.kind == "f" and roles.get(name) != "param":
                        roles[name] = role
        return roles

    def _skipped(self, node: onnx.NodeProto) -> bool:
        """Constant nodes became values; Identity nodes that forward a constant became aliases."""
        return node.op_type == "Constant" or (node.op_type == "Identity" and node.output[0] in self.alias)

    def _step(self, node: onnx.NodeProto) -> Step:
        if node.domain not in ("", "ai.onnx") or node.op_type not in OPS:
            domain = f" (domain {node.domain})" if node.domain else ""
            raise UnsupportedOpError(
                f"train: op {node.op_type}{domain} (node {node.name!r}) has no PyTorch implementation here"
            )
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        call = NodeCall(node.op_type, node.name, attrs, self.opset, n_outputs=len(node.output))
        if node.op_type == "ConstantOfShape" and "value" in attrs:
            call.state["value"] = torch.from_numpy(numpy_helper.to_array(attrs["value"]).copy())
        inputs = [self.alias.get(name, name) for name in node.input]
        return Step(call, inputs, list(node.output))

    def tensor(self, name: str) -> torch.Tensor:
        kind, index = self.slots[name]
        return self.params[index] if kind == "param" else getattr(self, f"c{index}")

    def run(
        self, feed: Mapping[str, torch.Tensor], keep_all: bool = False, keep: Collection[str] = ()
    ) -> dict[str, torch.Tensor]:
        """Every graph output by name, and the intermediate values named in ``keep`` (all: ``keep_all``).

        A value no later step reads is dropped as the pass goes (unless returned): a pass without gradients
        then holds the live values only, not every intermediate of the graph (a detector's held-out
        samples at 640x640 took GBs); with gradients, autograd keeps what the backward pass needs."""
        env: dict[str, Any] = dict(feed)
        wanted = {self.alias.get(name, name) for name in [*self.output_names, *keep]}
        for step, dead in zip(self.steps, self.dead_after, strict=True):
            step.call.training = self.training
            step.call.batch_statistics = self.batch_statistics
            args = [self._value(env, name) for name in step.inputs]
            out = OPS[step.call.op](step.call, args)
            outs = out if isinstance(out, tuple) else (out,)
            for name, value in zip(step.outputs, outs, strict=False):
                if name:
                    env[name] = value
            if not keep_all:
                for name in dead - wanted:
                    env.pop(name, None)
        names = (
            list(env) if keep_all else [*self.output_names, *(n for n in keep if n not in self.output_names)]
        )
        return {name: self._value(env, self.alias.get(name, name)) for name in names}

    def _value(self, env: Mapping[str, Any], name: str) -> Any:
        if not name:
            return None  # an omitted optional input
        if name in env:
            return env[name]
        return self.tensor(name)

    def forward(self, *inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        values = self.run(dict(zip(self.input_names, inputs, strict=True)))
        return tuple(values[name] for name in self.output_names)

    @property
    def device(self) -> torch.device:
        """Where the module's tensors live (every constant is a buffer or a parameter)."""
        return next(iter(self.buffers()), next(iter(self.parameters()), torch.zeros(0))).device

    def bn_scales(self) -> list[nn.Parameter]:
        """The gamma of every BatchNormalization (a tied one once): what the L1 penalty acts on."""
        names = {s.inputs[1] for s in self.steps if s.call.op == "BatchNormalization"}
        return [self.params[i] for n, (kind, i) in self.slots.items() if n in names and kind == "param"]

    def trained_arrays(self) -> dict[str, np.ndarray]:
        """Every value that training changes (parameters, BN running statistics), by ONNX name."""
        return {
            name: self.tensor(name).detach().cpu().numpy().copy()
            for name, role in self.roles.items()
            if role in ("param", "stat")
        }


def _constants(model: onnx.ModelProto) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """Initializers and Constant-node outputs by name, with where each lives ('' for an initializer, the
    Constant node's name otherwise)."""
    values, sources = {}, {}
    for tensor in model.graph.initializer:
        values[tensor.name] = numpy_helper.to_array(tensor)
        sources[tensor.name] = ""
    for node in model.graph.node:
        if node.op_type == "Constant":
            values[node.output[0]] = _constant_value(node)
            sources[node.output[0]] = node.name or node.output[0]
    return values, sources


def _constant_value(node: onnx.NodeProto) -> np.ndarray:
    attr = node.attribute[0]
    value = helper.get_attribute_value(attr)
    if attr.name == "value":
        return numpy_helper.to_array(value)
    kinds = {
        "value_float": np.float32,
        "value_floats": np.float32,
        "value_int": np.int64,
        "value_ints": np.int64,
    }
    if attr.name not in kinds:
        raise UnsupportedOpError(
            f"train: Constant node {node.name!r}: attribute {attr.name} is not supported"
        )
    return np.array(value, dtype=kinds[attr.name])


def _identity_aliases(model: onnx.ModelProto, values: Mapping[str, np.ndarray]) -> dict[str, str]:
    """Identity outputs that forward a constant (exporters share a tensor that way): output -> constant."""
    alias: dict[str, str] = {}
    for node in model.graph.node:
        if node.op_type == "Identity":
            source = alias.get(node.input[0], node.input[0])
            if source in values:
                alias[node.output[0]] = source
    return alias


def _dead_after(steps: list[Step]) -> list[frozenset[str]]:
    """Per step, the values no later step reads: those it reads last, and those it makes that none reads."""
    last: dict[str, int] = {}
    for index, step in enumerate(steps):
        for name in (*step.inputs, *step.outputs):
            if name:
                last[name] = index
    dead: list[set[str]] = [set() for _ in steps]
    for name, index in last.items():
        dead[index].add(name)
    return [frozenset(names) for names in dead]
