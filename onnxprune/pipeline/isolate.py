"""Isolate: when the rewritten model fails validation or its run, find the groups responsible and decline
them, so that one bad group never aborts a prune.

The planned groups are taken in id order; the shortest failing prefix is found by bisection (the model
with no group pruned is the original and passes), and its last group is the culprit: pruning it on top of
the groups before it breaks the model, whether alone or in combination. It is declined with the error and
the node it names, and the search repeats on the rest until the model passes. Each trial rewrites a fresh
copy of the prepared graph: about log2(groups) trials per culprit, only when something failed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import onnx

from onnxprune.channels import ChannelGroup, Decline, Plan
from onnxprune.errors import ValidationError, first_line
from onnxprune.runtime import PendingCheck


@dataclass
class Trial:
    """A rewrite of the input by ``plan``; ``error`` is None when it passed."""

    plan: Plan
    pruned: onnx.ModelProto | None
    error: ValidationError | None
    serialized: bytes | None = None  # ``pruned`` as ONNX Runtime was given it: saved as is, not again
    pending: PendingCheck | None = None  # its ONNX Runtime check, still running (see api.prune)


def decline_breaking_groups(
    groups: list[ChannelGroup], plan: Plan, attempt: Callable[[Plan], Trial]
) -> Trial:
    """Prunes every group ``plan`` cuts that does not break the model; declines the others.

    ``attempt(plan)`` rewrites the input by a plan. The returned trial passed; its plan carries the new
    declines.
    """
    cuts = plan.cuts(groups)
    order = sorted(cuts)
    by_id = {g.id: g for g in groups}
    declines: dict[int, list[Decline]] = {}

    def only(ids: list[int]) -> Plan:
        """The plan with only the groups ``ids`` cut: the other groups it cuts keep everything."""
        chosen = set(ids)
        kept = {
            gid: keep if gid not in cuts or gid in chosen else np.arange(by_id[gid].size)
            for gid, keep in plan.kept.items()
        }
        return plan.with_kept(kept).with_declines(declines)

    trial = attempt(only(order))
    while trial.error is not None:
        if not order:  # nothing pruned and it still fails: not a group's doing
            raise ValidationError(
                f"the model fails the checks after onnxprune's normalisation, with nothing pruned: "
                f"{first_line(trial.error)}"
            ) from trial.error
        culprit, error = _first_breaking(order, only, attempt, trial.error)
        declines[culprit] = [_decline(by_id[culprit], error)]
        order.remove(culprit)
        trial = attempt(only(order))
    return trial


def _first_breaking(
    order: list[int],
    only: Callable[[list[int]], Plan],
    attempt: Callable[[Plan], Trial],
    error: ValidationError,
) -> tuple[int, ValidationError]:
    """The last group of the shortest failing prefix of ``order`` (the whole of it fails with ``error``)."""
    lo, hi = 0, len(order)  # the prefix of length lo passes (none pruned), of length hi fails
    while hi - lo > 1:
        mid = (lo + hi) // 2
        found = attempt(only(order[:mid])).error
        if found is None:
            lo = mid
        else:
            hi, error = mid, found
    return order[hi - 1], error


def _decline(group: ChannelGroup, error: ValidationError) -> Decline:
    message = first_line(error)
    node = next((n for n in group.nodes if n and n in message), None)
    node = node or (group.producers[0] if group.producers else group.nodes[0] if group.nodes else "")
    return Decline(f"pruning it breaks the rewritten model: {message}", node)
