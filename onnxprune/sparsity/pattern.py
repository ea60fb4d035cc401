"""The 2:4 pattern TensorRT checks, on a weight in the layout its consumer sees.

Every weight is viewed as *rows*: one row per output channel, its reduction axis flattened in the order in
which TensorRT groups it, so that each aligned run of four entries in a row is one group that must hold at
least two zeros:

- Conv ``[K, C, R, S]``: the row of output ``k`` is ``W[k].transpose(1, 2, 0)`` flattened, i.e. ordered
  (r, s, c). At every (k, r, s) the groups are four consecutive input channels (needs ``C % 4 == 0``).
- Gemm ``B``: ``[N, K]`` with ``transB=1`` (rows as stored), ``[K, N]`` otherwise (rows of ``B.T``);
  MatMul ``B [K, N]`` likewise. The groups run along the reduction axis K.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

GROUP = 4  # the "4" of 2:4
ZEROS = 2  # at least this many zeros per group


@dataclass(frozen=True)
class Layout:
    """How a consumer's weight maps to rows: ``kind`` is ``conv`` (axis 1 is C, the rest spatial),
    ``rows`` (already ``[out, reduction]``) or ``columns`` (``[reduction, out]``)."""

    kind: str
    shape: tuple[int, ...]

    @property
    def reduction(self) -> int:
        """The length of each group run: C for a conv (per spatial position), K for a matrix."""
        if self.kind == "conv":
            return self.shape[1]
        return self.shape[1] if self.kind == "rows" else self.shape[0]

    @property
    def outputs(self) -> int:
        return self.shape[0] if self.kind in ("conv", "rows") else self.shape[1]

    @property
    def kernel(self) -> int:
        """Spatial positions of a conv kernel (R*S), 1 for a matrix."""
        return int(np.prod(self.shape[2:], dtype=np.int64)) if self.kind == "conv" else 1

    def to_rows(self, weight: np.ndarray) -> np.ndarray:
        if self.kind == "conv":
            spatial = tuple(range(2, weight.ndim))
            return weight.transpose(0, *spatial, 1).reshape(weight.shape[0], -1)
        return weight if self.kind == "rows" else weight.T

    def from_rows(self, rows: np.ndarray) -> np.ndarray:
        if self.kind == "conv":
            k, c, *spatial = self.shape
            moved = rows.reshape(k, *spatial, c)
            return moved.transpose(0, moved.ndim - 1, *range(1, moved.ndim - 1))
        return rows if self.kind == "rows" else rows.T


def fits(layout: Layout) -> bool:
    """Whether groups of four tile the reduction axis (else no 2:4 pattern exists for the weight)."""
    return layout.reduction % GROUP == 0 and layout.reduction > 0


def groups(rows: np.ndarray) -> np.ndarray:
    """``[out, n_groups, 4]``: rows cut into aligned runs of four."""
    return rows.reshape(rows.shape[0], -1, GROUP)


def is_24(weight: np.ndarray, layout: Layout) -> bool:
    """Whether every group of the weight has at least two zeros (TensorRT's check)."""
    if not fits(layout):
        return False
    zeros = (groups(layout.to_rows(np.asarray(weight))) == 0).sum(axis=-1)
    return bool((zeros >= ZEROS).all())


def violations(weight: np.ndarray, layout: Layout) -> int:
    """How many groups have fewer than two zeros."""
    zeros = (groups(layout.to_rows(np.asarray(weight))) == 0).sum(axis=-1)
    return int((zeros < ZEROS).sum())


def magnitude_mask(rows: np.ndarray) -> np.ndarray:
    """Rows-shaped bool mask, True where a weight is pruned: the two smallest |w| of every group (ties to
    the earlier entry, so the choice is deterministic)."""
    runs = np.abs(groups(rows))
    order = np.argsort(runs, axis=-1, kind="stable")[..., :ZEROS]
    mask = np.zeros(runs.shape, dtype=bool)
    np.put_along_axis(mask, order, True, axis=-1)
    return mask.reshape(rows.shape)
