"""What a default ``prune`` prints: a short summary (what was asked and reached; params, MACs and latency
where measured; compensation and calibration in a line each; the verification). The full tables are
``-v/--verbose``'s and the JSON report's."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.markup import escape

from onnxprune.cli.printing import print_sparsity_line, print_verification
from onnxprune.cli.shared import console
from onnxprune.report import target_line, widths_caption
from onnxprune.text import count
from onnxprune.train.fidelity import headline


def print_summary(report: dict[str, Any], title: str, output: Path) -> None:
    console.print(f"[bold]{escape(title)}[/] ({escape(asked(report))})", highlight=False)
    for line in _sizes(report):
        console.print(line, highlight=False, markup=False)
    if "target" in report:
        console.print(target_line(report["target"]), highlight=False)
    if "allocation" in report:
        console.print(allocation_line(report["allocation"]), highlight=False, markup=False)
    if report.get("unaligned"):
        console.print(
            f"{len(report['unaligned'])} widths a consumer sees are not multiples of "
            f"{report['options']['aligned_to']} (listed in --report: 'unaligned')",
            highlight=False,
        )
    if report.get("compensation", {}).get("layers"):
        console.print(compensation_line(report["compensation"]), highlight=False, markup=False)
    if "calibration" in report:
        console.print(calibration_line(report["calibration"]), highlight=False, markup=False)
    if "finetune" in report:
        console.print(finetune_line(report["finetune"]), highlight=False, markup=False)
    if "verify" in report:
        print_verification(report["verify"])
    if "verdict" in report:
        console.print(verdict_line(report["verdict"]), highlight=False)
    elif "verify" in report:
        console.print(
            "[yellow]verdict: none[/]: random data says nothing about the task; pass --calib DATA (its "
            "held-out part judges) or --inputs FILE",
            highlight=False,
        )
    if "score" in report:
        score = report["score"]
        console.print(f"--eval-cmd score: {score['original']:g} → {score['pruned']:g}", highlight=False)
    if "sparsity" in report:
        print_sparsity_line(report["sparsity"], output)
    console.print("every table: -v/--verbose, or all of it as JSON with --report FILE", style="dim")


def allocation_line(allocation: dict[str, Any]) -> str:
    """How a target's budget was shared: the method and why, and for a measured one what it cut."""
    line = f"allocation: {allocation['method']} ({allocation['why']})"
    if allocation["method"] != "sensitivity":
        return line
    units = allocation["units"]
    cut = sum(u["kept"] < u["channels"] for u in units)
    line += (
        f"; {cut} of {len(units)} groups cut, {len(allocation['kept_whole'])} kept whole; measured on "
        f"{allocation['sensitivity']['on']} in {allocation['sensitivity']['seconds']:.0f} s"
    )
    return line


def verdict_line(verdict: dict[str, Any]) -> str:
    """The headline: how much of the original's behaviour the result keeps on the user's data."""
    worst = verdict["outputs"][verdict["worst_output"]]
    measure = "agreement above chance" if worst["kind"] in ("classes", "sequence") else "cosine"
    what = f"fidelity {verdict['fidelity']:.3f} ({measure}, output {escape(verdict['worst_output'])!r}) on"
    if not verdict["users_data"]:
        return f"[yellow]verdict: none[/]: {what} {escape(verdict['on'])}; pass --calib DATA or --inputs"
    return f"[green]verdict: kept[/]: {what} {escape(verdict['on'])} (at least {verdict['min_fidelity']:g})"


def asked(report: dict[str, Any]) -> str:
    """What the user asked for, as the options that decided the plan."""
    options = report["options"]
    if "target" in report:
        what = f"--target-{report['target']['kind']} {report['target']['asked']:g}"
    elif options.get("threshold") is not None:
        what = f"--threshold {options['threshold']:g}"
    elif options.get("ratio") is not None:
        what = f"--ratio {options['ratio']:g}"
    else:
        what = "--replay"
    if "allocation" in report:
        how = f"{report['allocation']['method']} allocation"
    else:
        how = f"{options.get('scope', 'global')} scope"
    return f"{what}, {how}, criterion {options.get('criterion', 'auto')}"


def _sizes(report: dict[str, Any]) -> list[str]:
    fed = ", ".join(f"{name} {'x'.join(map(str, dims))}" for name, dims in report["counted_at"].items())
    lines = [
        _before_after("params", report["params"]["before"], report["params"]["after"], count),
        _before_after("MACs", report["macs"]["before"], report["macs"]["after"], count) + f"  at {fed}",
    ]
    groups = report["groups"]
    pruned = sum(g["channels_after"] < g["channels_before"] for g in groups)
    before = sum(g["channels_before"] for g in groups)
    after = sum(g["channels_after"] for g in groups)
    lines.append(
        f"  channels  {before} → {after} in {pruned} pruned groups; {len(report['declined'])} declined "
        "(inspect --explain)"
    )
    held = sum(g.get("must_keep", 0) for g in groups)
    if held:
        mode = report["options"].get("compensate", "bn")
        lines.append(f"  {held} channels must stay (inspect --explain --compensate {mode} says why)")
    widths = widths_caption(report["options"])
    if widths:
        lines.append(f"  {widths}")
    if "bench" in report:
        rows = report["bench"]["models"]
        lines.append(
            f"  latency   {rows[0]['median_ms']:.3g} ms → {rows[-1]['median_ms']:.3g} ms  "
            f"ratio {rows[-1]['median_ms'] / rows[0]['median_ms']:.3f} (ONNX Runtime "
            f"{report['bench']['backend']}, median of {report['bench']['runs']} runs)"
        )
    return lines


def _before_after(name: str, before: float, after: float, show: Any) -> str:
    change = f"{(after - before) / before:+.1%}" if before else "-"
    return f"  {name:<8}  {show(before)} → {show(after)}  {change}"


def compensation_line(section: dict[str, Any]) -> str:
    layers = section["layers"]
    exact = sum(layer["exact"] is True for layer in layers)
    estimated = sum(layer["exact"] is False for layer in layers)
    line = (
        f"compensation ({section['mode']}): {len(layers)} consumers of removed channels, {exact} folded "
        f"exactly, {estimated} by estimate"
    )
    if section["approximations"]:
        line += f", {len(section['approximations'])} approximated"
    errors = [layer["rel_mse_after"] for layer in layers if layer.get("rel_mse_after") is not None]
    if errors:
        line += f"; worst layer rel. MSE {max(errors):.3g} on {section['error_on']}"
    return line


def finetune_line(finetune: dict[str, Any]) -> str:
    line = f"fine-tuned: {finetune['epochs']} epochs in {finetune['seconds']:.0f} s"
    if finetune["best_epoch"] is None:
        return line + " (too few samples to hold some out: the last epoch is kept)"
    if finetune["best_epoch"] == 0:
        return line + (
            f"; no epoch was better on {finetune['held_out']} held-out samples (agreement and loss, neither "
            "worse): the calibrated model is kept"
        )
    line += f", best epoch {finetune['best_epoch']} on {finetune['held_out']} held-out samples"
    before, after = finetune["before"].get("fidelity"), finetune["after"].get("fidelity")
    if before and after:
        line += f"; before: {headline(before)}; after: {headline(after)}"
    return line


def calibration_line(calibration: dict[str, Any]) -> str:
    samples = calibration["samples"]
    refitted = sum(layer["applied"] != "none" for layer in calibration["layers"])
    parts = []
    for name, after in calibration["fidelity"]["after"].items():
        before = calibration["fidelity"]["before"][name]
        parts.append(f"{name}: cosine {before['cosine']:.4f} → {after['cosine']:.4f}")
    return (
        f"calibration ({', '.join(calibration['steps'])}): {refitted} of {len(calibration['layers'])} layers "
        f"changed, fitted on {samples['fit']} samples; on {samples['held_out']} held-out samples "
        + "; ".join(parts)
    )
