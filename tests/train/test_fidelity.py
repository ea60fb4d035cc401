"""Held-out fidelity measures per output kind (no torch)."""

from __future__ import annotations

import numpy as np

from onnxprune.train.fidelity import ctc_greedy, fidelity, headline
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
