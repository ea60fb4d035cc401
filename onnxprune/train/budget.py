"""A training budget in minutes: the step time measured, then as many epochs (or steps) as fit.

The probe runs real training steps (forward, loss, backward) on the first batches without an optimiser
step, then puts back every parameter and BatchNormalization statistic it touched, so the run that follows
starts from the same state as one without a probe. The plan leaves room for the held-out evaluation after
every epoch; when not even one epoch fits, it is one epoch cut to the steps that fit.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

PROBE_STEPS = 3  # the first warms up (allocations, kernel choice) and is not counted


@dataclass(frozen=True)
class BudgetPlan:
    epochs: int
    total_steps: int  # the learning-rate schedule's length
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
    """Epochs of ``steps`` steps that fit ``minutes`` (each followed by an evaluation), at most ``cap``."""
    budget = minutes * 60.0
    epoch_seconds = steps * step_seconds + eval_seconds
    epochs = int(budget // epoch_seconds) if epoch_seconds > 0 else 1
    if cap is not None:
        epochs = min(epochs, cap)
    if epochs >= 1:
        return BudgetPlan(epochs, epochs * steps, step_seconds, eval_seconds)
    fitting = max(1, math.floor((budget - eval_seconds) / max(step_seconds, 1e-9)))
    return BudgetPlan(1, min(fitting, steps), step_seconds, eval_seconds)
