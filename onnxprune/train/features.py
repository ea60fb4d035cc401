"""Feature distillation targets: the intermediate tensors where a pruned model is whole again.

A pruned model keeps the original's tensor names (``rewrite`` slices weights, it does not rename). Where a
pruned channel group ends, a consumer reads the narrowed tensor and writes a full-width one (the second
conv of a residual block, the projection after a depthwise stage): that output has the same name and shape
in both models, and the original's activation there is a target the student can match directly, before
the error spreads to the outputs. With the analysis' kept positions (``rewrite.kept_positions``: tensor ->
the channels that survive), the narrowed input itself is a target too, as the original's tensor at those
channels (axis 1).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import torch

from onnxprune.train.torchgraph import OnnxModule, Step


@dataclass(frozen=True)
class Feature:
    name: str  # the tensor's name, the same in both models
    kept: tuple[int, ...] | None = None  # the teacher's channels (axis 1) the student's tensor keeps

    def teacher_value(self, value: torch.Tensor) -> torch.Tensor:
        if self.kept is None:
            return value
        return value.index_select(1, torch.tensor(self.kept, dtype=torch.long, device=value.device))


def boundary_features(
    teacher: OnnxModule, student: OnnxModule, sample: Mapping[str, np.ndarray],
    kept: Mapping[str, np.ndarray] | None = None,
) -> list[Feature]:  # fmt: skip
    """The feature targets of ``student`` (pruned) against ``teacher`` (its original), in graph order.

    A tensor is narrowed when both models have it at different shapes, and tainted when only the student
    has it and it is computed from a narrowed or tainted one (a bias map ``rewrite`` adds after a consumer
    writes the consumer's output under a new name). The first tensors that both models have at the same
    shape downstream of those are the boundaries.
    """
    wide, narrow = _shapes(teacher, sample), _shapes(student, sample)
    outputs = set(student.output_names)
    narrowed = {n for n, shape in narrow.items() if shape and wide.get(n) and shape != wide[n]}
    tainted: set[str] = set()
    found: dict[str, Feature] = {}
    for step in student.steps:
        reads = [n for n in step.inputs if n in narrowed or n in tainted]
        if not reads:
            continue
        for name in (n for n in step.outputs if n):
            if name not in wide:
                tainted.add(name)
            elif narrow.get(name) and narrow[name] == wide[name] and name not in outputs:
                found.setdefault(name, Feature(name))
        for name in reads if _widens(step, narrowed) else ():
            positions, shapes = (kept or {}).get(name), (narrow[name], wide.get(name))
            if positions is not None and shapes[0] and shapes[1] and _fits(positions, shapes[0], shapes[1]):
                found.setdefault(name, Feature(name, tuple(int(p) for p in positions)))
    return list(found.values())


def _widens(step: Step, narrowed: set[str]) -> bool:
    """The step reads a narrowed tensor and writes something that is not narrowed: a consumer at the cut."""
    return any(n and n not in narrowed for n in step.outputs)


def _fits(positions: np.ndarray, narrow: tuple[int, ...], wide: tuple[int, ...]) -> bool:
    """The kept positions describe axis 1 of this tensor, the only axis that differs."""
    same_elsewhere = narrow[:1] + narrow[2:] == wide[:1] + wide[2:]
    return len(narrow) >= 2 and same_elsewhere and len(positions) == narrow[1] and max(positions) < wide[1]


def _shapes(module: OnnxModule, sample: Mapping[str, np.ndarray]) -> dict[str, tuple[int, ...] | None]:
    """Every float tensor's shape on one sample (None for integer ones, which carry no features)."""
    module.eval()
    feed = {name: torch.from_numpy(array[:1]).to(module.device) for name, array in sample.items()}
    with torch.no_grad():
        values = module.run(feed, keep_all=True)
    return {
        name: tuple(v.shape) if isinstance(v, torch.Tensor) and v.is_floating_point() else None
        for name, v in values.items()
    }
