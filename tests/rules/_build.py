"""What every rule test shares: a model builder for several or dynamic inputs, the two exactness checks of a
positive test, and the check of a decline's reason.

A positive test proves three things: pruning exactly the dead channels (gamma = beta = 0 at the scoring BN)
leaves the outputs unchanged, a 50 % plan matches its masked reference, and both removed channels through
the op under test (a rule that declined everything would pass the first two).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import onnx
import tiny
from onnx import TensorProto, helper

from onnxprune import api
from onnxprune.options import PlanOptions

Net = tiny.Net
HALF = PlanOptions(ratio=0.5, round_to=4, min_keep=4)


def build(
    net: tiny.Net,
    outputs: Sequence[str],
    inputs: Mapping[str, Sequence[int | str]] | None = None,
    opset: int = 17,
) -> onnx.ModelProto:
    """Like ``Net.model`` but with any inputs (symbolic dims as strings) and any opset."""
    inputs = inputs or {"input": (1, 3, 16, 16)}
    graph = helper.make_graph(
        net.nodes,
        "tiny",
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, list(s)) for n, s in inputs.items()],
        [helper.make_tensor_value_info(o, TensorProto.FLOAT, None) for o in outputs],
        net.inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    return onnx.shape_inference.infer_shapes(model)


def const(net: tiny.Net, values: np.ndarray | Sequence[float], dtype: type = np.float32) -> str:
    """An initializer of any dtype (``Net.param`` makes float32 only)."""
    net.count += 1
    name = f"c{net.count}"
    net.inits.append(onnx.numpy_helper.from_array(np.asarray(values, dtype=dtype), name))
    return name


def ints(net: tiny.Net, values: Sequence[int]) -> str:
    return const(net, values, np.int64)


def pruned_through(result: api.PruneResult, op: str) -> bool:
    """Some group that lost channels has a node of this op type (tiny.Net names nodes ``/<op><n>/<Op>``)."""
    return any(
        g["channels_after"] < g["channels_before"] and any(n.endswith("/" + op) for n in g["nodes"])
        for g in result.report["groups"]
    )


def check_exact(
    model: onnx.ModelProto, through: str | Sequence[str] = (), criterion: str = "auto", dead: bool = True
) -> tuple[api.PruneResult | None, api.PruneResult]:
    """Dead channels pruned: same outputs as the original; half pruned: same as the masked reference.

    Args:
        through: op types that must sit in a group that lost channels, in both results.
        dead: False where the model has no dead channels to prune (no BatchNormalization).
    """
    ops = [through] if isinstance(through, str) else list(through)
    dead_result = None
    if dead:
        dead_result = tiny.prune_dead(model, criterion=criterion)
        assert tiny.removed_channels(dead_result) > 0, "no dead channel was removed"
        tiny.assert_exact(model, dead_result.pruned)
        for op in ops:
            assert pruned_through(dead_result, op), f"no dead channel removed through {op}"
    options = PlanOptions(ratio=0.5, round_to=4, min_keep=4, criterion=criterion)
    half = api.prune_model(model, options)
    assert tiny.removed_channels(half) > 0, "the 50 % plan removed nothing"
    tiny.assert_exact(half.masked, half.pruned)
    for op in ops:
        assert pruned_through(half, op), f"the 50 % plan removed nothing through {op}"
    return dead_result, half


def reasons(model: onnx.ModelProto, compensate: str = "bn") -> set[str]:
    """Every decline and must-keep reason of the model's groups."""
    groups = api.inspect(model, compensate=compensate).groups
    found = {d.reason for g in groups for d in g.declines}
    found |= {g.must_keep_reason.reason for g in groups if g.must_keep_reason is not None}
    return found


def assert_declines(model: onnx.ModelProto, reason: str, compensate: str = "bn") -> None:
    found = reasons(model, compensate)
    assert any(reason in r for r in found), f"{reason!r} not among {sorted(found)}"


def shape_of(model: onnx.ModelProto, name: str) -> list[int | str]:
    for value in list(model.graph.value_info) + list(model.graph.output):
        if value.name == name:
            return [d.dim_value or d.dim_param for d in value.type.tensor_type.shape.dim]
    raise KeyError(name)
