"""Rebuilt channels: what a consumer sees in place of the channels a plan removes from one of its inputs,
``x_removed ~ constant + linear @ x_kept`` (per position of the channel axis). With calibration data the
constant is the removed channels' mean and ``linear`` the least-squares estimate from the kept ones, so a
consumer keeps what the removed channels shared with the kept (compensate/rebuild.py makes these); the
rules fold the constant into biases or bias maps and add ``linear``'s columns to the kept weights."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Rebuilt:
    """For one cut tensor under one plan: ``removed`` and ``kept`` positions, the ``constant`` each removed
    position carries, and ``linear`` (removed x kept; None: the constant alone)."""

    removed: np.ndarray
    kept: np.ndarray
    constant: np.ndarray
    linear: np.ndarray | None = None
