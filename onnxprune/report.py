"""Rich tables for what inspect and prune found; the JSON forms live with the API."""

from __future__ import annotations

from typing import Any

import numpy as np
from rich.table import Table

from onnxprune.channels.group import ChannelGroup
from onnxprune.text import count, number


def _nodes(nodes: list[str], limit: int = 3) -> str:
    shown = ", ".join(nodes[:limit])
    return shown + (f" (+{len(nodes) - limit})" if len(nodes) > limit else "")


def group_summary(group: ChannelGroup, total_macs: int) -> dict[str, Any]:
    score = group.score
    stats: dict[str, Any] = {"min": None, "median": None, "max": None}
    if group.gamma is not None and not np.isnan(group.gamma).all():
        gamma = group.gamma[~np.isnan(group.gamma)]
        stats = {"min": float(gamma.min()), "median": float(np.median(gamma)), "max": float(gamma.max())}
    return {
        "id": group.id,
        "nodes": group.nodes,
        "producers": group.producers,
        "channels": group.size,
        "criterion": group.criterion if score is not None else None,
        "gamma": stats,
        "macs_share": group.macs / total_macs if total_macs else 0.0,
        "prunable": group.prunable,
        # One line per distinct decline: several members of a group often meet the same blocker.
        "declines": [{"reason": d.reason, "node": d.node} for d in dict.fromkeys(group.declines)],
        "tie": group.tie if group.tie >= 0 else None,
    }


def inspect_table(groups: list[dict[str, Any]], title: str) -> Table:
    table = Table(title=title, show_lines=False)
    for column in ("group", "nodes", "ch", "|gamma| min/med/max", "MACs", "status"):
        table.add_column(column, overflow="fold")
    for g in groups:
        gamma = g["gamma"]
        span = "-" if gamma["min"] is None else "/".join(number(gamma[k]) for k in ("min", "median", "max"))
        status = (
            f"[green]prunable[/] ({g['criterion']})"
            if g["prunable"]
            else f"[yellow]declined[/]: {g['declines'][0]['reason']}"
            + (f" at {g['declines'][0]['node']}" if g["declines"][0]["node"] else "")
        )
        table.add_row(
            str(g["id"]), _nodes(g["nodes"]), str(g["channels"]), span, f"{g['macs_share']:.1%}", status
        )
    return table


def prune_table(report: dict[str, Any], title: str) -> Table:
    table = Table(title=title)
    table.add_column("")
    table.add_column("before", justify="right")
    table.add_column("after", justify="right")
    table.add_column("change", justify="right")
    for key in ("params", "macs"):
        before, after = report[key]["before"], report[key]["after"]
        change = f"{(after - before) / before:+.1%}" if before else "-"
        table.add_row(key, count(before), count(after), change)
    groups = report["groups"]
    ch_before = sum(g["channels_before"] for g in groups)
    ch_after = sum(g["channels_after"] for g in groups)
    change = f"{(ch_after - ch_before) / ch_before:+.1%}" if ch_before else "-"
    table.add_row("channels in pruned groups", str(ch_before), str(ch_after), change)
    pruned = sum(g["channels_after"] < g["channels_before"] for g in groups)
    table.add_row("groups pruned / declined", str(pruned), str(len(report["declined"])), "")
    return table


def groups_table(report: dict[str, Any], limit: int = 40) -> Table:
    table = Table(title="pruned groups")
    for column in ("group", "producers", "criterion", "before", "after"):
        table.add_column(column, overflow="fold")
    changed = [g for g in report["groups"] if g["channels_after"] < g["channels_before"]]
    for g in changed[:limit]:
        producers = _nodes(g["producers"] or g["nodes"])
        table.add_row(
            str(g["id"]), producers, g["criterion"], str(g["channels_before"]), str(g["channels_after"])
        )
    if len(changed) > limit:
        table.add_row("…", f"{len(changed) - limit} more in the JSON report", "", "", "")
    return table
