"""What ``sparsify`` is asked to do: which layers, how to select, and the calibration data."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from onnxprune.errors import UsageError
from onnxprune.sparsity.layers import MIN_CHANNELS

HOLDOUT = 0.25  # of the calibration samples, kept out of the fit to measure fidelity
BATCH = 32
SELECTIONS = ("auto", "magnitude", "sparsegpt")


@dataclass
class SparsifyOptions:
    """What to sparsify and how. ``calib``: an .npz / JSON / folder for ``onnxprune.data``, or samples by
    input name (batch axis 0); without it, selection is by magnitude."""

    min_channels: int = MIN_CHANNELS
    layers: list[str] = field(default_factory=list)
    exclude: list[str] = field(default_factory=list)
    calib: str | Path | dict[str, np.ndarray] | None = None
    holdout: float = HOLDOUT
    batch: int = BATCH
    damp: float = 0.01
    selection: str = "auto"  # auto: SparseGPT with calibration data, else magnitude
    # SparseGPT's Grams layer-sequentially, from the model as sparsified so far (else all from the original
    # in one pass): see waves.py, and README "sparsify" for the measured difference.
    sequential: bool = True
    # Full input shapes by name for dynamic inputs (--shape): where MACs are counted and random feeds made.
    shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)

    def check(self) -> None:
        if self.selection not in SELECTIONS:
            raise UsageError(f"--selection must be one of {', '.join(SELECTIONS)}, got {self.selection!r}")
        if self.selection == "sparsegpt" and self.calib is None:
            raise UsageError("--selection sparsegpt needs calibration data (--calib)")
        if self.min_channels < 1:
            raise UsageError(f"--min-channels must be at least 1, got {self.min_channels}")
        if not 0 < self.holdout < 1:
            raise UsageError(f"the held-out fraction must be in (0, 1), got {self.holdout}")
        if self.batch < 1:
            raise UsageError(f"the batch size must be at least 1, got {self.batch}")
        if not 0 <= self.damp < 1:
            raise UsageError(f"the damping must be in [0, 1), got {self.damp}")

    @property
    def method(self) -> str:
        if self.selection != "auto":
            return self.selection
        return "magnitude" if self.calib is None else "sparsegpt"
