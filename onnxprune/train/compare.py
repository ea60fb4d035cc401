"""How close PyTorch and ONNX Runtime must be: one op on the same inputs, and a whole graph end to end.

One op, fed the very same input values, must agree within ``CONVERSION`` (1e-5 of its output's scale): a
wrong implementation misses by far more. A whole graph accumulates float32 rounding through every layer
(most in deep nets with LayerNorm or Softmax, and where a box decoder subtracts nearly equal values), so
its outputs are held to the larger of that bound and ``NOISE_FACTOR`` times the float32 noise floor, capped
at ``NOISE_CAP`` of the output's scale, as ``prune``'s exactness check does. The floor is the larger of ONNX
Runtime against itself with its graph optimisations off (the same math summed in another order) and, where
the caller measured it, the PyTorch module's float32 outputs against its own float64 run (``floors``): ONNX
Runtime's two runs share their convolution kernels, and on a pruned PP-OCRv5 recogniser they differed by
6.5e-6 while each float32 run was 5e-5 to 1.2e-4 from the float64 one, so a sound conversion (6.8e-5 off)
was refused.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import onnx

from onnxprune.errors import VerificationError
from onnxprune.runtime import ort_session
from onnxprune.tolerances import CONVERSION, NOISE_CAP, NOISE_FACTOR
from onnxprune.verify import max_relative_error


def close(want: np.ndarray, got: np.ndarray, allowed: float | None = None) -> bool:
    """``max|a-b| <= allowed`` (default ``atol + rtol * max|a|``), NaN failing; integer and bool values
    must be equal."""
    if want.dtype.kind not in "fc":
        return want.shape == got.shape and bool(np.array_equal(want, got))
    if want.shape != got.shape:
        return False
    finite = np.isfinite(want)
    # NaN and inf where ONNX Runtime has them (Log of 0, 0/0) must be the same there; the rest is compared.
    if not finite.all() and not np.array_equal(want[~finite], got[~finite], equal_nan=True):
        return False
    if not finite.any():
        return True
    err = float(np.abs(want[finite].astype(np.float64) - got[finite]).max())
    return err <= (allowed if allowed is not None else op_bound(want))


def op_bound(want: np.ndarray) -> float:
    finite = want[np.isfinite(want)]
    return CONVERSION.atol + CONVERSION.rtol * (float(np.abs(finite).max()) if finite.size else 0.0)


def graph_outputs(
    model: onnx.ModelProto, feed: Mapping[str, np.ndarray], floors: Mapping[str, float] | None = None
) -> dict[str, tuple[np.ndarray, float]]:
    """Every graph output from ONNX Runtime, with the error a conversion may show on it (see the module);
    ``floors``: float32 noise measured elsewhere, per output name."""
    names = [o.name for o in model.graph.output]
    reference = ort_session(model, threads=2, quick=True).run(names, dict(feed))
    again = ort_session(model, threads=2, optimize=False).run(names, dict(feed))
    bounds = {}
    for name, ref, other in zip(names, reference, again, strict=True):
        bound = 0.0
        finite = np.isfinite(ref) & np.isfinite(other) if ref.dtype.kind in "fc" else np.zeros(0, bool)
        if finite.any():
            noise = float(np.abs(ref[finite].astype(np.float64) - other[finite]).max())
            noise = max(noise, (floors or {}).get(name, 0.0))
            scale = float(np.abs(ref[finite]).max())
            bound = max(op_bound(ref), min(NOISE_FACTOR * noise, NOISE_CAP * scale))
        bounds[name] = (ref, bound)
    return bounds


def compare_outputs(
    reference: Mapping[str, tuple[np.ndarray, float]], got: Mapping[str, np.ndarray], what: str
) -> float:
    """The worst relative error of ``got`` against ``reference`` (from :func:`graph_outputs`); raises
    VerificationError naming the first output off by more than its bound. ``what`` says what ``got`` is."""
    worst = 0.0
    for name, (want, bound) in reference.items():
        value = got[name]
        if not close(want, value, bound):
            detail = (
                f"shape {value.shape}, ONNX Runtime {want.shape}"
                if value.shape != want.shape
                else f"max|a-b| {np.abs(want.astype(np.float64) - value).max():.3g} > {bound:.3g}"
            )
            raise VerificationError(f"{what} differs from ONNX Runtime on output {name!r} ({detail})")
        if want.dtype.kind in "fc" and want.size:
            worst = max(worst, max_relative_error(want, value))
    return worst
