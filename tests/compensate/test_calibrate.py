"""calibrate(): the order layers are fitted in. Each depth is its own wave, so a layer downstream of a
refitted one is fitted on the inputs that refit produces, not on the ones from before it."""

from __future__ import annotations

import numpy as np

from onnxprune.compensate.calibrate import CalibOptions, calibrate

from ._models import conv, model, run, samples


def _mixed(rng: np.random.Generator, kept: np.ndarray) -> np.ndarray:
    """Filters whose second half are linear combinations of the first (``kept``) half."""
    mix = rng.standard_normal((kept.shape[0], kept.shape[0]))
    return np.concatenate([kept, np.einsum("jc,c...->j...", mix, kept)])


def _chain(seed: int = 0):
    """x -> A (4 -> 8, 1x1) -> t1 -> B (8 -> 8, 3x3) -> t2 -> C (8 -> 5, 3x3, bias) -> y. In t1 and t2 the
    channels 4..7 are linear combinations of 0..3, so once B is refitted to give back t2's kept channels
    exactly, C can be refitted to give back y exactly; pruned: t1 and t2 keep 0..3."""
    rng = np.random.default_rng(seed)
    a = _mixed(rng, rng.standard_normal((4, 4, 1, 1)))
    b = _mixed(rng, rng.standard_normal((4, 8, 3, 3)))
    c, bias = rng.standard_normal((5, 8, 3, 3)), rng.standard_normal(5)
    nodes = [conv("A", "x", "wa", "t1", pad=0), conv("B", "t1", "wb", "t2"), conv("C", "t2", "wc", "y", "bc")]
    original = model(nodes, {"wa": a, "wb": b, "wc": c, "bc": bias})
    pruned = model(nodes, {"wa": a[:4], "wb": b[:4, :4], "wc": c[:, :4], "bc": bias})
    return original, pruned, {"t1": np.arange(4), "t2": np.arange(4)}


def _error(options: CalibOptions) -> tuple[float, dict]:
    original, pruned, kept = _chain()
    done = calibrate(original, pruned, kept, samples(60), options)
    feed = samples(8, seed=1)
    want, got = run(original, feed)["y"], run(done.model, feed)["y"]
    return float(np.abs(got - want).max() / np.abs(want).max()), done.report


def test_a_layer_after_a_refitted_one_is_fitted_on_its_new_inputs() -> None:
    exact, report = _error(CalibOptions(ridge=1e-10, positions=36))
    assert report["waves"] == 2 and [x["applied"] for x in report["layers"]] == ["refit", "refit"]
    assert exact < 1e-4
    stale, banded = _error(CalibOptions(ridge=1e-10, positions=36, waves=1))
    assert banded["waves"] == 1
    assert stale > 1e-2  # C fitted on B's output from before B's refit: a fit for inputs that are gone
    original, pruned, _ = _chain()
    feed = samples(8, seed=1)
    moved = np.abs(run(pruned, feed)["y"] - run(original, feed)["y"]).max()
    assert moved > 0.1 * np.abs(run(original, feed)["y"]).max()  # the pruning itself is far from free
