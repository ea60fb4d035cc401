"""``onnxprune check``: compare a model with the original it came from, and the table it prints."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import onnx
from google.protobuf.message import DecodeError

from onnxprune.errors import ModelLoadError, first_line
from onnxprune.evidence import original_must_run
from onnxprune.inputs import fmt_dims, parse_shapes, prepare_feeds
from onnxprune.text import number
from onnxprune.tolerances import CHECK, CheckTolerances
from onnxprune.verify.compare import compare
from onnxprune.verify.metrics import Comparison

if TYPE_CHECKING:
    from rich.table import Table


def check_models(
    original_path: str | Path,
    other_path: str | Path,
    *,
    inputs: str | Path | None = None,
    iterations: int | None = None,
    seed: int = 0,
    atol: float = CHECK.atol,
    rtol: float = CHECK.rtol,
    tolerances: CheckTolerances | None = None,
    shapes: Sequence[str] = (),
    progress: bool = False,
) -> Comparison:
    """``onnxprune check``: compares ``other_path`` with ``original_path`` as :func:`compare` does.

    Feeds are made from the original's inputs; the models run from their paths, so external data works. A
    failed comparison is returned, not raised: the caller decides the exit code. The result's ``inputs``
    and ``notes`` say what was fed (shapes, random or the user's data) and what was chosen for the user.
    """
    original = load_model_header(original_path)
    load_model_header(other_path)  # a missing or corrupt file is a ModelLoadError now, not an ORT error later
    tol = tolerances or CheckTolerances(atol, rtol)
    tol.check_names(o.name for o in original.graph.output)
    shape_map = parse_shapes(shapes)
    fed = prepare_feeds(original, iterations=iterations, seed=seed, shapes=shape_map, inputs_path=inputs)
    with original_must_run(original_path, fed):
        result = compare(original_path, other_path, feeds=fed.feeds, tolerances=tol, progress=progress)
    result.inputs, result.notes = fed.to_dict(), list(fed.notes)
    if fed.source == "random":
        result.notes.append("compared on random N(0,1) data only: pass real samples with --inputs FILE.npz")
    return result


def load_model_header(path: str | Path) -> onnx.ModelProto:
    """Loads a model without its external data (enough for its inputs), or raises ``ModelLoadError``."""
    try:
        return onnx.load(str(path), load_external_data=False)
    except FileNotFoundError as err:
        raise ModelLoadError(f"model not found: {path}") from err
    except (OSError, DecodeError, ValueError) as err:
        raise ModelLoadError(f"cannot read {path} as an ONNX model: {first_line(err)}") from err


def render_comparison(comparison: Comparison, title: str = "") -> Table:
    """A rich table, one row per output: shape, max abs, max rel, cosine, top-1, result."""
    from rich.table import Table
    from rich.text import Text

    table = Table(title=title or None, caption=_criterion_text(comparison))
    for column in ("output", "shape", "max abs", "max rel", "cosine", "top-1", "result"):
        if column in ("output", "shape", "result"):
            table.add_column(column, overflow="fold")
        else:  # a number split over two lines at 80 columns reads as two numbers
            table.add_column(column, justify="right", no_wrap=True)
    for out in comparison.outputs:
        shape = out.reference_shape or out.candidate_shape
        top1 = None if out.top1_agreement is None else 100 * out.top1_agreement
        table.add_row(
            Text(out.name),  # Text, so that a name like "[logits]" is not read as markup
            "-" if shape is None else fmt_dims(shape),
            number(out.max_abs_err, ".3g"),
            number(out.max_rel_err, ".3g"),
            number(out.cosine, ".6f"),
            number(top1, ".1f"),
            Text("pass", style="green") if out.passed else Text(f"FAIL: {out.reason}", style="red"),
        )
    return table


def _criterion_text(comparison: Comparison) -> str:
    tol = f"{comparison.atol:g} + {comparison.rtol:g}"
    scale = comparison.criterion == "scale"
    rule = f"max|a-b| <= {tol} * max|a|" if scale else f"|a-b| <= {tol} * |a| everywhere"
    return f"a = reference; pass if {rule}; {comparison.iterations} iteration(s); top-1 in %"
