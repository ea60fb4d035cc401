"""Nothing to prune: a model whose every channel group is declined is refused with the reasons, instead of
an empty table and a copy of the input; where the Convs have no BatchNormalization because the exporter
folded it, how to export with BN kept."""

from __future__ import annotations

import collections

import onnx_graphsurgeon as gs

from onnxprune.channels import ChannelGroup, Plan
from onnxprune.errors import NothingToPruneError

# PyTorch (the usual producer, and what an unnamed one most likely is) can keep BN in the export.
TORCH_BN_HINT = (
    "the Convs have no BatchNormalization (folded by the exporter?): export the eval-mode PyTorch model with "
    "torch.onnx.export(..., training=torch.onnx.TrainingMode.PRESERVE) to keep BN"
)
OTHER_BN_HINT = (
    "the Convs have no BatchNormalization ({producer} folded it into the weights): channels are ranked by "
    "filter norm (l1); an export that keeps BN gives the |gamma| ranking"
)


def refuse_nothing_to_prune(groups: list[ChannelGroup], plan: Plan, graph: gs.Graph, criterion: str) -> None:
    """Raises ``NothingToPruneError`` when no group of the model can be pruned (the plan's own declines,
    such as ``--exclude``, count). How to keep BN is said only where its absence is the blocker
    (``--criterion gamma``): without it, filter norms rank the groups."""
    named = [g for g in groups if g.nodes]
    if any(plan.prunable(g) for g in named):
        return
    if not named:
        raise NothingToPruneError(
            "nothing to prune: the model has no channel groups (no Conv, Gemm or MatMul)"
        )
    reasons = collections.Counter(plan.declines(g)[0].reason for g in named if plan.declines(g))
    shown = "; ".join(f"{n}x {reason}" for reason, n in reasons.most_common(3))
    more = f"; {len(reasons) - 3} other reasons (inspect --explain)" if len(reasons) > 3 else ""
    message = f"nothing to prune: {len(named)} groups, all declined ({shown}{more})"
    hint = bn_hint(graph)
    if hint and criterion == "gamma":
        message += f"; {hint}, or rank by filter norm with --criterion l1"
    raise NothingToPruneError(message)


def bn_hint(graph: gs.Graph) -> str:
    """How to get BN scores where the exporter folded BN ("" where the model has BN or no Conv): the
    PyTorch recipe for a PyTorch export (or an unnamed producer), not for tf2onnx or Paddle2ONNX."""
    if not folded_bn(graph):
        return ""
    producer = (getattr(graph, "producer_name", "") or "").strip()
    if producer in ("", "pytorch"):
        return TORCH_BN_HINT
    return OTHER_BN_HINT.format(producer=producer)


def folded_bn(graph: gs.Graph) -> bool:
    """Convs and not one normalisation: the exporter folded BN into the Conv weights."""
    ops = {node.op for node in graph.nodes}
    return bool(ops & {"Conv", "ConvTranspose"}) and not ops & {"BatchNormalization", "InstanceNormalization"}
