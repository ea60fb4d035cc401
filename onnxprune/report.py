"""Rich tables for what inspect and prune found; the JSON forms live with the API."""

from __future__ import annotations

from collections.abc import Collection, Iterable
from typing import Any

import numpy as np
from rich.table import Table

from onnxprune.channels.analysis import UNKNOWN_VALUE
from onnxprune.channels.group import ChannelGroup
from onnxprune.text import count, number
from onnxprune.train.fidelity import headline


def add_columns(table: Table, names: Iterable[str], numeric: Collection[str] = ()) -> None:
    """Text columns fold (node names are long); ``numeric`` ones are right-aligned and never wrap: at 80
    columns (CI logs, ``| cat``) a number split over two lines reads as two numbers, so text gives way."""
    for name in names:
        if name in numeric:
            table.add_column(name, justify="right", no_wrap=True)
        else:
            table.add_column(name, overflow="fold")


def counted_at(params: int, macs: int, shapes: dict[str, Any]) -> str:
    """One line: the counts and the input shapes they were counted at."""
    fed = ", ".join(f"{name} {'x'.join(str(d) for d in dims)}" for name, dims in shapes.items())
    return f"{count(params)} params, {count(macs)} MACs, counted at {fed}"


def _nodes(nodes: list[str], limit: int = 3) -> str:
    shown = ", ".join(nodes[:limit])
    return shown + (f" (+{len(nodes) - limit})" if len(nodes) > limit else "")


def group_summary(group: ChannelGroup, total_macs: int, macs: int) -> dict[str, Any]:
    """``macs``: of the layers whose widths the group sets (``Estimator.group_macs``, from the counter)."""
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
        "macs": macs,
        "macs_share": macs / total_macs if total_macs else 0.0,
        "prunable": group.prunable,
        # One line per distinct decline: several members of a group often meet the same blocker.
        "declines": [{"reason": d.reason, "node": d.node} for d in dict.fromkeys(group.declines)],
        # Channels that cannot go (a constant no consumer can fold), by reason: what --explain lists.
        "must_keep": must_keep_reasons(group),
        "tie": group.tie if group.tie >= 0 else None,
    }


def must_keep_reasons(group: ChannelGroup) -> list[dict[str, Any]]:
    """Why channels of the group must stay, with how many each reason holds. A consumer that meets a value
    an earlier op made vary is left out where that op's own reason covers its channels: one cause, one
    line."""
    why = group.must_keep_why
    origins = [mask for d, mask in why.items() if d.reason != UNKNOWN_VALUE]
    covered = np.logical_or.reduce(origins) if origins else np.zeros(group.size, bool)
    return [
        {"reason": d.reason, "node": d.node, "channels": int(mask.sum())}
        for d, mask in why.items()
        if d.reason != UNKNOWN_VALUE or (mask & ~covered).any()
    ]


def inspect_table(groups: list[dict[str, Any]], title: str) -> Table:
    table = Table(title=title, show_lines=False)
    add_columns(table, ("group", "nodes", "ch", "|gamma| min/med/max", "MACs", "status"),
                numeric=("group", "ch", "|gamma| min/med/max", "MACs"))  # fmt: skip
    for g in groups:
        gamma = g["gamma"]
        span = "-" if gamma["min"] is None else "/".join(number(gamma[k]) for k in ("min", "median", "max"))
        status = (
            f"[green]prunable[/] ({g['criterion']})"
            if g["prunable"]
            else f"[yellow]declined[/]: {g['declines'][0]['reason']}"
            + (f" at {g['declines'][0]['node']}" if g["declines"][0]["node"] else "")
        )
        table.add_row(str(g["id"]), _nodes(g["nodes"]), str(g["channels"]), span, _share(g), status)
    return table


def _share(group: dict[str, Any]) -> str:
    macs = group.get("macs")
    return f"{group['macs_share']:.1%}" if macs is None else f"{count(macs)} ({group['macs_share']:.1%})"


def prune_table(report: dict[str, Any], title: str) -> Table:
    table = Table(title=title)
    add_columns(table, ("", "before", "after", "change"), numeric=("before", "after", "change"))
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
    captions = [widths_caption(report.get("options", {}))]
    if report.get("counted_at"):
        captions.append("counted at " + ", ".join(
            f"{name} {'x'.join(str(d) for d in dims)}" for name, dims in report["counted_at"].items()
        ))  # fmt: skip
    table.caption = "\n".join(c for c in captions if c)
    return table


def widths_caption(options: dict[str, Any]) -> str:
    """Which multiple the widths were rounded to, and why where auto chose it."""
    step = options.get("width_step")
    if step is None or step == 1:
        return ""
    if options.get("width_reason"):
        return f"widths: multiples of {step} ({options['width_reason']})"
    return f"widths: multiples of {step}"


def groups_table(report: dict[str, Any], limit: int = 40) -> Table:
    table = Table(title="pruned groups")
    add_columns(table, ("group", "producers", "criterion", "before", "after"),
                numeric=("group", "before", "after"))  # fmt: skip
    changed = [g for g in report["groups"] if g["channels_after"] < g["channels_before"]]
    for g in changed[:limit]:
        producers = _nodes(g["producers"] or g["nodes"])
        table.add_row(
            str(g["id"]), producers, g["criterion"], str(g["channels_before"]), str(g["channels_after"])
        )
    if len(changed) > limit:
        table.add_row("…", f"{len(changed) - limit} more in the JSON report", "", "", "")
    return table


def target_line(target: dict[str, Any]) -> str:
    """Asked vs reached, one line."""
    ok = "within" if target["within_tolerance"] else "outside"
    return (
        f"target {target['kind']} {target['asked']:g} of the original: reached {target['reached']:.3f} "
        f"({ok} 2%; {target.get('basis') or 'ratio ' + format(target['ratio'], '.3f')}, "
        f"{target['steps']} search steps)"
    )


def bench_table(bench: dict[str, Any], title: str = "") -> Table:
    """Latency side by side, like trtexec's summary, with each model's ratio to the first."""
    rows = bench["models"]
    fed = ", ".join(f"{k} {'x'.join(map(str, v))}" for k, v in rows[0]["inputs"].items())
    threads = bench.get("threads") or "default"
    table = Table(
        title=title or f"latency on {rows[0]['backend']} ({bench['runs']} runs, threads {threads}, {fed})"
    )
    add_columns(table, ("model", "median ms", "p90 ms", "ratio"), numeric=("median ms", "p90 ms", "ratio"))
    base = rows[0]["median_ms"]
    for r in rows:
        table.add_row(
            r["name"], f"{r['median_ms']:.2f}", f"{r['p90_ms']:.2f}", f"{r['median_ms'] / base:.3f}"
        )
    return table


def sweep_table(result: dict[str, Any], name: str) -> Table:
    """One row per target: what it reached and what it cost."""
    fed = ", ".join(f"{k} {'x'.join(map(str, v))}" for k, v in result["inputs"].items())
    table = Table(title=f"{name}: sweep over {result['kind']} (counted at {fed})")
    columns = ("target", "compensate", "reached", "MACs", "params", "latency", "cosine", "top-1 agree",
               "accuracy", "s")  # fmt: skip
    add_columns(table, columns, numeric=[c for c in columns if c != "compensate"])
    for p in result["points"]:
        if "error" in p:
            row = (f"{p['target']:g}", p.get("compensate") or "", "[yellow]unreachable[/]", p["error"])
            table.add_row(*row, *[""] * 6)
            continue
        table.add_row(
            "original" if p["target"] == 1.0 and p["seconds"] == 0.0 else f"{p['target']:g}",
            p.get("compensate") or "-",
            f"{p['reached']:.3f}",
            count(p["macs"]),
            count(p["params"]),
            "-" if p["latency_ratio"] is None else f"{p['latency_ratio']:.3f}",
            "-" if p["cosine"] is None else f"{p['cosine']:.4f}",
            "-" if p["top1_agreement"] is None else f"{p['top1_agreement']:.1%}",
            "-" if p["accuracy"] is None else f"{p['accuracy']:.2%}",
            f"{p['seconds']:.1f}",
        )
    walks = {"none" if m == "none" else "bn" for m in result.get("compensate", ["bn"])}
    analysis = "one analysis" if len(walks) == 1 else "one analysis per walk (none, bn)"
    table.caption = f"{analysis} ({result['analysis_seconds']:.1f} s); latency: median ratio to the original"
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
    add_columns(table, ("layer", "op", "applied", "rel. MSE before", "after"),
                numeric=("rel. MSE before", "after"))  # fmt: skip
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


def compensation_table(section: dict[str, Any], limit: int = 12) -> Table:
    """Per consumer of removed channels: how their constants were folded, whether that is exact, and (with
    verification) the layer's output error without and with the folding. Past ``limit`` consumers, the
    ``limit`` with the largest error after folding (or largest estimate, unmeasured), in network order; the
    JSON report has all (a deep network has dozens: a screen of them says less than the worst)."""
    table = Table(title=f"compensation ({section['mode']})")
    # Two-line headers: a number column is as wide as its header's longest line.
    columns = ["consumer", "re-\nmoved", "carry-\ning", "folded as", "exact", "estimate\n|c| max"]
    measured = "error_on" in section
    columns += ["rel. MSE\nnone", "rel. MSE\nwith"] if measured else []
    add_columns(table, columns, numeric=columns[1:2] + columns[2:3] + columns[5:])
    layers = _worst_layers(section["layers"], limit, measured)
    for layer in layers:
        biggest = max((abs(v) for v in layer["estimate"]), default=0.0)
        errors = [_error(layer.get("rel_mse_before")), _error(layer.get("rel_mse_after"))] if measured else []
        table.add_row(
            layer["node"],
            str(layer["removed"]),
            str(layer["carrying"]),
            layer["applied"],
            {True: "yes", False: "[yellow]est.[/]", None: "-"}[layer["exact"]],
            f"{biggest:.3g}",
            *errors,
        )
    hidden = len(section["layers"]) - len(layers)
    if hidden:
        worst = "largest errors" if measured else "largest estimates"
        table.add_row("…", f"{hidden} more", "", f"(shown: the {len(layers)} {worst}; all in --report)")
    for approx in section["approximations"]:
        table.add_row(approx["node"], "", "", approx["why"], "[yellow]approx.[/]", "", *([""] * 2 * measured))
    if measured:
        table.caption = (
            f"rel. MSE: each layer's output against the original's, on {section['error_on']} "
            "(-: one row, no variance to compare with)"
        )
    elif "error_skipped" in section:
        table.caption = f"per-layer error not measured ({section['error_skipped']})"
    return table


def _worst_layers(layers: list[dict[str, Any]], limit: int, measured: bool) -> list[dict[str, Any]]:
    if len(layers) <= limit:
        return layers

    def badness(layer: dict[str, Any]) -> float:
        if measured:
            return layer.get("rel_mse_after") or 0.0
        return max((abs(v) for v in layer["estimate"]), default=0.0)

    chosen = set(sorted(range(len(layers)), key=lambda i: -badness(layers[i]))[:limit])
    return [layer for i, layer in enumerate(layers) if i in chosen]


def _error(value: float | None) -> str:
    return "-" if value is None else f"{value:.3g}"


def change_table(outputs: list[dict[str, Any]], title: str) -> Table:
    """Per output: how far a changed model is from the original (verify.OutputMetrics records)."""
    table = Table(title=title)
    add_columns(table, ("output", "max abs", "max rel", "cosine", "top-1 agree"),
                numeric=("max abs", "max rel", "cosine", "top-1 agree"))  # fmt: skip
    for o in outputs:
        top1 = "-" if o["top1_agreement"] is None else f"{o['top1_agreement']:.1%}"
        table.add_row(
            o["name"], number(o["max_abs_err"]), number(o["max_rel_err"]), number(o["cosine"], ".5f"), top1
        )
    return table


def history_table(history: list[dict[str, Any]], title: str) -> Table:
    """Per training epoch: loss, held-out fidelity, eval accuracy, share of small gammas, seconds
    (train.TrainResult.history)."""
    table = Table(title=title)
    held = any(r.get("holdout_loss") is not None for r in history)
    columns = ("epoch", "mean loss", *(("held-out loss", "held-out fidelity") if held else ()),
               "eval accuracy", "|gamma| < 1e-2", "seconds")  # fmt: skip
    add_columns(table, columns, numeric=columns)
    for r in history:
        accuracy = "-" if r["accuracy"] is None else f"{r['accuracy']:.2%}"
        loss = "-" if r["loss"] is None else f"{r['loss']:.4f}"
        fidelity = (f"{r['holdout_loss']:.4f}", headline(r["fidelity"])) if held else ()
        table.add_row(
            str(r["epoch"]), loss, *fidelity, accuracy, f"{r['gamma_small']:.1%}", f"{r['seconds']:.1f}"
        )
    return table


def sensitivity_table(result: dict[str, Any], name: str = "", limit: int = 40) -> Table:
    """One row per group: its channels, then each width measured, widest first (kept channels, damage and
    the worst output's fidelity); the most sensitive at half width first. Widths are columns by their rank,
    not their fraction: groups of odd sizes round the same fractions to different ones, and a column per
    distinct fraction made tables too wide to read."""
    cuts = max(
        (len([p for p in u["points"] if p["kept"] < u["channels"]]) for u in result["units"]), default=0
    )
    table = Table(title=f"{name}: sensitivity" if name else "sensitivity")
    columns = [f"cut {i + 1}" for i in range(cuts)]
    add_columns(table, ["group", "channels", *columns], numeric=["channels", *columns])
    units = sorted(result["units"], key=lambda u: -_half_damage(u))
    for unit in units[:limit]:
        points = sorted((p for p in unit["points"] if p["kept"] < unit["channels"]), key=lambda p: -p["kept"])
        cells = [_damage_cell(p) for p in points] + ["-"] * (cuts - len(points))
        table.add_row(unit["label"], str(unit["channels"]), *cells)
    more = f"; {len(units) - limit} more in --json" if len(units) > limit else ""
    table.caption = (
        f"kept -> damage (fidelity) on {result['on']}, {result['compensate']} compensation; "
        f"{result['evaluations']} evaluations in {result['seconds']:.0f} s{more}"
    )
    return table


def _half_damage(unit: dict[str, Any]) -> float:
    nearest = min(unit["points"], key=lambda p: abs(p["kept"] / unit["channels"] - 0.5))
    return float(nearest["damage"])


def _damage_cell(point: dict[str, Any]) -> str:
    fidelity = point.get("fidelity")
    cell = f"{point['kept']} -> {point['damage']:.3g}"
    return cell + (f" ({fidelity:.2f})" if fidelity is not None else "")
