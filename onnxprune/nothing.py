"""Nothing to prune: a model whose every channel group is declined is refused with the reasons, instead of
an empty table and a copy of the input; where the Convs have no BatchNormalization because the exporter
folded it, how to export with BN kept."""

from __future__ import annotations

import collections

import onnx_graphsurgeon as gs

from onnxprune.channels import ChannelGroup, Plan
from onnxprune.errors import NothingToPruneError

BN_HINT = (
    "the Convs have no BatchNormalization (folded by the exporter?): export the eval-mode PyTorch model with "
    "torch.onnx.export(..., training=torch.onnx.TrainingMode.PRESERVE) to keep BN"
)


def refuse_nothing_to_prune(groups: list[ChannelGroup], plan: Plan, graph: gs.Graph, criterion: str) -> None:
    """Raises ``NothingToPruneError`` when no group of the model can be pruned (the plan's own declines,
    such as ``--exclude``, count)."""
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
    if folded_bn(graph):
        message += f"; {BN_HINT}"
        if criterion == "gamma":
            message += ", or rank by filter norm with --criterion l1"
    raise NothingToPruneError(message)


def folded_bn(graph: gs.Graph) -> bool:
    """Convs and not one normalisation: the exporter folded BN into the Conv weights."""
    ops = {node.op for node in graph.nodes}
    return bool(ops & {"Conv", "ConvTranspose"}) and not ops & {"BatchNormalization", "InstanceNormalization"}
