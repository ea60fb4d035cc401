"""Held-out fidelity measures per output kind (no torch)."""

from __future__ import annotations

import numpy as np

from onnxprune.train.fidelity import agreement, ctc_greedy, fidelity, headline, improves, noise
from onnxprune.train.kinds import OutputKind


def one_hot(classes: list[list[int]], width: int = 5) -> np.ndarray:
    return np.eye(width, dtype=np.float32)[np.array(classes)]


def test_ctc_greedy_collapses_repeats_and_drops_blanks() -> None:
    frames = one_hot([[0, 3, 3, 0, 3, 1, 1, 0], [2, 2, 2, 2, 2, 2, 2, 2]])
    assert ctc_greedy(frames) == [(3, 3, 1), (2,)]


def test_sequence_measures_frames_and_whole_decodes() -> None:
    teacher = one_hot([[0, 3, 3, 0, 1], [2, 0, 2, 0, 0]])
    student = one_hot([[0, 3, 0, 0, 1], [2, 2, 2, 0, 0]])  # one frame off each; decodes: same, not same
    m = fidelity([OutputKind("rec", "sequence", True)], {"rec": teacher}, {"rec": student})["rec"]
    assert m == {"frame_agreement": 0.8, "decode_match": 0.5}


def test_scores_and_maps() -> None:
    kinds = [OutputKind("cls", "scores"), OutputKind("map", "map")]
    teacher = {
        "cls": np.array([[1.0, 0.0], [0.0, 1.0]]),
        "map": np.ones((2, 1, 2, 2)) + np.arange(8).reshape(2, 1, 2, 2),
    }
    student = {"cls": np.array([[2.0, 0.0], [3.0, 1.0]]), "map": teacher["map"] * 2}
    m = fidelity(kinds, teacher, student)
    assert m["cls"] == {"top1_agreement": 0.5}
    assert abs(m["map"]["cosine"] - 1.0) < 1e-12  # the same direction
    assert m["map"]["relative_mse"] > 1  # but twice the values
    assert headline(m) == "cls top-1 50.00%, map cosine 1.0000"


def test_an_improvement_is_worse_in_neither_agreement_nor_loss() -> None:
    """A lower distillation loss with fewer exact decodes is no improvement (a CTC recogniser's KL fell
    threefold while its decodes fell); nor more agreement at an exploding loss (a diverged model)."""
    fewer = {"out": {"frame_agreement": 0.96, "decode_match": 0.77}}
    more = {"out": {"frame_agreement": 0.95, "decode_match": 0.92}}
    assert agreement(more) == 0.92 and agreement({"c": {"top1_agreement": 0.5}, **more}) == 0.71
    assert agreement({"m": {"cosine": 0.9, "relative_mse": 0.1}}) is None
    assert not improves((agreement(fewer), 0.09), (agreement(more), 0.28))
    assert not improves((1.0, 5e34), (0.7, 0.03))
    assert improves((0.92, 0.10), (0.92, 0.28)) and improves((0.95, 0.28), (0.92, 0.28))
    assert not improves((0.92, 0.28), (0.92, 0.28))
    assert improves((None, 0.1), (None, 0.2)) and not improves((None, 0.3), (None, 0.2))
    assert improves((0.5, 9.0), None)
    assert not improves((1.0, float("nan")), None) and not improves((1.0, float("inf")), (0.0, 1.0))


def test_agreement_within_held_out_noise_of_the_best_is_a_tie_the_loss_decides() -> None:
    """The PP-OCRv5 recogniser with seed 1, 100 held-out lines: epoch 1 decoded 98 at 0.116, epochs 7-10
    97 at 0.068-0.072. Three binomial errors at 98% are 4.2 lines: the loss chooses among 94-98 and 93 is
    below. Without a count, no tie: the first 98 stays."""
    history = [(0.87, 0.235), (0.98, 0.116), (0.93, 0.103), (0.96, 0.092), (0.97, 0.0715), (0.97, 0.0675),
               (0.97, 0.0678), (0.93, 0.05)]  # fmt: skip

    def chosen(count: int) -> int:
        kept, top = 0, history[0][0]
        for epoch, result in enumerate(history[1:], 1):
            top = max(top, result[0])
            kept = epoch if improves(result, history[kept], top, count) else kept
        return kept

    assert chosen(100) == 5 and chosen(0) == 1
    assert abs(noise(0.98, 100) - 0.042) < 1e-3 and noise(1.0, 100) == 0.01 and noise(0.5, 0) == 0.0
    assert improves((0.94, 0.01), (0.98, 0.116), 0.98, 100)  # four lines below the best: luck
    assert not improves((0.93, 0.01), (0.98, 0.116), 0.98, 100)  # five: not
    assert not improves((0.93, 0.05), (0.97, 0.06), 0.99, 100)  # below what another epoch reached
    assert not improves((0.99, 0.2), (0.98, 0.1), 0.99, 100)  # never a worse loss
    assert not improves((1.0, 5e34), (1.0, 0.03), 1.0, 10)
    assert improves((88 / 90, 0.055), (89 / 90, 0.060), 89 / 90, 90)  # one sample below, as floats give it
