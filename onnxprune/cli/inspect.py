"""``onnxprune inspect``: every channel group with its scores, share of MACs and why it declines; or, with
``--sparsity``, every layer's 2:4 eligibility."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from onnxprune import api
from onnxprune.cli.shared import ModelArg, choices, console, one_target, user_errors, warn
from onnxprune.errors import UsageError
from onnxprune.files import read_model
from onnxprune.inputs import parse_shapes
from onnxprune.options import ON_DATA, Compensate, Criterion
from onnxprune.planning.align import impossible
from onnxprune.plots import check_plot_path, plot_inspection
from onnxprune.report import counted_at, group_summary, inspect_table
from onnxprune.sparsity import SparsifyOptions, survey
from onnxprune.sparsity.layers import MIN_CHANNELS
from onnxprune.sparsity.tables import survey_table

# activation and rebuild rank on calibration data, which only prune takes.
RANKED_WITHOUT_DATA = tuple(str(c.value) for c in Criterion if c not in ON_DATA)


@user_errors
def inspect(
    model: ModelArg,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON only.")] = False,
    explain: Annotated[bool, typer.Option("--explain", help="List every decline with its node.")] = False,
    criterion: Annotated[
        str,
        choices(
            Criterion,
            "How channels are ranked (by activation: prune --calib --criterion activation).",
            RANKED_WITHOUT_DATA,
        ),
    ] = Criterion.AUTO,
    compensate: Annotated[
        str,
        choices(
            Compensate,
            "The prune --compensate mode whose must-keep channels --explain lists (calib: as bn).",
            tuple(str(c.value) for c in Compensate if c != Compensate.AUTO),
        ),
    ] = Compensate.BN,
    shape: Annotated[list[str] | None, typer.Option(help="NAME:1x3x224x224: count at this shape.")] = None,
    plot: Annotated[
        Path | None, typer.Option(help="Draw the score histogram and strips into this PNG.")
    ] = None,
    ratio: Annotated[float | None, typer.Option(help="With --plot: the threshold of this ratio.")] = None,
    target_macs: Annotated[
        float | None, typer.Option(help="With --plot: the threshold of this target.")
    ] = None,
    target_params: Annotated[
        float | None, typer.Option(help="With --plot: the threshold of this target.")
    ] = None,
    sparsity: Annotated[
        bool, typer.Option("--sparsity", help="List each layer for 2:4: already 2:4, eligible or why not.")
    ] = False,
    min_channels: Annotated[
        int, typer.Option(help="With --sparsity: the size floor (C*R*S and K).")
    ] = MIN_CHANNELS,
) -> None:
    """Show every channel group: its nodes, |gamma| spread, share of MACs, and prunable or why not."""
    if sparsity:
        _inspect_sparsity(model, min_channels, parse_shapes(shape or []), as_json)
        return
    target = one_target(target_macs, target_params, None)
    if (ratio is not None or target is not None) and plot is None:
        raise UsageError("inspect takes --ratio and --target-* only to draw their threshold with --plot")
    if ratio is not None and target is not None:
        raise UsageError("give --ratio or a --target-*, not both")
    if ratio is not None and not 0.0 <= ratio < 1.0:
        raise UsageError(f"--ratio must be in [0, 1), got {ratio}")
    if plot is not None:
        check_plot_path(plot, [model])
    found = api.inspect(model, criterion, compensate, shapes=parse_shapes(shape or []))
    if plot is not None:
        plot_inspection(found.analysis, found.estimator, plot, ratio=ratio, target=target)
    groups = [group_summary(g, found.macs, found.group_macs.get(g.id, 0)) for g in found.groups if g.nodes]
    if as_json:
        payload = {
            "model": str(model),
            "params": found.params,
            "macs": found.macs,
            "counted_at": {name: list(dims) for name, dims in found.counted_at.items()},
            "conv_bn_pairs": found.pairs,
            "hints": found.hints,
            "groups": groups,
            "warnings": found.warnings,
        }
        print(json.dumps(payload, indent=2))
        warn(found.warnings)  # on stderr, as prune --json says them
        return
    _print_inspection(model, found, groups, explain)


def _print_inspection(model: Path, found: api.Inspection, groups: list[dict], explain: bool) -> None:
    shown = groups if explain else [g for g in groups if g["prunable"]]
    title = f"{model.name}: {sum(g['prunable'] for g in groups)} prunable of {len(groups)} channel groups"
    console.print(inspect_table(shown, title))
    console.print(counted_at(found.params, found.macs, found.counted_at), highlight=False)
    for hint in found.hints:
        console.print(f"note: {hint}", highlight=False, markup=False, soft_wrap=True)
    convs = sum(p["producer_op"] == "Conv" for p in found.pairs)
    others = len(found.pairs) - convs
    console.print(f"{convs} Conv→BatchNormalization pairs, {others} BatchNormalizations after other ops")
    warn(found.warnings)
    if explain:
        _print_declines(found, groups)
    else:
        hidden = len(groups) - len(shown)
        console.print(f"{hidden} declined groups hidden; --explain lists them with reasons.")


def _print_declines(found: api.Inspection, groups: list[dict]) -> None:
    for p in found.pairs:
        console.print(f"  {p['producer']} ({p['producer_op']}) → {p['bn']}", highlight=False, markup=False)
    for w in impossible(found.analysis, 8):
        why = f"cannot be a multiple of 8 ({w['fixed']} fixed channels)"
        line = f"  {w['node']}: width of {w['tensor']} {why}"
        console.print(line, soft_wrap=True, highlight=False, markup=False)
    console.print("declines, one line each (group: reason at node):")
    for g in groups:
        for d in g["declines"]:
            at = f" at {d['node']}" if d["node"] else ""
            line = f"  group {g['id']}: {d['reason']}{at}"
            console.print(line, soft_wrap=True, highlight=False, markup=False)
    kept = [(g, k) for g in groups if g["prunable"] for k in g["must_keep"]]
    if kept:
        console.print(
            f"channels that must stay with --compensate {found.compensate} (group: count: reason at node):"
        )
    for g, k in kept:
        line = f"  group {g['id']}: {k['channels']} of {g['channels']}: {k['reason']} at {k['node']}"
        console.print(line, soft_wrap=True, highlight=False, markup=False)


def _inspect_sparsity(model: Path, min_channels: int, shapes: dict, as_json: bool) -> None:
    layers, total = survey(read_model(model), SparsifyOptions(min_channels=min_channels, shapes=shapes))
    rows = [layer.to_dict(total) for layer in layers]
    if as_json:
        print(json.dumps({"model": str(model), "macs": total, "sparsity": rows}, indent=2))
        return
    eligible = [row for row in rows if row["eligible"]]
    share = sum(row["macs_share"] for row in eligible)
    title = f"{model.name}: {len(eligible)} of {len(rows)} layers eligible for 2:4 ({share:.1%} of MACs)"
    console.print(survey_table(rows, title))
    console.print(f"{sum(row['already_24'] for row in rows)} layers already 2:4")
