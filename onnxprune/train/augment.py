"""Data augmentation for training on few samples: shifts, zooms and brightness of image inputs.

With 512 calibration images, two epochs of distillation see each image twice; moving, zooming and
brightening each a little (differently each step) shows the student more of the teacher's function without
more data, and the teacher answers for the changed image too, so no target goes stale. Every draw comes from
(seed, epoch, step) alone, so a resumed run repeats an uninterrupted one.

- shift: each sample moved by up to ``SHIFT`` pixels each way, the border replicated (the background of a
  normalised image is not 0).
- scale: each sample zoomed about its centre by a factor in ``1 +- SCALE`` (bilinear, border replicated).
- brightness: each sample's values scaled by ``1 +- GAIN`` and offset by ``+- OFFSET`` of its standard
  deviation: in the normalised space the model sees, the effect of a brighter or dimmer, more or less
  contrasted picture.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

SHIFT = 2  # pixels, each way, on each of the last two axes
SCALE = 0.1
GAIN, OFFSET = 0.1, 0.1
AUGMENTS = ("shift", "scale", "brightness")


def image_inputs(inputs: list[torch.Tensor]) -> list[bool]:
    """Which inputs look like images: floating point [N, C, H, W]."""
    return [x.dim() == 4 and x.is_floating_point() for x in inputs]


def apply(kinds: tuple[str, ...], inputs: list[torch.Tensor], rng: np.random.Generator) -> list[torch.Tensor]:
    """The augmentations named in ``kinds``, in the order of ``AUGMENTS``."""
    for kind in AUGMENTS:
        if kind in kinds:
            inputs = {"shift": shift, "scale": scale, "brightness": brightness}[kind](inputs, rng)
    return inputs


def shift(inputs: list[torch.Tensor], rng: np.random.Generator, shift: int = SHIFT) -> list[torch.Tensor]:
    """Every image input of the batch moved by one random (dy, dx) per sample, the same for all inputs."""
    images = image_inputs(inputs)
    if not any(images) or shift <= 0:
        return inputs
    count = inputs[images.index(True)].shape[0]
    moves = rng.integers(-shift, shift + 1, size=(count, 2))
    return [
        _shift_batch(x, moves, shift) if is_image else x for x, is_image in zip(inputs, images, strict=True)
    ]


def _shift_batch(x: torch.Tensor, moves: np.ndarray, pad: int) -> torch.Tensor:
    height, width = x.shape[-2:]
    padded = F.pad(x, (pad, pad, pad, pad), mode="replicate")
    rows = [
        padded[i, :, pad - dy : pad - dy + height, pad - dx : pad - dx + width]
        for i, (dy, dx) in enumerate(moves.tolist())
    ]
    return torch.stack(rows)


def scale(inputs: list[torch.Tensor], rng: np.random.Generator, amount: float = SCALE) -> list[torch.Tensor]:
    """Every image input zoomed about its centre by one random factor per sample."""
    images = image_inputs(inputs)
    if not any(images):
        return inputs
    count = inputs[images.index(True)].shape[0]
    factors = rng.uniform(1 - amount, 1 + amount, size=count)
    out = []
    for x, is_image in zip(inputs, images, strict=True):
        if not is_image:
            out.append(x)
            continue
        theta = torch.zeros(count, 2, 3, dtype=x.dtype, device=x.device)
        theta[:, 0, 0] = theta[:, 1, 1] = torch.from_numpy(1.0 / factors).to(x)
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        out.append(F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False))
    return out


def brightness(
    inputs: list[torch.Tensor], rng: np.random.Generator, gain: float = GAIN, offset: float = OFFSET
) -> list[torch.Tensor]:
    """Every image input times one random gain per sample, plus one random offset (in its own std)."""
    images = image_inputs(inputs)
    if not any(images):
        return inputs
    count = inputs[images.index(True)].shape[0]
    gains, offsets = rng.uniform(1 - gain, 1 + gain, count), rng.uniform(-offset, offset, count)
    out = []
    for x, is_image in zip(inputs, images, strict=True):
        if not is_image:
            out.append(x)
            continue
        spread = x.detach().reshape(count, -1).std(dim=1).reshape(count, 1, 1, 1)
        g = torch.from_numpy(gains).to(x).reshape(count, 1, 1, 1)
        b = torch.from_numpy(offsets).to(x).reshape(count, 1, 1, 1)
        out.append(x * g + b * spread)
    return out
