"""Every tolerance a comparison uses, in one place, with why it is what it is.

A comparison passes an output when ``|a - b| <= atol + rtol * |a|`` (elementwise, ``onnxprune check``) or
``max|a - b| <= atol + rtol * max|a|`` (scale-relative: exactness, FP16, TensorRT), ``a`` being the
reference; some also want a cosine similarity of at least ``min_cosine``.

``onnxprune check`` takes per-output values and a rule (:class:`CheckTolerances`):

- ``sum`` (numpy.isclose): ``|a - b| <= atol + rtol * |a|``.
- ``either`` (Polygraphy's default): an element fails only if it exceeds both, ``|a - b| > atol`` and
  ``|a - b| > rtol * |a|``.

Per-output values are written as Polygraphy writes them: ``--atol 1e-5 --atol logits:1e-3``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np

from onnxprune.errors import UsageError


@dataclass(frozen=True)
class Tolerance:
    rtol: float
    atol: float
    min_cosine: float | None = None


# Pruned vs its masked reference: the same math up to float32 rounding (sums in another order, folded
# biases), whatever was pruned. atol only matters for outputs that are (nearly) all zero.
EXACT = Tolerance(rtol=1e-5, atol=1e-6)

# Exactness also allows this many times the float32 noise floor (the masked reference against itself run
# without ONNX Runtime's graph optimisations: the same math summed in another order; float32 error grows with
# depth, and Softmax/LayerNorm amplify it), never more than NOISE_CAP of the output's scale: a real slicing
# bug moves outputs by far more.
NOISE_FACTOR, NOISE_CAP = 10.0, 1e-3

# Outputs that move less than this (relative) between two different inputs make a comparison prove little.
MIN_SENSITIVITY = 1e-2

# `onnxprune check`'s defaults: two models that should compute the same, compared element by element.
CHECK = Tolerance(rtol=1e-5, atol=1e-5)

# FP16 ONNX vs FP32, and a TensorRT engine (which may run layers in FP16/TF32) vs ONNX Runtime. The fidelity
# criterion is each output's cosine similarity (>= 0.999: an RMS error within about 4.5 % of the output's
# RMS); max|a - b| <= 10 % of max|a| only guards against a local fault that one cosine over a large output
# would dilute. FP16 rounding through a deep net alone reaches several percent of max|a| with a cosine
# above 0.999 (docs/measured.md, "FP16 fidelity"), so a tighter bound on max|a - b| refuses sound
# conversions.
REDUCED_PRECISION = Tolerance(rtol=1e-1, atol=1e-4, min_cosine=0.999)

# `onnxprune train`: the PyTorch module built from an ONNX graph vs ONNX Runtime, before training (the
# conversion) and after (the written model vs the trained module): the same float32 math, another kernel.
CONVERSION = Tolerance(rtol=1e-5, atol=1e-6)

# Two analysis passes agree on a removed channel's value (float64 arithmetic on per-channel constants).
VALUE_RTOL, VALUE_ATOL = 1e-6, 1e-12


MODES = ("sum", "either")


@dataclass(frozen=True)
class CheckTolerances:
    atol: float = 1e-5
    rtol: float = 1e-5
    atol_by_output: dict[str, float] = field(default_factory=dict)
    rtol_by_output: dict[str, float] = field(default_factory=dict)
    mode: str = "sum"

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise UsageError(f"tolerance rule must be one of {', '.join(MODES)}, got {self.mode!r}")
        values = [self.atol, self.rtol, *self.atol_by_output.values(), *self.rtol_by_output.values()]
        if not all(math.isfinite(v) and v >= 0 for v in values):
            raise UsageError("tolerances must be finite numbers >= 0")

    def of(self, name: str) -> tuple[float, float]:
        """(atol, rtol) of one output."""
        return self.atol_by_output.get(name, self.atol), self.rtol_by_output.get(name, self.rtol)

    def close(self, name: str, diff: np.ndarray, reference: np.ndarray) -> np.ndarray:
        """Element-wise pass mask; NaN fails."""
        atol, rtol = self.of(name)
        if self.mode == "either":
            return (diff <= atol) | (diff <= rtol * np.abs(reference))
        return diff <= atol + rtol * np.abs(reference)

    def rule(self, name: str) -> str:
        atol, rtol = self.of(name)
        if self.mode == "either":
            return f"off by more than both {atol:g} and {rtol:g} * |a|"
        return f"off by more than {atol:g} + {rtol:g} * |a|"

    def check_names(self, outputs: Iterable[str]) -> None:
        """A per-output tolerance for an output the model does not have is a typo: refuse it."""
        known = set(outputs)
        for name in [*self.atol_by_output, *self.rtol_by_output]:
            if name not in known:
                raise UsageError(
                    f"a tolerance names {name!r}, not an output (outputs: {', '.join(sorted(known))})"
                )


def parse_tolerances(atol: Sequence[str], rtol: Sequence[str], mode: str = "sum") -> CheckTolerances:
    """``["1e-5", "logits:1e-3"]``: a bare number is the default, ``NAME:VALUE`` one output's."""
    default_atol, by_atol = _parse("--atol", atol, 1e-5)
    default_rtol, by_rtol = _parse("--rtol", rtol, 1e-5)
    return CheckTolerances(default_atol, default_rtol, by_atol, by_rtol, mode)


def _parse(option: str, specs: Sequence[str], default: float) -> tuple[float, dict[str, float]]:
    by_output: dict[str, float] = {}
    for spec in specs:
        # The name is everything before the last colon, so TensorFlow-style names ("out:0") work.
        name, _, text = spec.rpartition(":")
        try:
            value = float(text)
        except ValueError:
            raise UsageError(f"bad {option} {spec!r}: expected a number or OUTPUT:NUMBER") from None
        if name:
            by_output[name] = value
        else:
            default = value
    return default, by_output
