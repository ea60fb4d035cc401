"""Fidelity per output kind: agreement above chance catches a collapse that plain agreement and cosine
hide (a recognizer of blanks), and damage is 0 only for identical outputs."""

from __future__ import annotations

import numpy as np
import pytest

from onnxprune.fidelity import CHUNK_VALUES, kappa, measure, output_kind


def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def _recognizer_frames(rng: np.random.Generator, n: int = 32, t: int = 40, k: int = 30) -> np.ndarray:
    """CTC-like [N, T, K] probabilities: about three quarters of the frames are the blank (class 0)."""
    logits = rng.standard_normal((n, t, k))
    labels = np.where(rng.random((n, t)) < 0.77, 0, rng.integers(1, k, (n, t)))
    np.put_along_axis(logits, labels[..., None], 8.0, axis=-1)
    return _softmax(logits).astype(np.float32)


def test_a_recognizer_of_blanks_keeps_no_fidelity_though_most_frames_agree() -> None:
    original = _recognizer_frames(np.random.default_rng(0))
    blanks = np.zeros_like(original)
    blanks[..., 0] = 1.0
    found = measure("ctc", original, blanks)
    assert found.kind == "sequence"
    assert found.agreement == pytest.approx(0.77, abs=0.03), "most frames are blank in the original too"
    assert abs(found.fidelity) < 0.02 and found.damage > 1.0


def test_a_faithful_recognizer_keeps_fidelity_and_an_identical_one_has_no_damage() -> None:
    rng = np.random.default_rng(1)
    original = _recognizer_frames(rng)
    noisy = _softmax(np.log(original) + 0.3 * rng.standard_normal(original.shape)).astype(np.float32)
    assert measure("ctc", original, noisy).fidelity > 0.9
    same = measure("ctc", original, original.copy())
    assert same.fidelity == 1.0 and same.damage == pytest.approx(0.0, abs=1e-9)


def test_a_classifier_that_always_answers_one_class_scores_zero() -> None:
    rng = np.random.default_rng(2)
    logits = rng.standard_normal((200, 2)).astype(np.float32)
    constant = np.tile(np.array([[3.0, -3.0]], np.float32), (200, 1))
    found = measure("cls", logits, constant)
    assert found.kind == "classes" and found.agreement == pytest.approx(0.5, abs=0.1)
    assert found.fidelity == pytest.approx(0.0, abs=1e-9)
    assert measure("cls", logits, logits + 0.01).fidelity > 0.95


def test_kappa_is_plain_agreement_where_the_original_never_varies() -> None:
    a = np.zeros(10, int)
    assert kappa(a, a) == 1.0
    assert kappa(a, np.array([0] * 9 + [1])) == pytest.approx(0.9)


def test_maps_are_judged_by_cosine_and_relative_error() -> None:
    rng = np.random.default_rng(3)
    a = rng.random((2, 1, 16, 16)).astype(np.float32)
    assert output_kind(a) == "map"
    found = measure("map", a, a * 0.5)
    assert found.fidelity == pytest.approx(1.0) and found.damage == pytest.approx(0.25, rel=1e-6)
    assert measure("map", a, np.zeros_like(a)).fidelity == 0.0


def test_logits_of_a_sequence_are_a_map_and_shapes_must_agree() -> None:
    rng = np.random.default_rng(4)
    logits = rng.standard_normal((2, 5, 7)).astype(np.float32)  # no softmax in the graph: not frames
    assert output_kind(logits) == "map"
    with pytest.raises(ValueError, match="shapes differ"):
        measure("y", logits, logits[:1])


def test_a_confident_classifiers_damage_is_read_on_its_logits_not_its_saturated_softmax() -> None:
    """Probabilities of 1 - 1e-7 barely move when the logits halve; the damage must still tell them apart."""
    rng = np.random.default_rng(5)
    logits = rng.choice([-1.0, 1.0], (64, 1)) * np.array([[8.0, -8.0]]) + 0.3 * rng.standard_normal((64, 2))
    original = _softmax(logits).astype(np.float32)
    slightly = measure("cls", original, _softmax(0.9 * logits).astype(np.float32))
    halved = measure("cls", original, _softmax(0.5 * logits).astype(np.float32))
    assert slightly.fidelity == halved.fidelity == 1.0, "no label changes"
    assert slightly.damage == pytest.approx(0.01, rel=0.05) and halved.damage == pytest.approx(0.25, rel=0.05)
    raw = measure("cls", logits.astype(np.float32), (0.5 * logits).astype(np.float32))
    assert raw.damage == pytest.approx(0.25, rel=1e-4), "logits themselves: the same measure"


def test_measures_do_not_depend_on_the_blas_thread_count() -> None:
    """A Ray worker runs BLAS on one thread (OMP_NUM_THREADS=1); a threaded BLAS dot product sums in another
    order there, and a sensitivity scan on Ray differed from one process's in the last bits. The measures
    of a large map must be the same bit for bit with BLAS on one thread and on two."""
    import json
    import os
    import subprocess
    import sys

    code = (
        "import json, numpy as np\n"
        "from onnxprune import fidelity\n"
        "rng = np.random.default_rng(0)\n"
        "a = rng.normal(size=2_000_000)\n"
        "b = a + 0.01 * rng.normal(size=a.shape)\n"
        "print(json.dumps([repr(fidelity._cosine(a, b)), repr(fidelity._relative_error(a, b))]))\n"
    )

    def run(threads: str) -> list[str]:
        env = {
            **os.environ,
            "OMP_NUM_THREADS": threads,
            "OPENBLAS_NUM_THREADS": threads,
            "MKL_NUM_THREADS": threads,
        }
        done = subprocess.run(
            [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
        )
        return json.loads(done.stdout)

    assert run("1") == run("2")


def test_class_scores_are_measured_in_chunks_same_values_bounded_memory() -> None:
    """A recogniser's held-out outputs are hundreds of MB; measured whole in float64 with its temporaries
    they took 12x that. In chunks: the same damage as one float64 pass, and memory that does not grow
    with the outputs."""
    import tracemalloc

    rng = np.random.default_rng(4)
    logits = 3.0 * rng.standard_normal((20, 40, 8000))
    original = _softmax(logits).astype(np.float32)
    pruned = _softmax(logits + 0.5 * rng.standard_normal(logits.shape)).astype(np.float32)
    p = np.clip(original.reshape(-1, 8000).astype(np.float64), 1e-12, None)
    q = np.clip(pruned.reshape(-1, 8000).astype(np.float64), 1e-12, None)
    p, q = p / p.sum(1, keepdims=True), q / q.sum(1, keepdims=True)
    whole_kl = float(np.mean(np.sum(p * (np.log(p) - np.log(q)), axis=1)))
    tracemalloc.start()
    try:
        found = measure("ctc", original, pruned)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert found.damage == pytest.approx(whole_kl, rel=1e-9)
    # A few chunk-sized float64 temporaries, whatever the outputs' size (whole: ~12 x 26 MB here).
    assert peak < 8 * 8 * CHUNK_VALUES, f"{peak / 1e6:.0f} MB for {original.nbytes / 1e6:.0f} MB of outputs"
    scores = logits.reshape(-1, 40 * 200).astype(np.float32)  # 800 x 8000 logits: classes, two chunks
    centred = scores.astype(np.float64) - scores.astype(np.float64).mean(1, keepdims=True)
    moved = scores + 0.1 * rng.standard_normal(scores.shape).astype(np.float32)
    moved_centred = moved.astype(np.float64) - moved.astype(np.float64).mean(1, keepdims=True)
    want = float(np.sum((centred - moved_centred) ** 2) / np.sum(centred**2))
    assert measure("cls", scores, moved).damage == pytest.approx(want, rel=1e-9)
