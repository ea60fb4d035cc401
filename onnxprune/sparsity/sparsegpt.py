"""Second-order 2:4 selection and update of a layer's weight (SparseGPT, Frantar & Alistarh 2023).

The layer's output on calibration data is ``W X``; its inputs' Gram matrix ``H = X X^T`` is all that the
squared output error ``tr((W - W') H (W - W')^T)`` depends on. Columns are visited left to right; at each
aligned group of four, the two entries whose removal costs least (``w^2 / [H^-1]_jj^2``, the OBS saliency)
are pruned, and every removal's error is spread over the columns not yet visited through the Cholesky
factor of ``H^-1``, so the remaining weights compensate for the pruned ones.

The columns are the rows of ``pattern.Layout.to_rows``: for a Conv, (r, s, c) order, so that the groups of
four that TensorRT checks (four consecutive input channels at one kernel position) are aligned runs here.
"""

from __future__ import annotations

import numpy as np

from onnxprune.sparsity.gram import LayerGrams
from onnxprune.sparsity.pattern import GROUP, ZEROS

DAMP = 0.01  # fraction of the mean diagonal added to H: keeps the inverse stable where inputs are rank-poor
BLOCK = 128  # columns per lazy batch update (a multiple of GROUP)


def sparsegpt(rows: np.ndarray, gram: np.ndarray, damp: float = DAMP, block: int = BLOCK) -> np.ndarray:
    """The 2:4 weight (rows-shaped, float64) that reproduces ``rows @ X`` best for inputs with Gram ``gram``.

    Args:
        rows: ``[out, reduction]``, reduction a multiple of four.
        gram: ``[reduction, reduction]``, symmetric positive semi-definite.
    """
    w = np.array(rows, dtype=np.float64)
    h = np.array(gram, dtype=np.float64)
    dead = np.diag(h) == 0  # inputs that are always zero: their weights do nothing, prune them first
    h[dead, dead] = 1.0
    w[:, dead] = 0.0
    h[np.diag_indices_from(h)] += damp * float(np.mean(np.diag(h)))
    hinv = _upper_cholesky_of_inverse(h)
    columns = w.shape[1]
    for start in range(0, columns, block):
        end = min(start + block, columns)
        errors = _prune_block(w, hinv, start, end)
        w[:, end:] -= errors @ hinv[start:end, end:]
    return w


def _upper_cholesky_of_inverse(h: np.ndarray) -> np.ndarray:
    """``U`` upper triangular with ``U^T U = H^-1``: its rows give the OBS updates in column order.

    Rank-poor inputs can leave the damped ``H`` numerically indefinite; the damping then grows tenfold.
    """
    mean = float(np.mean(np.diag(h)))
    for attempt in range(4):
        damped = h + np.eye(len(h)) * (mean * 0.1 * (10.0**attempt - 1) / 9 if attempt else 0.0)
        try:
            inverse = np.linalg.inv(damped)
            return np.linalg.cholesky((inverse + inverse.T) / 2).T
        except np.linalg.LinAlgError:
            continue
    raise np.linalg.LinAlgError("the Gram matrix stays singular after damping")


def _prune_block(w: np.ndarray, hinv: np.ndarray, start: int, end: int) -> np.ndarray:
    """Prunes columns ``start:end`` of ``w`` in place; returns the scaled errors for the lazy update."""
    block = w[:, start:end]  # a view: the updates land in w
    hblock = hinv[start:end, start:end]
    diag = np.diag(hblock)
    errors = np.zeros_like(block)
    mask = np.zeros(block.shape, dtype=bool)
    for i in range(end - start):
        if i % GROUP == 0:
            saliency = block[:, i : i + GROUP] ** 2 / diag[i : i + GROUP] ** 2
            cheapest = np.argsort(saliency, axis=1, kind="stable")[:, :ZEROS]
            np.put_along_axis(mask[:, i : i + GROUP], cheapest, True, axis=1)
        column = block[:, i]
        kept = np.where(mask[:, i], 0.0, column)
        error = (column - kept) / diag[i]
        block[:, i:] -= np.outer(error, hblock[i, i:])
        block[:, i] = kept
        errors[:, i] = error
    return errors


def aimed_at_original(rows: np.ndarray, grams: LayerGrams, damp: float = DAMP) -> np.ndarray:
    """The dense weight to make 2:4 so that the layer reproduces its output in the original model.

    Behind layers already 2:4 the layer's inputs ``X`` differ from the original's ``X_o``. The least-squares
    weight ``W* = W C^T H^-1`` (``C = X^T X_o``, ``H = X^T X``, damped as SparseGPT damps it) maps ``X`` to
    the original output ``X_o W^T`` best, and ``||X_o W^T - X W'^T||^2 = ||X_o W^T - X W*^T||^2 +
    ||X (W* - W')^T||^2``: SparseGPT on ``W*`` with ``H`` then minimises the error against the original
    output, so each layer absorbs what the earlier ones changed. Without a cross Gram (the same inputs),
    ``W* = W``.
    """
    if grams.cross is None:
        return np.asarray(rows, dtype=np.float64)
    h = np.array(grams.ss, dtype=np.float64)
    mean = float(np.mean(np.diag(h)))
    if mean <= 0:
        return np.asarray(rows, dtype=np.float64)  # no input at all: nothing to aim with
    h[np.diag_indices_from(h)] += damp * mean + (np.diag(h) == 0)
    return np.linalg.solve(h, grams.cross @ np.asarray(rows, dtype=np.float64).T).T


def output_error(
    rows: np.ndarray,
    new_rows: np.ndarray,
    gram: np.ndarray,
    cross: np.ndarray | None = None,
    original: np.ndarray | None = None,
) -> float:
    """Relative squared output error ``||X_o W^T - X W'^T||^2 / ||X_o W^T||^2`` from the Grams
    (``gram = X^T X``, ``cross = X^T X_o``, ``original = X_o^T X_o``); without ``cross`` the inputs are the
    same (``X_o = X``): ``||X (W - W')^T||^2 / ||X W^T||^2``."""
    w = np.asarray(rows, dtype=np.float64)
    new = np.asarray(new_rows, dtype=np.float64)
    if cross is None or original is None:
        diff = w - new
        base = float(np.sum((w @ gram) * w))
        lost = float(np.sum((diff @ gram) * diff))
    else:
        base = float(np.sum((w @ original) * w))
        lost = max(base - 2 * float(np.sum((new @ cross) * w)) + float(np.sum((new @ gram) * new)), 0.0)
    return lost / base if base > 0 else 0.0
