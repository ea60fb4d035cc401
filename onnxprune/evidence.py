"""Evidence: what a verification actually proves, beside whether it passed.

- **Input sensitivity**: how much the outputs move between two different inputs,
  ``max|f(x1) - f(x2)| / max|f(x1)|``. An exactness check on a model whose outputs barely depend on its
  inputs (random BatchNorm statistics kill the signal in deep nets) proves little, so every verification
  measures it, reports the surgery error relative to that movement, and warns below ``MIN_SENSITIVITY``.
- **The original runs**: when a comparison fails inside ONNX Runtime, the original is run alone on the same
  inputs; if it fails too the user hears that the *original* does not run at the shapes fed, and how to
  give them (``--shape``), instead of an error from deep inside the pruned model.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np

from onnxprune.errors import CapabilityError, OriginalRunError, ValidationError
from onnxprune.inputs import Feeds, contrast_feed, original_fails_message
from onnxprune.runtime import ort_session, run_model
from onnxprune.tolerances import MIN_SENSITIVITY

# float32's tiny keeps a ratio finite for any float32 output (as in verify).
_TINY = float(np.finfo(np.float32).tiny)


def input_sensitivity(
    model: Any,
    feeds: Sequence[Mapping[str, np.ndarray]],
    result: Any,
    first: Mapping[str, np.ndarray] | None = None,
) -> None:
    """Sets each output's ``sensitivity`` and ``error_per_change`` (max|a-b| over the movement) on the
    outputs of ``result`` (a verify.Comparison); ``model`` may be a session already made. ``first``: its
    outputs on ``feeds[0]`` where a comparison has just computed them (one run fewer)."""
    session: Any = model if hasattr(model, "get_outputs") else ort_session(model)
    names = [o.name for o in session.get_outputs()]
    if not first:
        first = dict(zip(names, session.run(names, dict(feeds[0])), strict=True))
    second = dict(zip(names, session.run(names, dict(contrast_feed(feeds))), strict=True))
    for out in result.outputs:
        if out.name not in first or out.name not in second or first[out.name].shape != second[out.name].shape:
            continue
        a, b = first[out.name].astype(np.float64), second[out.name].astype(np.float64)
        moved = float(np.max(np.abs(a - b))) if a.size else 0.0
        out.sensitivity = moved / max(float(np.max(np.abs(a))) if a.size else 0.0, _TINY)
        if out.max_abs_err is not None:
            out.error_per_change = out.max_abs_err / max(moved, _TINY)


RANDOM_ONLY = "verified on random N(0,1) data only"


def warnings_for(result: Any, feeds: Feeds) -> list[str]:
    """What the user should know about how much a passed check proves."""
    notes = []
    dull = [o for o in result.outputs if o.sensitivity is not None and not o.sensitivity >= MIN_SENSITIVITY]
    if dull:
        shown = ", ".join(f"{o.name} {o.sensitivity:.2g}" for o in dull[:4])
        notes.append(
            f"outputs barely depend on the inputs (relative change between two inputs: {shown} < "
            f"{MIN_SENSITIVITY:g}): this check proves little; verify on real data with --inputs"
        )
    if feeds.source == "random":
        notes.append(
            f"{RANDOM_ONLY}: the change numbers can mislead; pass real samples with --inputs FILE.npz (or "
            "--calib)"
        )
    return notes


@contextlib.contextmanager
def original_must_run(original: Any, feeds: Feeds) -> Iterator[None]:
    """On a ValidationError inside, checks whether the original itself runs on the first feed."""
    try:
        yield
    except ValidationError:
        _raise_if_original_fails(original, feeds)
        raise


def _raise_if_original_fails(original: Any, feeds: Feeds) -> None:
    try:
        run_model(original, feeds.feeds[0])
    except CapabilityError:
        raise
    except Exception as err:
        raise OriginalRunError(original_fails_message(feeds, err)) from None
