"""Trained values back into the original graph, and the checks the result passes before it is written.

Nothing is re-exported: the trained parameters and BatchNormalization statistics replace the model's own
initializers (or ``Constant`` node values) of the same names, so every node, node name, BatchNormalization,
opset and input/output name is the input's (``--replay`` and reports keep matching). The result must pass
``prune``'s validation, keep its BatchNormalization count, and reproduce the trained PyTorch module on
ONNX Runtime (within the float32 noise floor, ``compare.py``); then it is written atomically.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import onnx
from onnx import helper, numpy_helper

from onnxprune.errors import ValidationError
from onnxprune.rewrite import validate
from onnxprune.runtime import check_runs
from onnxprune.train.compare import compare_outputs, graph_outputs


def write_back(
    model: onnx.ModelProto, arrays: Mapping[str, np.ndarray], sources: Mapping[str, str]
) -> onnx.ModelProto:
    """A copy of ``model`` with ``arrays`` in place of the constants of the same names.

    ``sources`` says where each lives: '' for an initializer, else the name of its Constant node.
    """
    out = onnx.ModelProto()
    out.CopyFrom(model)
    initializers = {t.name: t for t in out.graph.initializer}
    constants = {n.output[0]: n for n in out.graph.node if n.op_type == "Constant"}
    for name, array in arrays.items():
        if sources.get(name, "") == "":
            old = initializers[name]
            old.CopyFrom(
                numpy_helper.from_array(array.astype(helper.tensor_dtype_to_np_dtype(old.data_type)), name)
            )
        else:
            node = constants[name]
            del node.attribute[:]
            node.attribute.append(helper.make_attribute("value", numpy_helper.from_array(array, name)))
    return out


def bn_count(model: onnx.ModelProto) -> int:
    return sum(node.op_type == "BatchNormalization" for node in model.graph.node)


def check_trained(
    original: onnx.ModelProto, trained: onnx.ModelProto, feed: Mapping[str, np.ndarray],
    expected: Mapping[str, np.ndarray], floors: Mapping[str, float] | None = None,
) -> float:  # fmt: skip
    """Validate ``trained`` as ``prune`` does, and compare it on ``feed`` with the PyTorch outputs
    ``expected`` (within the float32 noise floor, see ``compare.py``; ``floors``: the module's own, from
    ``check.float32_noise``); returns the worst relative error.
    Raises ValidationError / VerificationError."""
    validate(trained)
    check_runs(original, trained)
    if bn_count(trained) != bn_count(original):
        raise ValidationError(
            f"trained model has {bn_count(trained)} BatchNormalization nodes, the input {bn_count(original)}"
        )
    return compare_outputs(graph_outputs(trained, feed, floors), expected, "the trained PyTorch module")
