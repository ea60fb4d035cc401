"""Is the PyTorch module the ONNX model? Compared with ONNX Runtime on real samples, op by op, then whole.

Op by op: every intermediate value is exposed as an output of an ONNX Runtime session, and each node's
PyTorch function is run on ONNX Runtime's own values of its inputs, so a difference belongs to that op
alone (float32 rounding accumulated upstream cannot be blamed on it); the first node, in graph order,
whose output is off by more than 1e-5 of its scale is named and training is refused. Then the whole
module against the whole model, within the float32 noise floor (``compare.py``), which includes the
module's own float32 error against its float64 run (``float32_noise``).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping

import numpy as np
import onnx
import torch

from onnxprune.errors import VerificationError
from onnxprune.runtime import run_model
from onnxprune.train.compare import close, compare_outputs, graph_outputs, op_bound
from onnxprune.train.ops import OPS
from onnxprune.train.torchgraph import OnnxModule, Step
from onnxprune.verify import max_relative_error

# Samples of the op-by-op check: every intermediate tensor of the graph is kept for them at once.
NODE_SAMPLES = 2


def check_conversion(
    module: OnnxModule, model: onnx.ModelProto, feed: Mapping[str, np.ndarray], device: torch.device
) -> float:
    """The worst relative error of any graph output; raises VerificationError naming the bad node (or the
    output, when every node alone is right but the whole drifts)."""
    module.eval()
    few = {name: array[:NODE_SAMPLES] for name, array in feed.items()}
    values = run_model(_expose_all(model), few)
    with torch.no_grad():
        for step in module.steps:
            _check_step(module, step, values, few, device)
        got = module.run({k: torch.from_numpy(v).to(device) for k, v in feed.items()})
    outputs = {name: value.detach().cpu().numpy() for name, value in got.items()}
    floors = float32_noise(module, feed, outputs, device)
    return compare_outputs(graph_outputs(model, feed, floors), outputs, "train: the PyTorch conversion")


def float32_noise(
    module: OnnxModule, feed: Mapping[str, np.ndarray], outputs: Mapping[str, np.ndarray],
    device: torch.device,
) -> dict[str, float]:  # fmt: skip
    """Per float output, max|float32 - float64| of the module (its ``outputs`` against a float64 copy run on
    the same ``feed``): the float32 rounding of this very computation. Empty where the copy cannot run in
    float64 (an op that insists on float32): the caller then has ONNX Runtime's own floor alone."""
    try:
        double = copy.deepcopy(module).double().eval()
        with torch.no_grad():
            exact = double.run({k: _as_double(torch.from_numpy(v).to(device)) for k, v in feed.items()})
    except (RuntimeError, TypeError, ValueError):
        return {}
    noise = {}
    for name, value in outputs.items():
        other = exact[name].detach().cpu().numpy()
        if value.dtype.kind == "f" and other.shape == value.shape:
            finite = np.isfinite(value) & np.isfinite(other)
            noise[name] = float(np.abs(value[finite] - other[finite]).max()) if finite.any() else 0.0
    return noise


def _as_double(value: torch.Tensor) -> torch.Tensor:
    return value.double() if value.is_floating_point() else value


def _check_step(
    module: OnnxModule, step: Step, values: Mapping[str, np.ndarray], feed: Mapping[str, np.ndarray],
    device: torch.device,
) -> None:  # fmt: skip
    if not all(name in values for name in step.outputs if name):
        return
    step.call.training = False
    args = [_input(module, name, values, feed, device) for name in step.inputs]
    out = OPS[step.call.op](step.call, args)
    for name, value in zip(step.outputs, out if isinstance(out, tuple) else (out,), strict=False):
        if name:
            _compare(step, name, values[name], value.detach().cpu().numpy())


def _input(
    module: OnnxModule, name: str, values: Mapping[str, np.ndarray], feed: Mapping[str, np.ndarray],
    device: torch.device,
) -> torch.Tensor | None:  # fmt: skip
    if not name:
        return None  # an omitted optional input
    found = values.get(name, feed.get(name))
    return module.tensor(name) if found is None else torch.from_numpy(np.array(found)).to(device)


def _compare(step: Step, name: str, want: np.ndarray, value: np.ndarray) -> None:
    if close(want, value):
        return
    if value.shape != want.shape:
        detail = f"shape {value.shape}, ONNX Runtime {want.shape}"
    elif want.dtype.kind not in "fc":
        detail = "values differ"
    else:
        detail = (
            f"max relative error {max_relative_error(want, value):.2g}, "
            f"limit {op_bound(want) / max(float(np.abs(want).max()), 1e-30):.2g}"
        )
    raise VerificationError(
        f"train: the PyTorch conversion of {step.call.op} node {step.call.name!r} differs from ONNX Runtime "
        f"on {name!r} ({detail}); refusing to train"
    )


def _expose_all(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy whose outputs are every node output (Constant nodes excepted), so ORT returns them all."""
    exposed = onnx.ModelProto()
    exposed.CopyFrom(model)
    present = {o.name for o in exposed.graph.output}
    for node in exposed.graph.node:
        if node.op_type == "Constant":
            continue
        for name in node.output:
            if name and name not in present:
                exposed.graph.output.append(onnx.ValueInfoProto(name=name))
                present.add(name)
    return exposed
