"""The JSON report of a prune: options, counts before and after, the plan (kept indices per group, what
``--replay`` reads back) and every declined group with its reasons."""

from __future__ import annotations

from typing import Any

from onnxprune.channels import ChannelGroup, Plan
from onnxprune.measure.counter import Counts
from onnxprune.options import PlanOptions


def build_report(
    before: Counts, after: Counts, groups: list[ChannelGroup], plan: Plan, options: PlanOptions
) -> dict[str, Any]:
    """Params and MACs before and after are counted the same way, at the same shapes."""
    return {
        "options": options.to_dict(),
        "params": {"before": before.params, "after": after.params},
        "macs": {"before": before.macs, "after": after.macs},
        "counted_at": {name: list(dims) for name, dims in before.inputs.items()},
        "uncounted_nodes": sorted(set(before.unknown) | set(after.unknown)),
        "groups": plan.records(groups),
        "declined": [_declined(g, plan) for g in groups if not plan.prunable(g) and g.nodes],
    }


def _declined(group: ChannelGroup, plan: Plan) -> dict[str, Any]:
    declines = plan.declines(group)
    return {
        "group": group.id,
        "nodes": group.nodes,
        "channels": group.size,
        "reason": declines[0].reason,
        "node": declines[0].node,
        "all_reasons": sorted({str(d) for d in declines}),
    }
