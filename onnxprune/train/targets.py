"""What the student is trained towards, batch by batch, and what it is measured against on held-out samples.

Labels (cross-entropy), or a teacher: its outputs computed once with ONNX Runtime, or, when the inputs are
augmented or features are distilled, the teacher itself in PyTorch (eval mode, no gradients) run on the very
batch the student sees.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import torch

from onnxprune.train.features import Feature
from onnxprune.train.kinds import OutputKind
from onnxprune.train.torchgraph import OnnxModule

Batch = dict[str, np.ndarray]


@dataclass
class Targets:
    labels: np.ndarray | None = None
    teacher: dict[str, np.ndarray] | None = None  # precomputed outputs, one row per sample
    teacher_module: OnnxModule | None = None  # run per batch instead
    kinds: list[OutputKind] = field(default_factory=list)
    features: list[Feature] = field(default_factory=list)
    scales: dict[str, float] = field(default_factory=dict)  # teacher variance per map output and feature

    def batch(
        self, index: np.ndarray, inputs: list[torch.Tensor], device: torch.device
    ) -> dict[str, torch.Tensor]:
        """The targets of one batch: labels, stored teacher rows, or the teacher module on ``inputs``."""
        if self.labels is not None:
            return {"labels": torch.from_numpy(self.labels[index]).to(device)}
        if self.teacher_module is None:
            assert self.teacher is not None
            return {k: torch.from_numpy(v[index]).to(device) for k, v in self.teacher.items()}
        return teacher_run(self.teacher_module, inputs, self.features)

    @property
    def feature_names(self) -> list[str]:
        return [f.name for f in self.features]


def teacher_run(
    teacher: OnnxModule, inputs: list[torch.Tensor], features: list[Feature]
) -> dict[str, torch.Tensor]:
    """The teacher's outputs and feature targets (kept channels only) on a batch."""
    with torch.no_grad():
        values = teacher.run(
            dict(zip(teacher.input_names, inputs, strict=True)), keep=[f.name for f in features]
        )
    for f in features:
        values[f.name] = f.teacher_value(values[f.name])
    return values


@dataclass
class Holdout:
    """Samples never trained on, with the teacher's outputs on them: fidelity after every epoch."""

    samples: Batch
    teacher: dict[str, np.ndarray]

    @property
    def count(self) -> int:
        return int(next(iter(self.samples.values())).shape[0])


def take(arrays: Mapping[str, np.ndarray], index: np.ndarray) -> Batch:
    return {k: np.ascontiguousarray(v[index]) for k, v in arrays.items()}
