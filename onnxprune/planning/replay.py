"""Replay: the kept indices of an earlier report (``prune --report``) applied to the same model again."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from onnxprune.channels.group import ChannelGroup, Decline
from onnxprune.channels.plan import Plan
from onnxprune.errors import UsageError, first_line


def replay_plan(
    groups: list[ChannelGroup], saved: Mapping[str, Any], declined: Mapping[int, list[Decline]] | None = None
) -> Plan:
    """Apply the kept indices of an earlier report (``prune --report``) to the same model, group by group.

    Groups are matched by their member node names, so a plan made on one export replays on another export
    of the same network with the same node names. Anything that does not match is a UsageError.
    """
    by_nodes = {tuple(g.nodes): g for g in groups}
    kept: dict[int, np.ndarray] = {}
    declined = declined or {}
    for record in saved.get("groups", []):
        found = by_nodes.get(tuple(sorted(record.get("nodes", []))))
        where = ", ".join(record.get("producers") or record.get("nodes", [])[:2])
        if found is None:
            raise UsageError(
                f"the saved plan does not fit this model: it prunes the group of {where}, "
                "which this model does not have (groups are matched by their node names)"
            )
        group = found
        keep = np.asarray(record.get("kept", []), dtype=np.int64)
        if group.size != record.get("channels_before"):
            raise UsageError(
                f"the saved plan does not fit this model: the group of {where} has "
                f"{record.get('channels_before')} channels in the plan, {group.size} in this model"
            )
        if not _valid_indices(keep, group.size):
            raise UsageError(
                f"the saved plan does not fit this model: the group of {where} keeps {len(keep)} indices, "
                f"expected sorted distinct indices below {group.size}"
            )
        if not group.prunable:
            raise UsageError(f"the saved plan prunes a group this model declines: {group.declines[0]}")
        if group.id in declined:
            raise UsageError(f"the saved plan prunes a group this prune declines: {declined[group.id][0]}")
        kept[group.id] = keep
    return Plan(kept, {gid: tuple(d) for gid, d in declined.items()})


def _valid_indices(keep: np.ndarray, size: int) -> bool:
    return bool(keep.size) and bool(np.all(np.diff(keep) > 0)) and keep[0] >= 0 and keep[-1] < size


def load_plan(path: str | Path) -> dict[str, Any]:
    """Read a report written by ``prune --report`` (its ``groups`` hold the kept indices)."""
    try:
        saved = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise UsageError(f"{path}: cannot read a saved plan ({first_line(exc)})") from None
    if not isinstance(saved, dict) or not isinstance(saved.get("groups"), list):
        raise UsageError(f"{path}: not an onnxprune report (no 'groups' list)")
    return saved
