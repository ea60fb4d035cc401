"""The training loop: losses, the L1 subgradient on BN gammas, evaluation, checkpoints and resuming.

One epoch is a seeded permutation of the samples (the permutation depends on the seed and the epoch only,
so a resumed run sees the batches an uninterrupted one would). A checkpoint (module state, optimiser state,
history) is written atomically after every epoch; an interruption leaves the last one in place.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch
import torch.nn.functional as F

from onnxprune.errors import ModelLoadError, UsageError, first_line
from onnxprune.files import write_atomically
from onnxprune.train import augment
from onnxprune.train.options import SPARSE_GAMMA, TrainOptions
from onnxprune.train.torchgraph import OnnxModule

Batch = dict[str, np.ndarray]
Loss = Callable[[tuple[torch.Tensor, ...], dict[str, torch.Tensor]], torch.Tensor]
StepHook = Callable[[int, int, float], None]  # (epoch, step, loss)
EpochHook = Callable[[dict[str, Any]], None]  # the epoch's history record
CHECKPOINT_FORMAT = 1


@dataclass
class Targets:
    """What the loss compares the outputs with: labels (cross-entropy) or teacher outputs (distillation)."""

    labels: np.ndarray | None = None
    teacher: dict[str, np.ndarray] | None = None  # by output name, one row per sample
    classifier: bool = True  # teacher: KL on the one logits output; else MSE on every output
    # With augmentation the teacher must see the student's shifted batch: it runs per step, in eval mode.
    teacher_model: onnx.ModelProto | None = None
    teacher_module: OnnxModule | None = None

    def rows(self, index: np.ndarray) -> dict[str, np.ndarray]:
        if self.labels is not None:
            return {"labels": self.labels[index]}
        return {name: value[index] for name, value in (self.teacher or {}).items()}

    def batch(
        self, index: np.ndarray, inputs: list[torch.Tensor], device: torch.device
    ) -> dict[str, torch.Tensor]:
        """The targets of one batch: stored rows, or the teacher module's outputs on ``inputs``."""
        if self.teacher_module is None:
            return {k: torch.from_numpy(v).to(device) for k, v in self.rows(index).items()}
        with torch.no_grad():
            outs = self.teacher_module(*inputs)
        return dict(zip(self.teacher_module.output_names, outs, strict=True))


@dataclass
class EvalSet:
    samples: Batch
    labels: np.ndarray


@dataclass
class History:
    epochs: list[dict[str, Any]] = field(default_factory=list)


def make_loss(targets: Targets, output_names: list[str], temperature: float) -> Loss:
    if targets.labels is not None:
        return lambda outs, want: F.cross_entropy(outs[0], want["labels"])
    if targets.classifier:
        t = temperature

        def distill(outs: tuple[torch.Tensor, ...], want: dict[str, torch.Tensor]) -> torch.Tensor:
            student = F.log_softmax(outs[0] / t, dim=1)
            teacher = F.log_softmax(want[output_names[0]] / t, dim=1)
            return F.kl_div(student, teacher, log_target=True, reduction="batchmean") * t * t

        return distill
    return lambda outs, want: sum(  # type: ignore[return-value]
        (F.mse_loss(out, want[name]) for out, name in zip(outs, output_names, strict=True)),
        torch.zeros(()),
    )


def gamma_stats(module: OnnxModule) -> dict[str, Any]:
    gammas = torch.cat([g.detach().abs().reshape(-1).cpu() for g in module.bn_scales()] or [torch.zeros(0)])
    small = float((gammas < SPARSE_GAMMA).float().mean()) if gammas.numel() else 0.0
    return {"gammas": int(gammas.numel()), "gamma_small": small}


def evaluate(module: OnnxModule, data: EvalSet, device: torch.device, batch: int = 256) -> float:
    """Top-1 accuracy of the first output against the labels, in eval mode."""
    module.eval()
    correct = 0
    with torch.no_grad():
        for index in _chunks(len(data.labels), batch):
            outs = module(*_tensors(data.samples, module.input_names, index, device))
            correct += int((outs[0].argmax(dim=1).cpu().numpy() == data.labels[index]).sum())
    return correct / max(len(data.labels), 1)


def fit(
    module: OnnxModule, samples: Batch, targets: Targets, options: TrainOptions, checkpoint: Path,
    device: torch.device, eval_set: EvalSet | None = None, on_step: StepHook | None = None,
    on_epoch: EpochHook | None = None,
) -> History:  # fmt: skip
    """Train ``module`` in place for ``options.epochs`` epochs (fewer when resumed); returns the history."""
    optimizer = _optimizer(module, options)
    history, start = History(), 0
    if options.resume:
        start, history = load_checkpoint(checkpoint, module, optimizer)
    elif eval_set is not None:
        history.epochs.append({"epoch": 0, "loss": None, "accuracy": evaluate(module, eval_set, device),
                               "seconds": 0.0, **gamma_stats(module)})  # fmt: skip
    loss_fn = make_loss(targets, module.output_names, options.temperature)
    scales = module.bn_scales()
    count = next(iter(samples.values())).shape[0]
    steps = steps_per_epoch(count, options.batch)
    for epoch in range(start + 1, options.epochs + 1):
        began, losses = time.perf_counter(), []
        module.train()
        shifts = np.random.default_rng([options.seed, epoch, 1])  # from (seed, epoch): resumable
        for step, index in enumerate(_epoch_batches(count, options.batch, options.seed, epoch)):
            inputs = _tensors(samples, module.input_names, index, device)
            if options.augment == "shift":
                inputs = augment.shift(inputs, shifts)
            outs = module(*inputs)
            loss = loss_fn(outs, targets.batch(index, inputs, device))
            lr = _set_lr(optimizer, options, (epoch - 1) * steps + step, options.epochs * steps)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if options.l1_gamma and options.l1_step == "subgradient":
                _l1_subgradient(scales, options.l1_gamma)
            optimizer.step()
            if options.l1_gamma and options.l1_step == "proximal":
                _soft_threshold(scales, lr * options.l1_gamma)
            losses.append(float(loss.detach()) * len(index))
            if on_step is not None:
                on_step(epoch, step, float(loss.detach()))
        record: dict[str, Any] = {"epoch": epoch, "loss": sum(losses) / count, "accuracy": None}
        record["seconds"] = time.perf_counter() - began
        if eval_set is not None:
            record["accuracy"] = evaluate(module, eval_set, device)
        history.epochs.append({**record, **gamma_stats(module)})
        save_checkpoint(checkpoint, module, optimizer, epoch, history)
        if on_epoch is not None:
            on_epoch(history.epochs[-1])
    module.eval()
    return history


def _set_lr(optimizer: torch.optim.Optimizer, options: TrainOptions, step: int, total: int) -> float:
    """The rate of a global step, from the step alone: a resumed run needs no scheduler state."""
    lr = options.lr
    if options.schedule == "cosine":
        lr *= 0.5 * (1.0 + math.cos(math.pi * step / max(total, 1)))
    for group in optimizer.param_groups:
        group["lr"] = lr
    return lr


def _l1_subgradient(scales: list[torch.nn.Parameter], strength: float) -> None:
    """Network Slimming: d/dgamma of lambda*|gamma| is lambda*sign(gamma) (0 at 0)."""
    for gamma in scales:
        if gamma.grad is None:
            gamma.grad = torch.zeros_like(gamma)
        gamma.grad.add_(torch.sign(gamma.detach()), alpha=strength)


def _soft_threshold(scales: list[torch.nn.Parameter], step: float) -> None:
    """The proximal step of lambda*|gamma|: gamma <- sign(gamma) * max(|gamma| - lr*lambda, 0).

    Unlike the subgradient, which leaves unimportant gammas oscillating around 0 by about lr*lambda, this
    sets them to exactly 0, and keeps them there while the loss does not pull them back.
    """
    with torch.no_grad():
        for gamma in scales:
            gamma.copy_(torch.sign(gamma) * torch.clamp(gamma.abs() - step, min=0.0))


def _optimizer(module: OnnxModule, options: TrainOptions) -> torch.optim.Optimizer:
    params = list(module.parameters())
    if options.optimizer == "adam":
        return torch.optim.Adam(params, lr=options.lr, weight_decay=options.weight_decay)
    return torch.optim.SGD(
        params, lr=options.lr, momentum=options.momentum, weight_decay=options.weight_decay
    )


def steps_per_epoch(count: int, batch: int) -> int:
    return count // batch + (1 if count % batch > 1 else 0)


def _epoch_batches(count: int, batch: int, seed: int, epoch: int) -> Iterator[np.ndarray]:
    order = np.random.default_rng([seed, epoch]).permutation(count)
    for start in range(0, count, batch):
        index = order[start : start + batch]
        if len(index) > 1:  # training-mode BatchNormalization needs two samples
            yield index


def _chunks(count: int, size: int) -> Iterator[np.ndarray]:
    for start in range(0, count, size):
        yield np.arange(start, min(start + size, count))


def _tensors(samples: Mapping[str, np.ndarray], names: list[str], index: np.ndarray, device: torch.device):
    return [torch.from_numpy(np.ascontiguousarray(samples[name][index])).to(device) for name in names]


def _fingerprint(module: OnnxModule) -> dict[str, list[int]]:
    return {name: list(module.tensor(name).shape) for name in sorted(module.roles)}


def save_checkpoint(
    path: Path, module: OnnxModule, optimizer: torch.optim.Optimizer, epoch: int, history: History
) -> None:
    """Atomically, through the project's one writer (files.write_atomically): Ctrl-C mid-save leaves the last
    checkpoint whole."""
    payload = {
        "format": CHECKPOINT_FORMAT,
        "epoch": epoch,
        "model": module.state_dict(),
        "optimizer": optimizer.state_dict(),
        "fingerprint": _fingerprint(module),
        "history": history.epochs,
        "rng": torch.get_rng_state(),  # for Dropout, the one op here that draws random numbers
    }
    write_atomically(path, lambda handle: torch.save(payload, handle))


def load_checkpoint(path: Path, module: OnnxModule, optimizer: torch.optim.Optimizer) -> tuple[int, History]:
    """Restore module and optimiser; returns the epochs already done and their history."""
    if not path.is_file():
        raise ModelLoadError(f"--resume: checkpoint {path} not found")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise ModelLoadError(f"--resume: cannot read checkpoint {path}: {first_line(err)}") from None
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise ModelLoadError(f"--resume: {path} is not an onnxprune training checkpoint")
    if payload["fingerprint"] != _fingerprint(module):
        raise UsageError(f"--resume: checkpoint {path} was written for another model")
    module.load_state_dict(payload["model"])
    optimizer.load_state_dict(payload["optimizer"])
    torch.set_rng_state(payload["rng"])
    return int(payload["epoch"]), History(list(payload["history"]))
