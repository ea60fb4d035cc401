"""The verify stage of a prune: is the surgery exact (pruned vs masked reference), and how far did pruning
move the outputs (pruned vs original)? Both questions in one pass (verify.exact_and_change)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import onnx

from onnxprune import verify
from onnxprune.errors import VerificationError
from onnxprune.evidence import original_must_run, warnings_for
from onnxprune.inputs import Feeds, prepare_feeds
from onnxprune.options import VerifyOptions
from onnxprune.pipeline.layer_errors import LayerErrorRun


def feeds_for(original: onnx.ModelProto, options: VerifyOptions) -> Feeds:
    """What verification and the ONNX Runtime check feed: the user's ``--inputs`` or seeded random data."""
    return prepare_feeds(
        original,
        iterations=options.iterations,
        seed=options.seed,
        shapes=options.shapes,
        inputs_path=options.inputs,
    )


def verify_pruning(
    original: onnx.ModelProto,
    masked: onnx.ModelProto,
    pruned: onnx.ModelProto,
    options: VerifyOptions,
    fed: Feeds | None = None,
    serialized: bytes | None = None,
    error_run: LayerErrorRun | None = None,
) -> dict[str, Any]:
    """Question 1: is the surgery exact (pruned vs masked reference)? Question 2: how far did it move?

    The result also says what was fed (``inputs``: shapes, random or the user's data) and ``warnings``:
    outputs that barely depend on the inputs, random data only. ``fed``: the feeds already made from
    ``options``; ``serialized``: ``pruned``'s bytes, where made already. ``error_run``: its consumers'
    outputs are read from the same runs (the original's, the masked reference's noise-floor run) and one run
    of the uncompensated reference, which it then drops.
    """
    fed = fed or feeds_for(original, options)
    taps: dict[str, list[str]] = {}
    observers: dict[str, Callable[[], onnx.ModelProto]] = {}
    visit = None
    errors = error_run.errors if error_run is not None else None
    if error_run is not None and errors is not None and errors.found:
        roles = {"original": "target", "masked": "after", "uncompensated": "before"}
        taps = {role: errors.wanted(key) for role, key in roles.items()}
        observers["uncompensated"] = error_run.take_uncompensated

        def visit(tapped: dict[str, dict[str, np.ndarray]]) -> None:
            errors.add({key: tapped[role] for role, key in roles.items()})

    with original_must_run(original, fed):
        exact, change = verify.exact_and_change(
            masked, serialized if serialized is not None else pruned, original, feeds=fed.feeds,
            progress=options.progress, taps=taps, observers=observers, visit=visit,
        )  # fmt: skip
    if not exact.passed:
        raise _not_exact(exact, fed)
    assert change is not None
    warnings = fed.notes + warnings_for(exact, fed)
    report = {"inputs": fed.to_dict(), "exact": exact.to_dict(), "change": change.to_dict()}
    return {**report, "warnings": warnings}


def _not_exact(exact: Any, fed: Feeds) -> Exception:
    worst = next(o for o in exact.outputs if not o.passed)
    detail = worst.reason or f"relative error {worst.max_rel_err:.3g} > {exact.rtol:g}"
    return VerificationError(
        "pruned model does not match its masked reference (the original with the removed channels set to "
        f"what the pruned model folds for them) "
        f"on output {worst.name!r}: {detail}; compared on {fed.description} ({fed.shapes_line()}); "
        "nothing written (--no-verify skips this check)"
    )
