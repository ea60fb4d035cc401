"""Zoom and brightness augmentation of image inputs (shifts: tests/test_train_features.py)."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="the [train] extra (torch) is not installed")

from onnxprune.train import augment  # noqa: E402
from onnxprune.train.options import augments  # noqa: E402


def test_scale_zooms_about_the_centre_and_leaves_other_inputs() -> None:
    x = torch.linspace(-1, 1, 9).reshape(1, 1, 1, 9).expand(2, 3, 9, 9).contiguous()
    ids = torch.arange(2)
    (zoomed, same) = augment.scale([x, ids], np.random.default_rng(0), amount=0.1)
    assert same is ids and zoomed.shape == x.shape
    factors = np.random.default_rng(0).uniform(0.9, 1.1, size=2)
    for i, f in enumerate(
        factors
    ):  # a horizontal ramp zoomed by f is the ramp divided by f, clamped at the border
        want = torch.clamp(x[i] / float(f), -1, 1)
        assert torch.allclose(zoomed[i, :, 4, 2:7], want[:, 4, 2:7], atol=1e-5)
    assert not torch.equal(zoomed, x)


def test_brightness_is_a_gain_and_an_offset_per_sample() -> None:
    x = torch.randn(4, 3, 6, 6)
    out = augment.brightness([x], np.random.default_rng(1))[0]
    rng = np.random.default_rng(1)
    gains, offsets = rng.uniform(0.9, 1.1, 4), rng.uniform(-0.1, 0.1, 4)
    for i in range(4):
        want = x[i] * float(gains[i]) + float(offsets[i]) * x[i].std()
        assert torch.allclose(out[i], want, atol=1e-5)


def test_apply_repeats_from_the_generator_alone() -> None:
    x = torch.randn(3, 1, 8, 8)
    one = augment.apply(augment.AUGMENTS, [x], np.random.default_rng([0, 1, 1]))[0]
    two = augment.apply(augment.AUGMENTS, [x], np.random.default_rng([0, 1, 1]))[0]
    assert torch.equal(one, two) and not torch.equal(one, x)
    assert augment.apply((), [x], np.random.default_rng(0))[0] is x


def test_augment_option_words() -> None:
    assert augments("auto", teacher=True) == ("shift", "scale", "brightness")
    assert augments("auto", teacher=False) == ()  # labels may not survive a shift
    assert augments("scale,shift", teacher=False) == ("scale", "shift")
    assert augments("none", teacher=True) == ()
