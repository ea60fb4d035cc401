"""Moments: what an activation makes of a normal input, E[act(N(mu, s²))] per channel.

The rules use these for data-free compensation (``onnxprune/compensate/datafree.py``): a channel removed at
a scoring BatchNormalization is N(beta, gamma²), and the next nonlinearity turns it into a point constant.
Closed forms for Relu, Clip/Relu6, LeakyRelu, HardSigmoid, HardSwish (truncated-normal moments);
Gauss-Hermite quadrature of the op itself for anything else; SiLU as the pair x * sigmoid(x).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

GH_POINTS = 48  # Gauss-Hermite nodes: smooth activations converge to ~1e-12; kinks have closed forms

_erf = np.vectorize(math.erf, otypes=[np.float64])


def norm_cdf(z: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + _erf(np.asarray(z, dtype=np.float64) / math.sqrt(2.0)))


def norm_pdf(z: np.ndarray) -> np.ndarray:
    z = np.asarray(z, dtype=np.float64)
    return np.exp(-0.5 * z * z) / math.sqrt(2.0 * math.pi)


def _moments(mu: np.ndarray, s: np.ndarray, lo: float, hi: float) -> tuple[np.ndarray, ...]:
    """P(lo < X < hi), E[X; lo < X < hi], E[X²; lo < X < hi] for X ~ N(mu, s²), s > 0."""
    with np.errstate(invalid="ignore", divide="ignore"):
        a, b = (lo - mu) / s, (hi - mu) / s
    pa, pb = norm_pdf(a), norm_pdf(b)
    p = norm_cdf(b) - norm_cdf(a)
    m1 = mu * p + s * (pa - pb)
    # (mu + lo) * pdf(a) is 0 at an infinite bound, not inf * 0
    ta = np.where(np.isfinite(a), (mu + lo) * pa, 0.0) if np.isfinite(lo) else 0.0
    tb = np.where(np.isfinite(b), (mu + hi) * pb, 0.0) if np.isfinite(hi) else 0.0
    m2 = (mu * mu + s * s) * p + s * (ta - tb)
    return p, m1, m2


def relu_mean(mu: np.ndarray, s: np.ndarray) -> np.ndarray:
    """E[max(X, 0)] = mu Phi(mu/s) + s phi(mu/s)."""
    z = mu / s
    return mu * norm_cdf(z) + s * norm_pdf(z)


def clip_mean(mu: np.ndarray, s: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """E[clip(X, lo, hi)]: two-sided truncated normal plus the mass piled up at each bound."""
    _, m1, _ = _moments(mu, s, lo, hi)
    below = norm_cdf((lo - mu) / s) if np.isfinite(lo) else 0.0
    above = 1.0 - norm_cdf((hi - mu) / s) if np.isfinite(hi) else 0.0
    low_part = lo * below if np.isfinite(lo) else 0.0
    high_part = hi * above if np.isfinite(hi) else 0.0
    return m1 + low_part + high_part


def leaky_relu_mean(mu: np.ndarray, s: np.ndarray, alpha: float) -> np.ndarray:
    positive = relu_mean(mu, s)
    return positive + alpha * (mu - positive)


def hard_sigmoid_mean(mu: np.ndarray, s: np.ndarray, alpha: float, beta: float) -> np.ndarray:
    """HardSigmoid = clip(alpha x + beta, 0, 1), a clip of another normal."""
    return clip_mean(alpha * mu + beta, abs(alpha) * s, 0.0, 1.0)


def hard_swish_mean(mu: np.ndarray, s: np.ndarray) -> np.ndarray:
    """HardSwish = 0 below -3, x (x + 3) / 6 between, x above 3."""
    _, m1_mid, m2_mid = _moments(mu, s, -3.0, 3.0)
    _, m1_top, _ = _moments(mu, s, 3.0, math.inf)
    return (m2_mid + 3.0 * m1_mid) / 6.0 + m1_top


def gauss_hermite_mean(
    f: Callable[[np.ndarray], np.ndarray | None], mu: np.ndarray, s: np.ndarray
) -> np.ndarray | None:
    """E[f(X)] by Gauss-Hermite quadrature; ``f`` maps points [Q, C] to values [Q, C] (None: it cannot)."""
    nodes, weights = np.polynomial.hermite_e.hermegauss(GH_POINTS)
    points = mu[None, :] + s[None, :] * nodes[:, None]
    values = f(points)
    if values is None or values.size != points.size:
        return None
    values = np.asarray(values, dtype=np.float64).reshape(points.shape)
    return weights @ values / math.sqrt(2.0 * math.pi)


def silu_mean(mu: np.ndarray, s: np.ndarray) -> np.ndarray:
    """E[X sigmoid(X)] (SiLU / Swish written as Mul(x, Sigmoid(x)))."""
    out = gauss_hermite_mean(lambda x: x / (1.0 + np.exp(-x)), mu, s)
    assert out is not None
    return out


def unary_mean(
    op: str,
    attrs: dict[str, object],
    bounds: tuple[float, float],
    mu: np.ndarray,
    s: np.ndarray,
    run: Callable[[np.ndarray], np.ndarray | None],
) -> np.ndarray | None:
    """E[op(N(mu, s²))] per channel (s > 0 everywhere), or None when the op cannot be evaluated.

    ``bounds`` are Clip's (lo, hi); ``run`` evaluates the op itself on an array of points [Q, C].
    """
    if op == "Relu":
        return relu_mean(mu, s)
    if op == "Clip":
        return clip_mean(mu, s, *bounds)
    if op == "LeakyRelu":
        return leaky_relu_mean(mu, s, float(attrs.get("alpha", 0.01)))  # type: ignore[arg-type]
    if op == "HardSigmoid":
        alpha, beta = float(attrs.get("alpha", 0.2)), float(attrs.get("beta", 0.5))  # type: ignore[arg-type]
        return hard_sigmoid_mean(mu, s, alpha, beta)
    if op == "HardSwish":
        return hard_swish_mean(mu, s)
    return gauss_hermite_mean(run, mu, s)


# Unary ops that are linear (affine) per channel: they carry the spread instead of collapsing it.
LINEAR_UNARY = {"Identity": 1.0, "Dropout": 1.0, "Cast": 1.0, "Neg": 1.0}


def through_unary(
    op: str,
    attrs: dict[str, object],
    consts: list[np.ndarray | None],
    mu: np.ndarray,
    s: np.ndarray,
    point: np.ndarray,
    run: Callable[[np.ndarray], np.ndarray | None],
) -> tuple[np.ndarray, np.ndarray]:
    """(value, spread) of a unary op's output: linear ops carry the spread, others take the expectation.

    ``point`` is the op applied to ``mu`` (what it gives where the spread is 0); ``consts`` are the op's
    other inputs (Clip's bounds).
    """
    if op in LINEAR_UNARY:
        return point, s * (np.isfinite(point))
    live = (s > 0) & np.isfinite(mu)
    if not live.any():
        return point, np.zeros_like(s)
    expected = unary_mean(op, attrs, clip_bounds(attrs, consts), mu[live], s[live], run_on(run, live))
    value = point.copy()
    value[live] = expected if expected is not None else np.nan
    return value, np.zeros_like(s)


def run_on(run: Callable[[np.ndarray], np.ndarray | None], live: np.ndarray):
    """``run`` over all channels, restricted to the ``live`` ones (the op wants every channel)."""

    def f(points: np.ndarray) -> np.ndarray | None:
        full = np.zeros((points.shape[0], live.size))
        full[:, live] = points
        out = run(full)
        return None if out is None or out.size != full.size else out.reshape(full.shape)[:, live]

    return f


def clip_bounds(attrs: dict[str, object], consts: list[np.ndarray | None]) -> tuple[float, float]:
    """Clip's (min, max): inputs 1 and 2 since opset 11, attributes before; absent means unbounded."""
    lo = consts[0] if len(consts) > 0 and consts[0] is not None else attrs.get("min", -math.inf)
    hi = consts[1] if len(consts) > 1 and consts[1] is not None else attrs.get("max", math.inf)
    return float(np.asarray(lo).reshape(-1)[0]), float(np.asarray(hi).reshape(-1)[0])
