"""The distillation loss: one term per model output by its kind (``kinds.py``), plus feature terms.

- scores: ``KL(teacher || student)`` of the distributions softened by the temperature ``T``, times ``T^2``
  (Hinton et al.: the gradients keep their size whatever ``T``).
- sequence: the same KL for every frame, averaged over frames (a CTC recogniser's ``[N, T, C]``), at
  temperature 1: softening a distribution over a vocabulary of thousands spreads the teacher's mass over
  every wrong character, and the target says little about the right one. Plus, times ``ctc_weight``, the
  CTC loss of the student against the teacher's greedy decodes (per character): the per-frame KL is
  dominated by the blank frames and keeps falling while the decoded text stops improving; the CTC term
  asks for the text itself, over every alignment. PP-OCRv5's recogniser pruned to MACs 0.5, 15 minutes on
  this project's 2-core machine: exact lines 95.0% with KL alone, 98.0-99.0% with both over three seeds
  (the epoch chosen by the loss within agreement noise; docs/distill.md).
- map: mean squared error over the teacher's variance (measured once, on the first samples).
- features: the same normalised squared error on intermediate tensors both models have (``features.py``),
  their mean times ``feature_weight``.

The loss over outputs is their sum; with labels instead of a teacher it is cross-entropy on the first.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from onnxprune.train.features import Feature
from onnxprune.train.fidelity import ctc_collapse
from onnxprune.train.kinds import OutputKind

Tensor = torch.Tensor
# A probability of 0 (float32 softmax underflows over thousands of classes) as a finite log.
LOG_FLOOR = 1e-30


def variance_scales(values: Mapping[str, np.ndarray]) -> dict[str, float]:
    """Per tensor, the teacher's variance (floored: a constant map must not divide by zero)."""
    scales = {}
    for name, array in values.items():
        var = float(np.var(array.astype(np.float64))) if array.size else 0.0
        scales[name] = max(var, 1e-8 * max(float(np.mean(np.square(array, dtype=np.float64))), 1e-12))
    return scales


def _log_probs(values: Tensor, kind: OutputKind, temperature: float) -> Tensor:
    logits = torch.log(values.clamp_min(LOG_FLOOR)) if kind.probabilities else values
    return F.log_softmax(logits / temperature, dim=-1)


def student_log_probs(
    student: Tensor, kind: OutputKind, temperature: float = 1.0, logits: Tensor | None = None
) -> Tensor:
    """The student's log-probabilities, one row per sample or frame; from its ``logits`` (its Softmax's
    input) where given."""
    classes = student.shape[-1]
    if logits is not None:
        return F.log_softmax(logits.reshape(-1, classes) / temperature, dim=-1)
    return _log_probs(student.reshape(-1, classes), kind, temperature)


def kl(
    student: Tensor, teacher: Tensor, kind: OutputKind, temperature: float, logits: Tensor | None = None
) -> Tensor:
    """Mean over rows (samples, or frames of every sample) of KL(teacher || student), times T^2; from the
    student's ``logits`` (its Softmax's input) where given."""
    return kl_rows(student_log_probs(student, kind, temperature, logits), teacher, kind, temperature)


def kl_rows(student_rows: Tensor, teacher: Tensor, kind: OutputKind, temperature: float) -> Tensor:
    """``kl`` from the student's log-probabilities (``student_log_probs``)."""
    t = _log_probs(teacher.reshape(-1, student_rows.shape[-1]), kind, temperature)
    return F.kl_div(student_rows, t, log_target=True, reduction="batchmean") * temperature * temperature


def ctc_to_teacher(student_rows: Tensor, teacher: Tensor, blank: int) -> Tensor:
    """Mean over samples of the CTC loss per character of the student's frames (log-probabilities, one row
    per frame) against the teacher's ``[N, T, C]`` greedy decodes: the likelihood of the very text the
    teacher reads, summed over every alignment. A teacher's decode always fits its own frames."""
    count, frames = teacher.shape[0], teacher.shape[1]
    log_probs = student_rows.reshape(count, frames, -1).transpose(0, 1)  # CTC wants [T, N, C]
    decodes = ctc_collapse(teacher.detach().argmax(-1).cpu().numpy(), blank)
    device = student_rows.device
    labels = torch.tensor([c for d in decodes for c in d], dtype=torch.long, device=device)
    lengths = torch.tensor([len(d) for d in decodes], dtype=torch.long, device=device)
    spans = torch.full((count,), frames, dtype=torch.long, device=device)
    return F.ctc_loss(log_probs, labels, spans, lengths, blank=blank, zero_infinity=True)


class DistillLoss:
    """``loss(student, teacher)``, both by tensor name (outputs and features)."""

    def __init__(
        self, kinds: Sequence[OutputKind], scales: Mapping[str, float], temperature: float,
        features: Sequence[Feature] = (), feature_weight: float = 0.0, ctc_weight: float = 0.0,
    ) -> None:  # fmt: skip
        self.kinds, self.scales, self.temperature = list(kinds), dict(scales), temperature
        self.features, self.feature_weight = list(features) if feature_weight else [], feature_weight
        self.ctc_weight = ctc_weight

    @property
    def student_tensors(self) -> list[str]:
        """Intermediate tensors of the student the loss reads: features, and Softmax inputs."""
        return [f.name for f in self.features] + [k.logits for k in self.kinds if k.logits]

    def output_terms(self, student: Mapping[str, Tensor], teacher: Mapping[str, Tensor]) -> dict[str, Tensor]:
        terms = {}
        for kind in self.kinds:
            s, t = student[kind.name], teacher[kind.name]
            if kind.kind == "map":
                terms[kind.name] = F.mse_loss(s, t) / self.scales[kind.name]
                continue
            temperature = self.temperature if kind.kind == "scores" else 1.0
            rows = student_log_probs(s, kind, temperature, student.get(kind.logits or ""))
            terms[kind.name] = kl_rows(rows, t, kind, temperature)
            if kind.kind == "sequence" and self.ctc_weight:
                terms[f"{kind.name} (ctc)"] = self.ctc_weight * ctc_to_teacher(rows, t, kind.ctc_blank)
        return terms

    def feature_term(self, student: Mapping[str, Tensor], teacher: Mapping[str, Tensor]) -> Tensor:
        terms = [F.mse_loss(student[f.name], teacher[f.name]) / self.scales[f.name] for f in self.features]
        return torch.stack(terms).mean() if terms else torch.zeros(())

    def __call__(self, student: Mapping[str, Tensor], teacher: Mapping[str, Tensor]) -> Tensor:
        total = torch.stack(list(self.output_terms(student, teacher).values())).sum()
        if self.features:
            total = total + self.feature_weight * self.feature_term(student, teacher)
        return total


def cross_entropy(student: Mapping[str, Tensor], labels: Tensor, first: str) -> Tensor:
    return F.cross_entropy(student[first], labels)
