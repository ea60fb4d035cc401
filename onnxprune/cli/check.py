"""``onnxprune check``: compare two models on the same inputs; exit 1 when an output is out of tolerance."""

from __future__ import annotations

import json
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from onnxprune.cli.printing import fed_line
from onnxprune.cli.shared import InputsOpt, IterationsOpt, ModelArg, choices, console, user_errors, warn
from onnxprune.tolerances import CHECK, parse_tolerances
from onnxprune.verify import check_models, render_comparison


class ToleranceRule(StrEnum):
    sum = "sum"
    either = "either"


@user_errors
def check(
    original: ModelArg,
    other: Annotated[Path, typer.Argument(help="The model to compare with ORIGINAL.", show_default=False)],
    inputs: InputsOpt = None,
    iterations: IterationsOpt = None,
    seed: Annotated[int, typer.Option(help="Seed of the random inputs.")] = 0,
    atol: Annotated[
        list[str] | None,
        typer.Option(
            help=f"Absolute tolerance (default {CHECK.atol:g}), or OUTPUT:VALUE for one output; repeatable."
        ),
    ] = None,
    rtol: Annotated[
        list[str] | None,
        typer.Option(
            help=f"Relative tolerance (default {CHECK.rtol:g}), or OUTPUT:VALUE for one output; repeatable."
        ),
    ] = None,
    tolerance_rule: Annotated[
        str,
        choices(
            ToleranceRule,
            "sum: pass if |a-b| <= atol + rtol*|a| (numpy.isclose); "
            "either: fail only where both atol and rtol are exceeded (Polygraphy's rule).",
        ),
    ] = ToleranceRule.sum,
    shape: Annotated[list[str] | None, typer.Option(help="NAME:1x3x224x224 for a dynamic input.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON only.")] = False,
) -> None:
    """Compare two models on the same inputs in ONNX Runtime; exit 1 if any output is out of tolerance."""
    tolerances = parse_tolerances(atol or [], rtol or [], str(tolerance_rule))
    result = check_models(
        original, other, inputs=inputs, iterations=iterations, seed=seed, tolerances=tolerances,
        shapes=shape or [], progress=not as_json,
    )  # fmt: skip
    if as_json:
        print(json.dumps(result.to_dict(), indent=2))
    else:
        console.print(f"inputs fed: {fed_line(result.inputs)}", highlight=False, markup=False)
        console.print(render_comparison(result, f"{original.name} vs {other.name}"))
        console.print("[green]within tolerance[/]" if result.passed else "[red]outside tolerance[/]")
    warn(result.notes)
    if not result.passed:
        raise typer.Exit(1)
