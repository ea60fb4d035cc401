"""Data augmentation for training on few samples: random shifts of image inputs.

With 512 calibration images, two epochs of distillation see each image twice; shifting each by up to
``SHIFT`` pixels (a different shift each epoch) shows the student more of the teacher's function without
more data. Shifts pad by replicating the border (the background of a normalised image is not 0), and
they are drawn from (seed, epoch, step) alone, so a resumed run repeats an uninterrupted one.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

SHIFT = 2  # pixels, each way, on each of the last two axes


def image_inputs(inputs: list[torch.Tensor]) -> list[bool]:
    """Which inputs look like images: floating point [N, C, H, W]."""
    return [x.dim() == 4 and x.is_floating_point() for x in inputs]


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
