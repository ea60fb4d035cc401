"""Plots for what people would rather look at than read. Matplotlib is the optional ``[plot]`` extra,
imported only here and only when a plot is asked for; without it, one line says what to install.

- ``plot_gammas``: the |gamma| (or filter-norm) histogram on a log axis with the threshold a ratio or
  target implies, and one strip of scores per prunable group;
- ``plot_kept``: channels before and after per pruned group, in network order;
- ``plot_sweep``: fidelity (cosine, top-1 agreement, accuracy) against the MACs reached, and the latency
  ratio against the MACs ratio (on the diagonal, latency falls as fast as MACs do).
Files are written atomically (PNG, or whatever suffix matplotlib knows).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from onnxprune.channels.group import ChannelGroup
from onnxprune.errors import CapabilityError, UsageError
from onnxprune.files import check_output_path, write_atomically
from onnxprune.options import PlanOptions
from onnxprune.search.targets import search

# Readable when printed or shown at 100%: matplotlib's smallest default text is 8 pt.
LABEL_POINTS = 8


def _pyplot() -> Any:
    try:
        import matplotlib

        matplotlib.use("Agg")  # files only: no display needed, none opened
        import matplotlib.pyplot as plt
    except ImportError:
        raise CapabilityError("plots need matplotlib: pip install 'onnxprune[plot]'") from None
    return plt


def check_plot_path(path: str | Path, inputs: list[Path]) -> Path:
    """Refuse, before any work, a plot that could not be written: matplotlib missing, a format it does not
    write, or a path ``check_output_path`` refuses."""
    path = check_output_path(path, inputs)
    _pyplot()
    from matplotlib.backend_bases import FigureCanvasBase

    kind = path.suffix.lstrip(".").lower() or "png"
    known = FigureCanvasBase.get_supported_filetypes()
    if kind not in known:
        raise UsageError(f"--plot {path}: matplotlib writes {', '.join(sorted(known))}, not {kind!r}")
    return path


def _save(figure: Any, path: str | Path) -> Path:

    path = Path(path)
    kind = path.suffix.lstrip(".") or "png"
    return write_atomically(
        path, lambda handle: figure.savefig(handle, format=kind, dpi=110, bbox_inches="tight")
    )


def implied_threshold(groups: list[ChannelGroup], ratio: float) -> float | None:
    """The score below which a global ``ratio`` removes channels (ranked together, as the plan does)."""
    scores = [np.asarray(g.score) for g in groups if g.prunable and g.score is not None]
    if not scores or ratio <= 0:
        return None
    pooled = np.sort(np.concatenate(scores))
    return float(pooled[min(int(ratio * len(pooled)), len(pooled) - 1)])


def plot_inspection(
    analysis: Any, estimator: Any, path: str | Path, *, ratio: float | None = None,
    threshold: float | None = None, target: Any = None, title: str = "",
) -> Path:  # fmt: skip
    """The score plot of an inspected model, with the threshold that ``ratio`` or ``target`` implies."""
    _pyplot()  # before any search: a missing extra is one line, at once
    if target is not None:
        target.check()
        ratio = search(analysis, PlanOptions(ratio=0.0), target.kind, target.value, estimator.fractions)[
            0
        ].ratio
        title = title or f"threshold for {target.kind} {target.value:g} (global ratio {ratio:.3f})"
    elif ratio is not None:
        title = title or f"threshold of --ratio {ratio:g}"
    if threshold is None and ratio is not None:
        threshold = implied_threshold(analysis.groups, ratio)
    return plot_gammas(analysis.groups, path, threshold, title or "channel scores")


def plot_gammas(groups: list[ChannelGroup], path: str | Path, threshold: float | None, title: str) -> Path:
    plt = _pyplot()
    scored = [g for g in groups if g.prunable and g.score is not None]
    if not scored:
        raise CapabilityError("nothing to plot: no prunable group has scores")
    figure, (hist, strips) = plt.subplots(2, 1, figsize=(9, 3 + 0.16 * len(scored)),
                                          gridspec_kw={"height_ratios": [1, 2]})  # fmt: skip
    values = np.concatenate([np.asarray(g.score, dtype=float) for g in scored])
    floor = values[values > 0].min() / 2 if (values > 0).any() else 1e-6
    shown = np.maximum(values, floor)  # zeros (dead channels) drawn at the left edge of the log axis
    bins = np.geomspace(shown.min(), max(shown.max(), shown.min() * 1.01), 60)
    hist.hist(shown, bins=bins, color="tab:blue")
    hist.set_xscale("log")
    hist.set_ylabel("channels")
    hist.set_title(title)
    for i, group in enumerate(scored):
        score = np.maximum(np.asarray(group.score, dtype=float), floor)
        strips.scatter(score, np.full(len(score), i), s=4, marker="|", color="tab:gray")
    strips.set_xscale("log")
    strips.set_yticks(range(len(scored)), [_label(g) for g in scored], fontsize=LABEL_POINTS)
    strips.invert_yaxis()
    strips.set_xlabel(f"{scored[0].criterion} score (zeros at the left edge)")
    for axis in (hist, strips):
        if threshold is not None:
            axis.axvline(max(threshold, floor), color="tab:red", linestyle="--", label="threshold")
    if threshold is not None:
        hist.legend(loc="upper right")
    return _save(figure, path)


def _label(group: ChannelGroup) -> str:
    return _short((group.producers or group.nodes or [f"group {group.id}"])[0])


def plot_kept(report: dict[str, Any], path: str | Path, name: str = "") -> Path:
    """Bars of channels before (light) and after (dark) for every prunable group, in network order;
    ``name`` (the model, or "original → pruned") heads the title."""
    plt = _pyplot()
    groups = report["groups"]
    if not groups:
        raise CapabilityError("nothing to plot: the report has no pruned groups")
    x = np.arange(len(groups))
    # Wide enough for one rotated label per bar at LABEL_POINTS; constrained layout keeps them inside.
    figure, axis = plt.subplots(figsize=(max(6.0, 0.22 * len(groups)), 4.5), layout="constrained")
    axis.bar(x, [g["channels_before"] for g in groups], color="tab:blue", alpha=0.3, label="before")
    axis.bar(x, [g["channels_after"] for g in groups], color="tab:blue", label="after")
    labels = [_short((g["producers"] or g["nodes"])[0]) for g in groups]
    axis.set_xticks(x, labels, rotation=90, fontsize=LABEL_POINTS)
    axis.set_xlim(-0.6, len(groups) - 0.4)
    axis.set_ylabel("channels")
    macs = report["macs"]
    title = f"kept channels per group, MACs {macs['after'] / max(macs['before'], 1):.0%} of the original"
    axis.set_title(f"{name}\n{title}" if name else title)
    axis.legend()
    return _save(figure, path)


def _short(name: str, width: int = 32) -> str:
    """A node name of at most ``width`` characters: its end, which tells layers apart, behind an ellipsis."""
    return name if len(name) <= width else "…" + name[-(width - 1) :]


def plot_sweep(result: dict[str, Any], path: str | Path, name: str = "") -> Path:
    """Fidelity and latency against the MACs reached: one line per compensation mode, each starting at the
    original; cosine solid, top-1 agreement dotted, accuracy dashed. ``name`` (the model) heads it."""
    plt = _pyplot()
    original, *rest = [p for p in result["points"] if "error" not in p]
    base = original["macs"]
    figure, (fidelity, speed) = plt.subplots(1, 2, figsize=(11, 4.5), layout="constrained")
    figure.suptitle(f"{name}: sweep over {result['kind']}" if name else f"sweep over {result['kind']}")
    styles = (
        ("cosine", "cosine", "-"),
        ("top1_agreement", "top-1 agreement", ":"),
        ("accuracy", "accuracy (labels)", "--"),
    )
    modes = result.get("compensate") or [None]
    for index, mode in enumerate(modes):
        points = [original] + [p for p in rest if p.get("compensate") == mode]
        macs = np.array([p["macs"] / base for p in points])
        color, prefix = f"C{index}", f"{mode}: " if mode is not None else ""
        for key, label, style in styles:
            ys = [p.get(key) for p in points]
            if all(y is not None for y in ys):
                fidelity.plot(macs, ys, marker="o", color=color, linestyle=style, label=prefix + label)
        latency = [p.get("latency_ratio") for p in points]
        if all(v is not None for v in latency):
            speed.plot(macs, latency, marker="o", color=color, label=f"{prefix}ONNX Runtime latency")
    fidelity.set_xlabel("MACs (fraction of the original)")
    labelled = any(p.get("accuracy") is not None for p in result["points"])
    fidelity.set_ylabel("fidelity to the original" + ("; accuracy on the labels" if labelled else ""))
    fidelity.invert_xaxis()
    # Below the axes: with a line per mode and metric, a legend inside would cover the points.
    fidelity.legend(fontsize="small", loc="upper center", bbox_to_anchor=(0.5, -0.15), ncol=len(modes))
    speed.plot([0, 1], [0, 1], color="gray", linestyle=":", label="latency = MACs")
    speed.set_xlabel("MACs (fraction of the original)")
    speed.set_ylabel("latency (fraction of the original)")
    speed.invert_xaxis()
    speed.legend()
    return _save(figure, path)


def plot_sensitivity(result: dict[str, Any], path: str | Path, name: str = "") -> Path:
    """Damage against the fraction of channels kept, one line per group (the curves a target prune
    allocates by); the ten most sensitive at half width are named."""
    plt = _pyplot()
    figure, axes = plt.subplots(figsize=(8, 5), layout="constrained")
    figure.suptitle(f"{name}: sensitivity" if name else "sensitivity")
    units = result["units"]
    ranked = sorted(units, key=lambda u: -_damage_near_half(u))
    named = {id(u) for u in ranked[:10]}
    for unit in units:
        kept = [p["kept"] / unit["channels"] for p in unit["points"]]
        damage = [p["damage"] for p in unit["points"]]
        shown = id(unit) in named
        axes.plot(kept, damage, marker="o" if shown else None, alpha=1.0 if shown else 0.3,
                  label=_short(unit["label"], 28) if shown else None)  # fmt: skip
    axes.set_xlabel("channels kept (fraction of the group)")
    axes.set_ylabel(f"damage on {result['on']}" if len(result["on"]) < 50 else "damage")
    axes.invert_xaxis()
    axes.legend(fontsize=8, loc="upper left")
    return _save(figure, path)


def _damage_near_half(unit: dict[str, Any]) -> float:
    points = unit["points"]
    nearest = min(points, key=lambda p: abs(p["kept"] / unit["channels"] - 0.5))
    return float(nearest["damage"])
