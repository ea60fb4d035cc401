"""Isolate: when the rewritten model fails validation or its run, find the groups responsible and decline
them, so that one bad group never aborts a prune.

The planned groups are taken in id order; the shortest failing prefix is found by bisection (the model
with no group pruned is the original and passes), and its last group is the culprit: pruning it on top of
the groups before it breaks the model, whether alone or in combination. It is declined with the error and
the node it names, and the search repeats on the rest until the model passes. Each trial rewrites a fresh
normalised copy of the input: about log2(groups) trials per culprit, only when something failed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import onnx

from onnxprune.channels import Analysis, ChannelGroup, Decline
from onnxprune.errors import ValidationError, first_line
from onnxprune.runtime import PendingCheck


@dataclass
class Trial:
    """A rewrite of the input with only some groups pruned; ``error`` is None when it passed."""

    analysis: Analysis
    pruned: onnx.ModelProto | None
    error: ValidationError | None
    serialized: bytes | None = None  # ``pruned`` as ONNX Runtime was given it: saved as is, not again
    pending: PendingCheck | None = None  # its ONNX Runtime check, still running (see api.prune)


def decline_breaking_groups(
    groups: list[ChannelGroup], attempt: Callable[[dict[int, np.ndarray]], Trial]
) -> Trial:
    """Prunes every planned group of ``groups`` that does not break the model; declines the others.

    ``attempt(plan)`` rewrites the input pruning exactly the groups in ``plan`` (id -> kept indices). The
    returned trial passed; its analysis carries the plan and the new declines.
    """
    plan = {g.id: g.keep for g in groups if g.keep is not None and len(g.keep) < g.size}
    order = sorted(plan)
    declines: dict[int, Decline] = {}
    trial = attempt(plan)
    while trial.error is not None:
        if not order:  # nothing pruned and it still fails: not a group's doing
            raise ValidationError(
                f"the model fails the checks after onnxprune's normalisation, with nothing pruned: "
                f"{first_line(trial.error)}"
            ) from trial.error
        culprit, error = _first_breaking(order, plan, attempt, trial.error)
        declines[culprit] = _decline(next(g for g in groups if g.id == culprit), error)
        order.remove(culprit)
        trial = attempt({gid: plan[gid] for gid in order})
    for group in trial.analysis.groups:
        if group.id in declines:
            group.declines.append(declines[group.id])
    return trial


def _first_breaking(
    order: list[int],
    plan: dict[int, np.ndarray],
    attempt: Callable[[dict[int, np.ndarray]], Trial],
    error: ValidationError,
) -> tuple[int, ValidationError]:
    """The last group of the shortest failing prefix of ``order`` (the whole of it fails with ``error``)."""
    lo, hi = 0, len(order)  # the prefix of length lo passes (none pruned), of length hi fails
    while hi - lo > 1:
        mid = (lo + hi) // 2
        found = attempt({gid: plan[gid] for gid in order[:mid]}).error
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
