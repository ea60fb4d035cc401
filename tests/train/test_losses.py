"""The distillation loss by output kind, and feature terms."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch", reason="the [train] extra (torch) is not installed")

from onnxprune.train.features import Feature  # noqa: E402
from onnxprune.train.kinds import OutputKind  # noqa: E402
from onnxprune.train.losses import DistillLoss, kl, variance_scales  # noqa: E402


def test_kl_on_probabilities_is_kl_on_their_logits() -> None:
    """An exported softmax is turned back into log-probabilities: the same loss as on the logits."""
    s, t = torch.randn(6, 10), torch.randn(6, 10)
    on_logits = kl(s, t, OutputKind("o", "scores"), 4.0)
    on_probs = kl(s.softmax(-1), t.softmax(-1), OutputKind("o", "scores", True), 4.0)
    assert torch.allclose(on_logits, on_probs, atol=1e-6) and on_logits > 0


def test_sequence_kl_is_the_mean_over_frames() -> None:
    s, t = torch.randn(2, 5, 7).softmax(-1), torch.randn(2, 5, 7).softmax(-1)
    kind = OutputKind("rec", "sequence", True)
    per_frame = [kl(s[i, j][None], t[i, j][None], kind, 1.0) for i in range(2) for j in range(5)]
    assert torch.allclose(kl(s, t, kind, 1.0), torch.stack(per_frame).mean(), atol=1e-6)


def test_kl_survives_probabilities_that_underflow_to_zero() -> None:
    p = torch.zeros(2, 4)
    p[:, 0] = 1.0  # the other classes are exactly 0, as float32 softmax makes them over many classes
    value = kl(p, p, OutputKind("o", "scores", True), 4.0)
    assert torch.isfinite(value) and float(value) == pytest.approx(0.0, abs=1e-6)


def test_maps_and_features_are_normalised_by_the_teachers_variance() -> None:
    import numpy as np

    teacher = {
        "map": np.full((4, 2), 3.0) + np.arange(8).reshape(4, 2),
        "f": np.zeros((4, 3)),
        "g": np.ones(1),
    }
    scales = variance_scales(teacher)
    assert scales["map"] == pytest.approx(np.var(teacher["map"]))
    assert scales["f"] > 0 and scales["g"] > 0  # constant tensors: a floor, never zero
    loss = DistillLoss(
        [OutputKind("map", "map")], {"map": 4.0, "f": 2.0}, 1.0, [Feature("f")], feature_weight=0.5
    )
    s = {"map": torch.zeros(4, 2), "f": torch.ones(4, 3)}
    t = {"map": torch.ones(4, 2) * 2, "f": torch.zeros(4, 3)}
    assert float(loss(s, t)) == pytest.approx(4.0 / 4.0 + 0.5 * 1.0 / 2.0)
    assert float(DistillLoss([OutputKind("map", "map")], {"map": 4.0}, 1.0, [Feature("f")], 0.0)(s, t)) == 1.0


def test_frames_are_distilled_at_temperature_one_and_scores_softened() -> None:
    s, t = torch.randn(2, 5, 7).softmax(-1), torch.randn(2, 5, 7).softmax(-1)
    frames = OutputKind("rec", "sequence", True)
    loss = DistillLoss([frames], {}, temperature=4.0)
    assert torch.allclose(loss({"rec": s}, {"rec": t}), kl(s, t, frames, 1.0))
    scores = OutputKind("cls", "scores", True)
    loss = DistillLoss([scores], {}, temperature=4.0)
    assert torch.allclose(loss({"cls": s[:, 0]}, {"cls": t[:, 0]}), kl(s[:, 0], t[:, 0], scores, 4.0))


def test_a_saturated_softmax_passes_gradient_through_its_logits_only() -> None:
    """A pruned recogniser that says blank on every frame with probability 1.0 must still learn."""
    logits = torch.tensor([[[200.0, 0.0, 0.0]]], requires_grad=True)  # one frame: blank, saturated
    probs = logits.softmax(-1)
    teacher = torch.tensor([[[0.1, 0.8, 0.1]]])
    kind = OutputKind("rec", "sequence", True, logits="z")
    through_probs = kl(probs, teacher, kind, 1.0)
    (grad,) = torch.autograd.grad(through_probs, logits, retain_graph=True)
    assert float(grad.abs().max()) == 0.0  # log of a probability that underflowed to 0: no gradient
    through_logits = DistillLoss([kind], {}, 1.0)({"rec": probs, "z": logits}, {"rec": teacher})
    (grad,) = torch.autograd.grad(through_logits, logits)
    assert float(grad[0, 0, 1]) < 0  # raising the teacher's character lowers the loss


def _frames(paths: list[list[int]], classes: int, sure: float = 6.0) -> torch.Tensor:
    """[N, T, C] probabilities whose argmax per frame follows ``paths``."""
    logits = torch.zeros(len(paths), len(paths[0]), classes)
    for n, path in enumerate(paths):
        for t, c in enumerate(path):
            logits[n, t, c] = sure
    return logits.softmax(-1)


@pytest.mark.parametrize("blank", [0, 5])  # PaddleOCR's first class; TensorFlow's last
def test_ctc_to_the_teacher_trains_the_student_to_read_the_teachers_text(blank: int) -> None:
    """Optimised on the CTC term alone, a student that reads other text comes to read the teacher's: the
    labels are the teacher's greedy decodes with its blank dropped, whichever class the blank is."""
    from onnxprune.train.fidelity import ctc_greedy
    from onnxprune.train.losses import ctc_to_teacher

    b = blank
    teacher = _frames([[b, 1, 1, b, 1, 2, b, b], [3, b, b, 4, 4, 4, b, 2]], classes=6)
    logits = torch.zeros(2, 8, 6, requires_grad=True)
    optimiser = torch.optim.Adam([logits], lr=0.1)
    for _ in range(200):
        optimiser.zero_grad()
        ctc_to_teacher(logits.log_softmax(-1).reshape(16, 6), teacher, blank).backward()
        optimiser.step()
    student = logits.detach().softmax(-1).numpy()
    assert ctc_greedy(student, blank) == ctc_greedy(teacher.numpy(), blank) == [(1, 1, 2), (3, 4, 2)]


def test_the_sequence_loss_adds_ctc_by_its_weight() -> None:
    teacher = _frames([[0, 1, 0, 2, 2, 0]], classes=4)
    student = _frames([[0, 1, 0, 0, 0, 0]], classes=4, sure=2.0)  # reads "1", not "1 2"
    kind = OutputKind("rec", "sequence", True, blank=0)
    kl_only = DistillLoss([kind], {}, 1.0).output_terms({"rec": student}, {"rec": teacher})
    both = DistillLoss([kind], {}, 1.0, ctc_weight=0.5).output_terms({"rec": student}, {"rec": teacher})
    assert list(kl_only) == ["rec"] and list(both) == ["rec", "rec (ctc)"]
    assert torch.allclose(both["rec"], kl_only["rec"]) and float(both["rec (ctc)"]) > 0
    scores = OutputKind("cls", "scores", True)
    loss = DistillLoss([scores], {}, 1.0, ctc_weight=1.0)
    terms = loss.output_terms({"cls": student[0]}, {"cls": teacher[0]})
    assert list(terms) == ["cls"]  # class scores have no decode


def test_a_teacher_that_reads_nothing_asks_for_blanks() -> None:
    from onnxprune.train.losses import ctc_to_teacher

    teacher = _frames([[0] * 5, [0] * 5], classes=4)  # both samples read as empty text
    logits = torch.zeros(10, 4, requires_grad=True)
    loss = ctc_to_teacher(logits.log_softmax(-1), teacher, 0)
    loss.backward()
    # -sum over the 5 frames of log p(blank), uniform over 4 classes
    assert float(loss.detach()) == pytest.approx(5 * float(torch.log(torch.tensor(4.0))), rel=1e-5)
    assert float(logits.grad[:, 0].max()) < 0 < float(logits.grad[:, 1:].min())  # towards blank everywhere
