"""Rich tables for ``inspect --sparsity`` and ``sparsify``; the JSON forms are the reports themselves."""

from __future__ import annotations

from typing import Any

from rich.table import Table

from onnxprune.report import add_columns, change_table
from onnxprune.text import number


def _size(row: dict[str, Any]) -> str:
    if row["input_channels"] is None:
        return "-"
    c, taps, k = row["input_channels"], row["kernel"], row["output_channels"]
    return f"{c}x{taps}→{k}" if taps and taps > 1 else f"{c}→{k}"


def survey_table(rows: list[dict[str, Any]], title: str) -> Table:
    """One line per Conv/Gemm/MatMul: C (x kernel taps) → K, MAC share, already 2:4, eligible or why not."""
    table = Table(title=title)
    add_columns(table, ("layer", "op", "C→K", "MACs", "2:4 now", "status"), numeric=("C→K", "MACs"))
    for row in rows:
        status = "[green]eligible[/]" if row["eligible"] else f"[yellow]no[/]: {row['reason']}"
        table.add_row(row["node"], row["op"], _size(row), f"{row['macs_share']:.1%}",
                      "yes" if row["already_24"] else "no", status)  # fmt: skip
    return table


def sparsify_table(report: dict[str, Any], title: str) -> Table:
    """The sparsified layers: weight change, and the held-out output error (SparseGPT vs magnitude)."""
    calibrated = any("output_error" in row for row in report["layers"])
    table = Table(title=title)
    columns = ["C→K", "MACs", "weight change"]
    columns += ["held-out output error", "by magnitude"] if calibrated else []
    add_columns(table, ["layer", *columns], numeric=columns)
    for row in report["layers"]:
        if not row["sparsified"]:
            continue
        cells = [row["node"], _size(row), f"{row['macs_share']:.1%}", f"{row['weight_error']:.3f}"]
        if calibrated:
            cells += [
                number(row.get("output_error"), ".2e"),
                number(row.get("magnitude_output_error"), ".2e"),
            ]
        table.add_row(*cells)
    return table


def fidelity_table(fidelity: dict[str, Any]) -> Table:
    return change_table(fidelity["outputs"], f"2:4 vs the original, on {fidelity['data']}")
