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


def calibration_table(calibration: dict[str, Any]) -> Table:
    """Per refitted layer: relative MSE before/after on the fit data; the held-out fidelity in the title."""
    held = calibration["samples"]["held_out"]
    parts = []
    for name, after in calibration["fidelity"]["after"].items():
        before = calibration["fidelity"]["before"][name]
        text = f"{name}: cosine {before['cosine']:.4f} → {after['cosine']:.4f}"
        if "top1_agreement" in after:
            text += f", top-1 agreement {before['top1_agreement']:.3f} → {after['top1_agreement']:.3f}"
        parts.append(text)
    title = (
        f"calibration ({', '.join(calibration['steps'])}; {calibration['samples']['fit']} samples fitted, "
        f"{calibration['seconds']:.1f} s); on {held} held-out samples: " + "; ".join(parts)
    )
    table = Table(title=title, show_lines=False)
    for column in ("layer", "op", "applied", "rel. MSE before", "after"):
        table.add_column(column, overflow="fold")
    for layer in calibration["layers"]:
        applied = layer["applied"] + (f" ({layer['refit_declined']})" if "refit_declined" in layer else "")
        table.add_row(
            layer["node"],
            layer["op"],
            applied,
            *(
                f"{v:.4g}" if v is not None else "-"
                for v in (layer.get("rel_mse_before"), layer.get("rel_mse_after"))
            ),
        )
    bn = calibration.get("bn")
    if bn is not None:
        detail = bn.get("declined") or f"{bn['count']} re-estimated"
        table.caption = f"BatchNormalization statistics: {detail}"
    return table


def compensation_table(section: dict[str, Any]) -> Table:
    """Per consumer of removed channels: how their constants were folded and whether that is exact."""
    table = Table(title=f"compensation ({section['mode']})")
    for column in ("consumer", "removed", "carrying", "folded as", "exact", "estimate |c| max"):
        table.add_column(column, overflow="fold")
    for layer in section["layers"]:
        biggest = max((abs(v) for v in layer["estimate"]), default=0.0)
        table.add_row(
            layer["node"],
            str(layer["removed"]),
            str(layer["carrying"]),
            layer["applied"],
            {True: "yes", False: "[yellow]estimate[/]", None: "-"}[layer["exact"]],
            f"{biggest:.3g}",
        )
    for approx in section["approximations"]:
        table.add_row(approx["node"], "", "", approx["why"], "[yellow]approx.[/]", "")
    return table
