"""A training budget in minutes: the step time measured, then as many epochs (or steps) as fit.

The probe runs real training steps (forward, loss, backward) on the first batches without an optimiser
step, then puts back every parameter and BatchNormalization statistic it touched, so the run that follows
starts from the same state as one without a probe. The plan, with room for the held-out evaluation after
every epoch, is an estimate for the progress display and the report: the run follows the clock
(``loop.py``).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

PROBE_STEPS = 3  # the first warms up (allocations, kernel choice) and is not counted


@dataclass(frozen=True)
class BudgetPlan:
    epochs: int  # the estimate: the run itself goes on until the deadline
    step_seconds: float
    eval_seconds: float


def measure_step(module: torch.nn.Module, step: Callable[[int], None]) -> float:
    """Median seconds of ``step(k)`` (forward, loss, backward on batch ``k``); the module is restored."""
    saved = {name: value.detach().clone() for name, value in module.state_dict().items()}
    times = []
    try:
        for k in range(PROBE_STEPS):
            began = time.perf_counter()
            step(k)
            times.append(time.perf_counter() - began)
    finally:
        module.load_state_dict(saved)
        module.zero_grad(set_to_none=True)
    counted = sorted(times[1:] or times)
    return counted[len(counted) // 2]


def plan(minutes: float, step_seconds: float, eval_seconds: float, steps: int, cap: int | None) -> BudgetPlan:
    """How many epochs of ``steps`` steps fit ``minutes`` (each followed by an evaluation), at least 1 (the
    deadline then cuts it), at most ``cap``."""
    epoch_seconds = steps * step_seconds + eval_seconds
    epochs = max(1, int(minutes * 60.0 // epoch_seconds) if epoch_seconds > 0 else 1)
    return BudgetPlan(min(epochs, cap) if cap is not None else epochs, step_seconds, eval_seconds)
