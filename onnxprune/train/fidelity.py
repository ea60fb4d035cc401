"""How close the student is to the teacher on held-out samples, per output kind (numpy, no torch).

- scores: top-1 agreement (the share of samples whose argmax is the teacher's).
- sequence: per-frame argmax agreement, and the share of samples whose greedy CTC decode (argmax per frame,
  repeats collapsed, blanks dropped) is exactly the teacher's. The blank is the class the teacher picks in
  most frames (``kinds.py``), class 0 (PaddleOCR's) where it is not known.
- map: cosine similarity over the whole output, and the mean squared error over the teacher's variance.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np

from onnxprune.train.kinds import OutputKind

CTC_BLANK = 0


def ctc_greedy(frames: np.ndarray, blank: int = CTC_BLANK) -> list[tuple[int, ...]]:
    """Greedy CTC decodes of ``[N, T, C]`` scores: per sample the class sequence."""
    return ctc_collapse(frames.argmax(-1), blank)


def ctc_collapse(best: np.ndarray, blank: int = CTC_BLANK) -> list[tuple[int, ...]]:
    """``[N, T]`` classes, one per frame, as CTC reads them: repeats collapsed, blanks dropped."""
    decodes = []
    for row in best:
        keep = np.ones(len(row), bool)
        keep[1:] = row[1:] != row[:-1]
        decodes.append(tuple(int(c) for c in row[keep & (row != blank)]))
    return decodes


def measure(kind: OutputKind, teacher: np.ndarray, student: np.ndarray) -> dict[str, float]:
    if kind.kind == "scores":
        return {"top1_agreement": float((teacher.argmax(-1) == student.argmax(-1)).mean())}
    if kind.kind == "sequence":
        frames = float((teacher.argmax(-1) == student.argmax(-1)).mean())
        blank = CTC_BLANK if kind.blank is None else kind.blank
        same = [a == b for a, b in zip(ctc_greedy(teacher, blank), ctc_greedy(student, blank), strict=True)]
        return {"frame_agreement": frames, "decode_match": float(np.mean(same))}
    a, b = teacher.astype(np.float64).ravel(), student.astype(np.float64).ravel()
    norms = float(np.linalg.norm(a) * np.linalg.norm(b))
    cosine = float(a @ b / norms) if norms else float(np.array_equal(a, b))
    var = max(float(np.var(a)), 1e-12)
    return {"cosine": cosine, "relative_mse": float(np.mean((a - b) ** 2) / var)}


def fidelity(
    kinds: Sequence[OutputKind], teacher: Mapping[str, np.ndarray], student: Mapping[str, np.ndarray]
) -> dict[str, dict[str, float]]:
    """Per output name, its measures."""
    return {k.name: measure(k, teacher[k.name], student[k.name]) for k in kinds}


def agreement(measures: Mapping[str, Mapping[str, float]]) -> float | None:
    """What the user's task sees of a held-out result: the mean over outputs of top-1 agreement (scores)
    and exact greedy decodes (sequences); None where no output has one (maps)."""
    values = [m.get("decode_match", m.get("top1_agreement")) for m in measures.values()]
    present = [v for v in values if v is not None]
    return float(np.mean(present)) if present else None


def improves(new: tuple[float | None, float], old: tuple[float | None, float] | None) -> bool:
    """Whether a held-out result ``(agreement, loss)`` is better than ``old``: neither worse and one better.

    The loss alone misleads on CTC recognisers: distilling the PP-OCRv5 recogniser lowered its held-out
    per-frame KL threefold while its exact decodes fell from 92% to 77% (a decode turns on a few character
    frames, which an average over every frame of every sample barely weighs). Agreement alone misleads on
    a few held-out samples of one class: a diverged model (loss 1e34) agreed on all ten. A NaN or infinite
    loss never improves.
    """
    if not math.isfinite(new[1]):
        return False
    if old is None:
        return True
    (agree, loss), (old_agree, old_loss) = new, old
    if agree is None or old_agree is None:
        return loss < old_loss
    return agree >= old_agree and loss <= old_loss and (agree > old_agree or loss < old_loss)


def headline(measures: Mapping[str, Mapping[str, float]]) -> str:
    """One short text for a progress line, each output's measures in a few words."""
    parts = []
    for name, m in measures.items():
        if "top1_agreement" in m:
            parts.append(f"{name} top-1 {m['top1_agreement']:.2%}")
        elif "frame_agreement" in m:
            parts.append(f"{name} frames {m['frame_agreement']:.2%} decodes {m['decode_match']:.2%}")
        else:
            parts.append(f"{name} cosine {m['cosine']:.4f}")
    return ", ".join(parts)
