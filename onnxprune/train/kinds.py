"""What each model output is, for the distillation loss and the held-out fidelity measures (no torch here).

- ``scores``: ``[N, C]`` with ``C >= 2``: class scores. Loss: KL divergence of the softened distributions.
- ``sequence``: ``[N, T, C]`` whose rows along ``C`` are probability distributions (a CTC recogniser's
  softmax output, PP-OCR rec's ``[N, 40, 18385]``). Loss: KL per frame, averaged over frames, and CTC
  against the teacher's greedy decodes; the blank is the class the teacher picks most often.
- ``map``: anything else (a DB probability map ``[N, 1, H, W]``, YOLO's ``[N, 84, 8400]`` boxes and scores,
  embeddings). Loss: mean squared error divided by the teacher's variance, so outputs (and features) of
  different scales weigh alike.

Scores and sequences may come as logits or as probabilities (an exported softmax): probabilities are
recognised (non-negative, rows summing to 1) and turned back into log-probabilities, which softmax maps to
the same distribution, so the temperature softens both the same way.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import onnx

from onnxprune.errors import UsageError
from onnxprune.fidelity import is_distribution

KINDS = ("scores", "sequence", "map")
CTC_BLANK = 0  # PaddleOCR's blank: the one assumed where the teacher's outputs did not say


@dataclass(frozen=True)
class OutputKind:
    name: str
    kind: str  # one of KINDS
    probabilities: bool = False  # scores/sequence given as probabilities rather than logits
    # The student's tensor its Softmax normalises, where the output is a Softmax over the last axis: the loss
    # reads it, since a saturated softmax (a pruned model's all-blank frames) has probabilities of exactly 0
    # and 1, whose logarithm passes no gradient back.
    logits: str | None = None
    # sequence: the CTC blank, the class the teacher picks in most frames (a CTC head emits it between
    # characters and over the background, and a text line has fewer characters than frames).
    blank: int | None = None

    @property
    def ctc_blank(self) -> int:
        """The blank a CTC decode of this output drops."""
        return CTC_BLANK if self.blank is None else self.blank

    def describe(self) -> str:
        given = " (probabilities)" if self.probabilities else ""
        blank = f", blank {self.blank}" if self.blank is not None else ""
        return f"{self.name}: {self.kind}{given}{blank}"


def output_kind(name: str, values: np.ndarray) -> OutputKind:
    """The kind of one output from the teacher's values on a few samples (batch axis first)."""
    if values.dtype.kind != "f":
        return OutputKind(name, "map")
    if values.ndim == 2 and values.shape[1] >= 2:
        return OutputKind(name, "scores", is_distribution(values))
    if values.ndim == 3 and values.shape[2] >= 2 and is_distribution(values):
        return OutputKind(name, "sequence", True, blank=most_picked(values))
    return OutputKind(name, "map")


def most_picked(frames: np.ndarray) -> int:
    """The class that is the argmax of most frames of ``[N, T, C]``."""
    picks = frames.reshape(-1, frames.shape[-1]).argmax(-1)
    return int(np.bincount(picks, minlength=frames.shape[-1]).argmax())


def output_kinds(outputs: Mapping[str, np.ndarray], distill: str = "auto") -> list[OutputKind]:
    """Every output's kind; ``distill`` ``kl`` insists on scores or sequences, ``mse`` treats all as maps."""
    kinds = [output_kind(name, values) for name, values in outputs.items()]
    if distill == "mse":
        return [OutputKind(k.name, "map") for k in kinds]
    if distill == "kl":
        maps = [f"{k.name} {list(outputs[k.name].shape)}" for k in kinds if k.kind == "map"]
        if maps:
            raise UsageError(
                "--distill kl needs class scores [batch, classes] or per-frame distributions "
                f"[batch, frames, classes] (softmax rows); not {', '.join(maps)}"
            )
    return kinds


def with_logits(
    kinds: list[OutputKind], model: onnx.ModelProto, ranks: Mapping[str, int]
) -> list[OutputKind]:
    """``kinds`` with ``logits`` set where ``model`` computes the output with a Softmax over its last axis."""
    producers = {out: node for node in model.graph.node for out in node.output}
    found = []
    for kind in kinds:
        node = producers.get(kind.name)
        if (
            kind.kind != "map"
            and node is not None
            and node.op_type == "Softmax"
            and node.domain in ("", "ai.onnx")
        ):
            axis = next((a.i for a in node.attribute if a.name == "axis"), -1 if _opset(model) >= 13 else 1)
            if (
                axis % ranks[kind.name] == ranks[kind.name] - 1
            ):  # before opset 13 too: flattened from the last
                kind = dataclasses.replace(kind, logits=node.input[0])
        found.append(kind)
    return found


def _opset(model: onnx.ModelProto) -> int:
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 13)
