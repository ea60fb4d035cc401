"""Is the PyTorch module the ONNX model? Compared with ONNX Runtime on real samples, node by node.

Every intermediate value is exposed as an output of an ONNX Runtime session and compared with what the
module computes; the first node (in graph order) whose output is off by more than 1e-5 of its scale is the
op the backend gets wrong, and training is refused naming it.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import onnx
import torch

from onnxprune.errors import VerificationError
from onnxprune.runtime import run_model
from onnxprune.train.export import CONVERSION_RTOL, close
from onnxprune.train.torchgraph import OnnxModule
from onnxprune.verify import max_relative_error


def check_conversion(
    module: OnnxModule, model: onnx.ModelProto, feed: Mapping[str, np.ndarray], device: torch.device
) -> float:
    """The worst relative error of any graph output; raises VerificationError naming the first bad node."""
    want = run_model(_expose_all(model), feed)
    module.eval()
    with torch.no_grad():
        got = module.run({k: torch.from_numpy(v).to(device) for k, v in feed.items()}, keep_all=True)
    for node in model.graph.node:
        for name in node.output:
            if name and name in want and isinstance(got.get(name), torch.Tensor):
                _compare(node, name, want[name], got[name].detach().cpu().numpy())
    names = [o.name for o in model.graph.output]
    return max(max_relative_error(want[n], got[n].detach().cpu().numpy()) for n in names)


def _compare(node: onnx.NodeProto, name: str, want: np.ndarray, value: np.ndarray) -> None:
    if close(want, value):
        return
    if value.shape != want.shape:
        detail = f"shape {value.shape}, ONNX Runtime {want.shape}"
    else:
        detail = f"max relative error {max_relative_error(want, value):.2g}, limit {CONVERSION_RTOL:g}"
    raise VerificationError(
        f"train: the PyTorch conversion of {node.op_type} node {node.name!r} differs from ONNX Runtime "
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
