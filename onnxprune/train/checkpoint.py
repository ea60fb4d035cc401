"""Checkpoints: module and optimiser state, history and the best held-out state so far, after every epoch.

Written atomically through the project's one writer (``files.write_atomically``): Ctrl-C mid-save leaves
the last checkpoint whole. A checkpoint names the shapes of every trained tensor, so ``--resume`` refuses
one written for another model.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from onnxprune.errors import ModelLoadError, UsageError, first_line
from onnxprune.files import write_atomically
from onnxprune.train.torchgraph import OnnxModule

FORMAT = 2


def _fingerprint(module: OnnxModule) -> dict[str, list[int]]:
    return {name: list(module.tensor(name).shape) for name in sorted(module.roles)}


def save_checkpoint(
    path: Path, module: OnnxModule, optimizer: torch.optim.Optimizer, epoch: int, history: Any,
    best: dict[str, Any] | None = None,
) -> None:  # fmt: skip
    payload = {
        "format": FORMAT,
        "epoch": epoch,
        "model": module.state_dict(),
        "optimizer": optimizer.state_dict(),
        "fingerprint": _fingerprint(module),
        "history": history.epochs,
        "best": best,
        "rng": torch.get_rng_state(),  # for Dropout, the one op here that draws random numbers
    }
    write_atomically(path, lambda handle: torch.save(payload, handle))


def load_checkpoint(
    path: Path, module: OnnxModule, optimizer: torch.optim.Optimizer
) -> tuple[int, list[dict[str, Any]], dict[str, Any] | None]:
    """Restore module and optimiser; returns the epochs already done, their history and the best state."""
    if not path.is_file():
        raise ModelLoadError(f"--resume: checkpoint {path} not found")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise ModelLoadError(f"--resume: cannot read checkpoint {path}: {first_line(err)}") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise ModelLoadError(f"--resume: {path} is not an onnxprune training checkpoint")
    if payload["fingerprint"] != _fingerprint(module):
        raise UsageError(f"--resume: checkpoint {path} was written for another model")
    module.load_state_dict(payload["model"])
    optimizer.load_state_dict(payload["optimizer"])
    torch.set_rng_state(payload["rng"])
    return int(payload["epoch"]), list(payload["history"]), payload.get("best")
