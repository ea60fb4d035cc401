"""Refit: ridge least squares of a consumer's kept weights and bias, so that from the pruned model's actual
inputs it reproduces the original layer's output (its kept output channels).

Conv is unfolded (im2col) at a few sampled output positions per sample, as the channel-pruning literature
does (He et al. 2017, ThiNet); grouped and depthwise Convs solve one small system per group. For every group
the normal equations are accumulated in float64 batch by batch: with A = [patches, 1] and Y the target,
``G = A^T A``, ``A^T Y``, ``sum Y``, ``sum Y^2``; memory is O(D^2) for D = patch length, whatever the data.
The same sums give the error of any weights exactly, so the report's before/after errors cost nothing more:
``SSE(w) = w^T G w - 2 w^T A^T y + y^T y``. ``bias`` mode keeps the weights and moves only the bias by the
mean residual (the empirical mean of what the removed channels carried).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from onnxprune.compensate.layers import Layer

# Rows gathered before one Gram update: BLAS's A^T A is much faster on thousands of rows than on a batch
# of a few samples at a few positions each, and the float64 sum is then added to less often.
BUFFER_BYTES = 8 * 2**20
MAX_BUFFER_ROWS = 2048


@dataclass
class Normal:
    """Accumulated normal equations of one group of one layer."""

    gram: np.ndarray  # [D+1, D+1]
    cross: np.ndarray  # [D+1, K]
    y_sq: np.ndarray  # [K]
    y_sum: np.ndarray  # [K]
    rows: int = 0
    # Rows not yet summed: [A | 1] and Y in float32, filled up to ``filled``.
    buffer: tuple[np.ndarray, np.ndarray] | None = None
    filled: int = 0

    @classmethod
    def empty(cls, dim: int, outputs: int) -> Normal:
        return cls(
            np.zeros((dim + 1, dim + 1)), np.zeros((dim + 1, outputs)), np.zeros(outputs), np.zeros(outputs)
        )

    def add(self, patches: np.ndarray, target: np.ndarray) -> None:
        """Rows of one batch, copied into the buffer; it is summed into the Gram matrix when full."""
        if self.buffer is None:
            width = self.gram.shape[0] + self.cross.shape[1]
            size = min(MAX_BUFFER_ROWS, max(256, BUFFER_BYTES // (4 * width)))
            a = np.empty((size, self.gram.shape[0]), np.float32)
            a[:, -1] = 1.0
            self.buffer = a, np.empty((size, self.cross.shape[1]), np.float32)
        a, y = self.buffer
        start = 0
        while start < patches.shape[0]:
            take = min(a.shape[0] - self.filled, patches.shape[0] - start)
            a[self.filled : self.filled + take, :-1] = patches[start : start + take]
            y[self.filled : self.filled + take] = target[start : start + take]
            self.filled += take
            start += take
            if self.filled == a.shape[0]:
                self.flush()
        self.rows += patches.shape[0]

    def flush(self) -> None:
        """Sum the buffered rows: their products in float32 (BLAS, twice as fast), the sums in float64."""
        if self.buffer is None or not self.filled:
            return
        a, y = self.buffer[0][: self.filled], self.buffer[1][: self.filled]
        self.filled = 0
        self.gram += a.T @ a
        self.cross += a.T @ y
        self.y_sq += np.einsum("ij,ij->j", y, y, dtype=np.float64)
        self.y_sum += y.sum(axis=0, dtype=np.float64)

    def release(self) -> None:
        self.flush()
        self.buffer = None

    def sse(self, w: np.ndarray) -> float:
        """Sum of squared errors of augmented weights ``w`` [D+1, K] on the accumulated data."""
        self.flush()
        # Two BLAS products, not one three-operand einsum (which loops D*D*K times in C without BLAS).
        quad = float(np.sum(w * (self.gram @ w)))
        # The expanded square cancels to rounding noise, either sign, where the fit is near exact: a sum of
        # squares is never below 0.
        return max(0.0, float(quad - 2 * np.sum(w * self.cross) + self.y_sq.sum()))

    def sst(self) -> float:
        self.flush()
        return float((self.y_sq - self.y_sum**2 / max(self.rows, 1)).sum())

    def solve(self, ridge: float, with_bias: bool) -> np.ndarray:
        """Ridge solution; the bias is not penalised. Without a bias, its row is pinned to 0."""
        self.flush()
        dim = self.gram.shape[0] - 1
        scale = float(np.mean(np.diag(self.gram)[:dim])) if dim else 0.0
        penalty = np.full(dim + 1, ridge * max(scale, 1e-12))
        penalty[-1] = 0.0
        lhs = self.gram + np.diag(penalty)
        if not with_bias:
            w = np.zeros_like(self.cross)
            w[:-1] = _solve(lhs[:-1, :-1], self.cross[:-1])
            return w
        return _solve(lhs, self.cross)

    def shift(self, w: np.ndarray) -> np.ndarray:
        """``w`` with its bias row moved by the mean residual."""
        self.flush()
        moved = w.copy()
        moved[-1] += (self.y_sum - self.gram[-1] @ w) / max(self.rows, 1)
        return moved


def _solve(lhs: np.ndarray, rhs: np.ndarray) -> np.ndarray:
    try:
        return np.linalg.solve(lhs, rhs)
    except np.linalg.LinAlgError:
        return np.linalg.lstsq(lhs, rhs, rcond=None)[0]


class LayerFit:
    """The normal equations of one layer, fed batch by batch, and its new parameters."""

    def __init__(self, layer: Layer) -> None:
        self.layer = layer
        k = layer.weight.shape[0]
        per_group = int(np.prod(layer.weight.shape[1:]))
        self.groups = [Normal.empty(per_group, k // layer.group) for _ in range(layer.group)]

    def add(self, x: np.ndarray, positions: np.ndarray, target: np.ndarray) -> None:
        """x: the pruned input batch; positions: [B, P] flat output positions; target: [B, P, K]."""
        layer = self.layer
        cols = conv_patches(x, positions, layer) if layer.op == "Conv" else row_patches(x, positions)
        y = target.reshape(-1, target.shape[-1])
        if layer.offset is not None:
            y = y - _offset_at(layer.offset, positions).reshape(y.shape)
        k_g = y.shape[1] // layer.group
        d_g = cols.shape[1] // layer.group
        for g, normal in enumerate(self.groups):
            normal.add(cols[:, g * d_g : (g + 1) * d_g], y[:, g * k_g : (g + 1) * k_g])

    def current(self) -> list[np.ndarray]:
        """The layer's present weights, augmented with its bias, per group: [D+1, K/g]."""
        layer = self.layer
        k = layer.weight.shape[0]
        flat = layer.weight.reshape(k, -1)
        bias = layer.bias if layer.bias is not None else np.zeros(k)
        k_g = k // layer.group
        return [
            np.vstack([flat[g * k_g : (g + 1) * k_g].T, bias[None, g * k_g : (g + 1) * k_g]])
            for g in range(layer.group)
        ]

    def error(self, weights: list[np.ndarray]) -> float:
        """Relative MSE: squared error over the target's variance (1 = no better than its mean)."""
        sst = sum(n.sst() for n in self.groups)
        return sum(n.sse(w) for n, w in zip(self.groups, weights, strict=True)) / max(sst, 1e-30)

    def fit(self, mode: str, ridge: float, with_bias: bool) -> list[np.ndarray]:
        if mode == "bias":
            return [n.shift(w) for n, w in zip(self.groups, self.current(), strict=True)]
        return [n.solve(ridge, with_bias) for n in self.groups]

    def rows(self) -> int:
        return self.groups[0].rows

    def release(self) -> None:
        """Sum what is buffered and free the buffers (the solve needs only the sums)."""
        for normal in self.groups:
            normal.release()

    def unknowns(self) -> int:
        """Weights and bias per output: the rows a determined least-squares fit needs at least."""
        return self.groups[0].gram.shape[0]

    def unpack(self, weights: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """(weight in the layer's [K, ...] layout, bias [K]) from per-group augmented weights."""
        shape = self.layer.weight.shape
        flat = np.vstack([w[:-1].T for w in weights])
        return flat.reshape(shape), np.concatenate([w[-1] for w in weights])


def conv_patches(x: np.ndarray, positions: np.ndarray, layer: Layer) -> np.ndarray:
    """im2col at sampled output positions: [B*P, C*kh*kw] in the weight's (c, ky, kx) order."""
    batch, channels, height, width = x.shape
    (kh, kw), (sh, sw), (dh, dw) = layer.kernel, layer.strides, layer.dilations
    top, left, bottom, right = layer.pads
    out_w = (width + left + right - dw * (kw - 1) - 1) // sw + 1
    oy, ox = np.divmod(positions, out_w)  # [B, P]
    iy = (oy * sh - top)[:, :, None] + dh * np.arange(kh)  # [B, P, kh], in unpadded coordinates
    ix = (ox * sw - left)[:, :, None] + dw * np.arange(kw)  # [B, P, kw]
    # Zero padding without padding the whole batch (a copy of every input to read a few positions): read
    # a clipped position and zero what falls outside.
    inside = ((iy >= 0) & (iy < height))[:, :, :, None] & ((ix >= 0) & (ix < width))[:, :, None, :]
    flat = np.clip(iy, 0, height - 1)[:, :, :, None] * width + np.clip(ix, 0, width - 1)[:, :, None, :]
    rows = x.reshape(batch, channels, height * width)
    b = np.arange(batch)[:, None, None]
    # Advanced indices split by the channel slice: numpy puts their [B, P, kh*kw] first, channels last.
    patches = rows[b, :, flat.reshape(batch, -1, kh * kw)]  # [B, P, kh*kw, C]
    if not inside.all():
        patches *= inside.reshape(batch, -1, kh * kw, 1)
    return patches.transpose(0, 1, 3, 2).reshape(batch * positions.shape[1], -1)


def row_patches(x: np.ndarray, positions: np.ndarray) -> np.ndarray:
    """Gemm / MatMul rows: x is [B, C] or [B, ..., C]; positions index the flattened middle axes."""
    rows = x.reshape(x.shape[0], -1, x.shape[-1]) if x.ndim > 2 else x[:, None, :]
    picked = np.take_along_axis(rows, positions[:, :, None], axis=1)
    return picked.reshape(-1, x.shape[-1])


def _offset_at(offset: np.ndarray, positions: np.ndarray) -> np.ndarray:
    """The offset map [K, H, W] at flat positions [B, P]: [B, P, K] (a [K, 1, 1] map broadcasts)."""
    flat = offset.reshape(offset.shape[0], -1)
    if flat.shape[1] == 1:
        return np.broadcast_to(flat[:, 0], (*positions.shape, flat.shape[0]))
    return flat.T[positions]


def output_positions(layer: Layer, target_shape: tuple[int, ...]) -> int:
    """How many positions one sample of this layer's output has (H*W for Conv, middle axes for MatMul)."""
    if layer.op == "Conv":
        return int(np.prod(target_shape[2:]))
    return int(np.prod(target_shape[1:-1])) if len(target_shape) > 2 else 1


def gather_target(layer: Layer, y: np.ndarray, positions: np.ndarray) -> np.ndarray:
    """The original output at positions, kept channels only: [B, P, K]."""
    if layer.op == "Conv":
        rows = y.reshape(y.shape[0], y.shape[1], -1)
        b = np.arange(y.shape[0])[:, None, None]
        kept = np.arange(y.shape[1]) if layer.kept_out is None else layer.kept_out
        # One gather straight into [B, P, K] (no transposed copy of the whole output).
        return rows[b, kept[None, None, :], positions[:, :, None]]
    rows = y.reshape(y.shape[0], -1, y.shape[-1]) if y.ndim > 2 else y[:, None, :]
    picked = np.take_along_axis(rows, positions[:, :, None], axis=1)
    return picked if layer.kept_out is None else picked[:, :, layer.kept_out]
