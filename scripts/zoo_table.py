"""The zoo table: how onnxprune does on every real topology in tests/data (seeded weights).

One row per model: channel groups found, prunable, declined (top reasons), MACs and parameters before and
after ``--ratio 0.5``, and exactness: the largest relative error of the pruned model against its masked
reference, and of the original against the model with exactly its dead channels pruned.

    python scripts/zoo_table.py                # a rich table
    python scripts/zoo_table.py --markdown     # a GitHub table for the README
"""

from __future__ import annotations

import argparse
import collections
import sys
from dataclasses import dataclass
from pathlib import Path

import onnx

TESTS = Path(__file__).resolve().parents[1] / "tests"
sys.path.insert(0, str(TESTS))

import test_families  # noqa: E402  (the dead-channel helpers the family tests use)
import tiny  # noqa: E402
import weights  # noqa: E402

from onnxprune import api  # noqa: E402
from onnxprune.errors import NothingToPruneError  # noqa: E402
from onnxprune.options import PlanOptions  # noqa: E402
from onnxprune.verify import max_relative_error  # noqa: E402

# Declines every model has: its input's and its logits' channels.
EVERYWHERE = ("channels of graph input", "reaches graph output")


@dataclass
class Row:
    model: str
    groups: int
    prunable: int
    declined: str
    macs: tuple[int, int]
    params: tuple[int, int]
    masked_err: float | None  # None: nothing pruned
    dead_err: float | None


def max_error(a: onnx.ModelProto, b: onnx.ModelProto) -> float:
    worst = 0.0
    for seed in (0, 1):
        before, after = tiny.outputs(a, seed), tiny.outputs(b, seed)
        worst = max(worst, *(max_relative_error(ref, after[name]) for name, ref in before.items()))
    return worst


def top_reasons(reasons: list[str], k: int = 2) -> str:
    counts = collections.Counter(r for r in reasons if not r.startswith(EVERYWHERE))
    return "; ".join(f"{n}× {reason}" for reason, n in counts.most_common(k))


def dead_error(name: str) -> float | None:
    """Original vs its dead channels pruned; None where nothing is dead (no BN, nothing prunable)."""
    if name == "squeezenet1_1":
        model = test_families.zero_filters(weights.load(name))
    else:
        model = weights.load(name, dead=0.3)
    result = tiny.prune_dead(model)
    return max_error(model, result.pruned) if tiny.removed_channels(result) else None


def row(name: str, ratio: float) -> Row:
    model = weights.load(name)
    try:
        result = api.prune_model(model, PlanOptions(ratio=ratio))
    except NothingToPruneError:
        return unpruned_row(name, model)
    groups = [g for g in result.groups if g.nodes]
    report = result.report
    return Row(
        model=name,
        groups=len(groups),
        prunable=sum(g.prunable for g in groups),
        declined=top_reasons([d["reason"] for d in report["declined"]]),
        macs=(report["macs"]["before"], report["macs"]["after"]),
        params=(report["params"]["before"], report["params"]["after"]),
        masked_err=max_error(result.masked, result.pruned),  # type: ignore[arg-type]
        dead_err=dead_error(name),
    )


def unpruned_row(name: str, model: onnx.ModelProto) -> Row:
    """A model whose every group is declined: prune refuses it, inspect says why."""
    found = api.inspect(model)
    groups = [g for g in found.groups if g.nodes]
    reasons = [g.declines[0].reason for g in groups if g.declines]
    return Row(name, len(groups), 0, top_reasons(reasons), (found.macs, found.macs),
               (found.params, found.params), None, None)  # fmt: skip


def _count(n: int) -> str:
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= scale:
            return f"{n / scale:.2f}{unit}"
    return str(n)


def cells(r: Row) -> list[str]:
    def change(before: int, after: int) -> str:
        return f"{_count(before)} → {_count(after)} ({after / before:.2f})"

    dead = "n/a" if r.dead_err is None else f"{r.dead_err:.1e}"
    return [
        r.model,
        str(r.groups),
        str(r.prunable),
        r.declined or "-",
        change(*r.macs),
        change(*r.params),
        "-" if r.masked_err is None else f"{r.masked_err:.1e}",
        dead,
    ]


HEADERS = ["model", "groups", "prunable", "declined (top reasons)", "MACs", "params"]
HEADERS += ["masked err", "dead err"]


def print_markdown(rows: list[Row]) -> None:
    print("| " + " | ".join(HEADERS) + " |")
    print("|" + "|".join("---" for _ in HEADERS) + "|")
    for r in rows:
        print("| " + " | ".join(c.replace("|", "\\|") for c in cells(r)) + " |")


def print_rich(rows: list[Row], ratio: float) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"onnxprune on tests/data at --ratio {ratio} (round_to 8, min_keep 8)")
    for header in HEADERS:
        numeric = header in ("groups", "prunable")
        table.add_column(header, overflow="fold", justify="right" if numeric else "left")
    for r in rows:
        table.add_row(*cells(r))
    Console().print(table)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--markdown", action="store_true", help="print a GitHub markdown table")
    parser.add_argument("--ratio", type=float, default=0.5)
    parser.add_argument("models", nargs="*", help="names in tests/data (default: all)")
    args = parser.parse_args(argv)
    rows = [row(name, args.ratio) for name in args.models or weights.topologies()]
    if args.markdown:
        print_markdown(rows)
    else:
        print_rich(rows, args.ratio)
    return 0


if __name__ == "__main__":
    sys.exit(main())
