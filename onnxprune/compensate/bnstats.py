"""BN statistics: re-estimate the running mean and variance of BatchNormalizations whose input pruning
changed, on the pruned model's own activations.

One ONNX Runtime pass does every BN in topological order at once: the BNs to re-estimate run in training
mode (ONNX BatchNormalization-14, momentum 0), so each normalises with the statistics of the batch it
sees, with every BN before it already normalising the same way (as AdaBN / EagleEye do in a framework), and
returns that batch's mean and variance. Batches are pooled by the law of total variance.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
from onnx import helper, numpy_helper

from onnxprune.capture import Runner
from onnxprune.data import Samples

MIN_OPSET = 14
BATCH = 32  # BatchNormalization's training_mode and running statistics outputs


@dataclass
class BNUpdate:
    node: str
    channels: int
    mean_shift: float  # mean |new - old| of the running mean, over the channels
    var_ratio: float  # median new / old running variance


def tainted(model: onnx.ModelProto, changed: set[str]) -> set[str]:
    """Tensors whose values differ from the unpruned model's: downstream of the ``changed`` nodes."""
    dirty: set[str] = set()
    for node in model.graph.node:
        if node.name in changed or dirty.intersection(node.input):
            dirty.update(node.output)
    return dirty


def targets(model: onnx.ModelProto, changed: set[str]) -> list[onnx.NodeProto]:
    dirty = tainted(model, changed)
    return [n for n in model.graph.node if n.op_type == "BatchNormalization" and n.input[0] in dirty]


def opset(model: onnx.ModelProto) -> int:
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)


def reestimate(
    model: onnx.ModelProto, nodes: list[onnx.NodeProto], samples: Samples, static_batch: int | None
) -> list[BNUpdate]:
    """Replace the running statistics of ``nodes`` in ``model`` (in place) with the pruned model's own."""
    if not nodes:
        return []
    probe, wanted = _training_copy(model, {n.name for n in nodes})
    sums: dict[str, np.ndarray] = {}
    weight = 0
    # Training mode normalises by the batch's statistics: a batch of one would normalise each sample
    # by itself, so the batch is fixed (and the exposed tensors are small vectors anyway).
    for start, stop, outputs in Runner(probe, wanted, static_batch, BATCH).run(samples):
        size = stop - start
        for name, value in outputs.items():
            value = value.astype(np.float64)
            sums[name] = sums.get(name, 0.0) + size * value
            if name.endswith("__calib_mean"):
                sums[name + "_sq"] = sums.get(name + "_sq", 0.0) + size * value**2
        weight += size
    return [_write(model, node, sums, weight) for node in nodes]


def _training_copy(model: onnx.ModelProto, names: set[str]) -> tuple[onnx.ModelProto, list[str]]:
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    wanted = []
    for node in copy.graph.node:
        if node.name not in names:
            continue
        del node.output[1:]
        node.output.extend([f"{node.name}__calib_mean", f"{node.name}__calib_var"])
        kept = [a for a in node.attribute if a.name not in ("training_mode", "momentum", "spatial")]
        del node.attribute[:]
        node.attribute.extend(
            [*kept, helper.make_attribute("training_mode", 1), helper.make_attribute("momentum", 0.0)]
        )
        wanted.extend(node.output[1:])
    return copy, wanted


def _write(model: onnx.ModelProto, node: onnx.NodeProto, sums: dict, weight: int) -> BNUpdate:
    key = f"{node.name}__calib_mean"
    mean = sums[key] / weight
    # Law of total variance: the mean of the batch variances plus the variance of the batch means.
    var = sums[f"{node.name}__calib_var"] / weight + sums[key + "_sq"] / weight - mean**2
    inits = {t.name: t for t in model.graph.initializer}
    old_mean = numpy_helper.to_array(inits[node.input[3]]).astype(np.float64)
    old_var = numpy_helper.to_array(inits[node.input[4]]).astype(np.float64)
    dtype = numpy_helper.to_array(inits[node.input[3]]).dtype
    _replace(model, node, 3, mean.astype(dtype))
    _replace(model, node, 4, var.astype(dtype))
    ratio = float(np.median(var / np.maximum(old_var, 1e-12)))
    return BNUpdate(node.name, int(mean.size), float(np.mean(np.abs(mean - old_mean))), ratio)


def _replace(model: onnx.ModelProto, node: onnx.NodeProto, index: int, value: np.ndarray) -> None:
    """A fresh initializer for this node only: a statistic shared with another BN stays as it was."""
    target = next(n for n in model.graph.node if n.name == node.name)
    name = f"{node.name}__calib_{'mean' if index == 3 else 'var'}"
    model.graph.initializer.append(numpy_helper.from_array(value, name))
    target.input[index] = name
