"""The training loop: steps, the L1 step on BN gammas, held-out fidelity, early stopping, the time budget.

One epoch is a seeded permutation of the samples (the permutation depends on the seed and the epoch only,
so a resumed run sees the batches an uninterrupted one would). After every epoch: accuracy on ``--eval``
(labels), fidelity to the teacher on the held-out samples, a checkpoint. Fine-tuning keeps the state of
the epoch with the best held-out result (``fidelity.improves``: the lowest loss among the epochs whose
agreement with the teacher is within held-out noise of the best; epoch 0, the input, included) and, in
the second half of the schedule, stops once ``patience`` epochs have not improved on it. With
``minutes`` the step time is measured first (``budget.py``) and the epochs are planned from it; the
learning-rate schedule then follows the clock (the share of the budget spent), and training runs until
the deadline: a machine that speeds up or slows down moves the end, not the schedule.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from onnxprune.train import augment, budget
from onnxprune.train.checkpoint import load_checkpoint, save_checkpoint
from onnxprune.train.fidelity import agreement, fidelity, improves
from onnxprune.train.losses import DistillLoss
from onnxprune.train.options import SPARSE_GAMMA, TrainOptions
from onnxprune.train.targets import Batch, Holdout, Targets
from onnxprune.train.torchgraph import OnnxModule

# Input values per forward and backward pass (three 3x640x640 images; a 48x320 text line batch of 16 is
# one pass): training memory grows with them, the gradient is the batch's either way.
MICRO_BATCH_VALUES = 1 << 22
UNCAPPED = 10**6  # epochs of a budgeted run without --epochs: the deadline ends it
Loss = Callable[[Mapping[str, torch.Tensor], Mapping[str, torch.Tensor]], torch.Tensor]


@dataclass
class Hooks:
    on_step: Callable[[int, int, float], None] | None = None  # (epoch, step, loss)
    on_epoch: Callable[[dict[str, Any]], None] | None = None  # the epoch's history record
    on_plan: Callable[[int, int], None] | None = None  # (epochs, steps per epoch), once known


@dataclass
class EvalSet:
    samples: Batch
    labels: np.ndarray


@dataclass
class History:
    epochs: list[dict[str, Any]] = field(default_factory=list)
    planned_epochs: int = 0
    step_seconds: float | None = None  # measured before a budgeted run
    best_epoch: int | None = None  # the epoch whose state was kept (early stopping)
    stopped: str = ""  # why training ended before the planned epochs, if it did


def make_loss(targets: Targets, output_names: list[str], options: TrainOptions) -> Loss:
    if targets.labels is not None:
        first = output_names[0]
        return lambda outs, want: F.cross_entropy(outs[first], want["labels"])
    assert options.feature_weight is not None
    return DistillLoss(
        targets.kinds, targets.scales, options.temperature, targets.features, options.feature_weight,
        options.ctc_weight,
    )  # fmt: skip


def gamma_stats(module: OnnxModule) -> dict[str, Any]:
    gammas = torch.cat([g.detach().abs().reshape(-1).cpu() for g in module.bn_scales()] or [torch.zeros(0)])
    small = float((gammas < SPARSE_GAMMA).float().mean()) if gammas.numel() else 0.0
    return {"gammas": int(gammas.numel()), "gamma_small": small}


def fit(
    module: OnnxModule, samples: Batch, targets: Targets, options: TrainOptions, checkpoint: Path | None,
    device: torch.device, eval_set: EvalSet | None = None, holdout: Holdout | None = None,
    hooks: Hooks | None = None,
) -> History:  # fmt: skip
    """Train ``module`` in place; returns the history (the module ends in eval mode, at its best state)."""
    return _Trainer(module, samples, targets, options, device, eval_set, holdout, hooks or Hooks()).run(
        checkpoint
    )


class _Trainer:
    def __init__(
        self, module: OnnxModule, samples: Batch, targets: Targets, options: TrainOptions,
        device: torch.device, eval_set: EvalSet | None, holdout: Holdout | None, hooks: Hooks,
    ) -> None:  # fmt: skip
        self.module, self.samples, self.targets, self.options = module, samples, targets, options
        self.device, self.eval_set, self.holdout, self.hooks = device, eval_set, holdout, hooks
        self.optimizer = _optimizer(module, options)
        self.loss_fn = make_loss(targets, module.output_names, options)
        self.scales = module.bn_scales()
        self.count = int(next(iter(samples.values())).shape[0])
        self.steps = steps_per_epoch(self.count, options.batch)
        self.total_steps = 0  # the schedule's length in steps, without a budget
        self.clock: tuple[float, float] | None = None  # with a budget: the schedule's start and end (seconds)
        self.late: int | None = None  # the first epoch that ended in the second half of the schedule

    def run(self, checkpoint: Path | None) -> History:
        began, history, start, best = time.perf_counter(), History(), 0, None
        if self.options.resume:
            assert checkpoint is not None
            start, history.epochs, best = load_checkpoint(checkpoint, self.module, self.optimizer)
        else:
            history.epochs.append(self._record(0, None, 0.0))
            best = self._better(history.epochs[0], None)
        epochs = self._plan(history, began)
        if self.options.minutes is not None:
            self.clock = (time.perf_counter(), began + 60.0 * self.options.minutes)
            epochs = self.options.epochs or UNCAPPED
        for epoch in range(start + 1, epochs + 1):
            loss, seconds, cut = self._epoch(epoch)
            record = self._record(epoch, loss, seconds)
            best = self._better(record, best)
            history.epochs.append(record)
            if checkpoint is not None:
                save_checkpoint(checkpoint, self.module, self.optimizer, epoch, history, best)
            if self.hooks.on_epoch is not None:
                self.hooks.on_epoch(record)
            history.stopped = self._stop(epoch, best)
            if history.stopped or cut:
                break
        if best is not None and self.options.early_stopping:
            self.module.load_state_dict(best["state"])
            history.best_epoch = int(best["epoch"])
        self.module.eval()
        return history

    def _plan(self, history: History, began: float) -> int:
        """The epochs to run; with a budget, the estimate from the step time and the evaluation's."""
        epochs = self.options.epochs
        if self.options.minutes is not None:
            history.step_seconds = budget.measure_step(self.module, self._probe)
            left = self.options.minutes - (time.perf_counter() - began) / 60.0
            eval_seconds = history.epochs[0].get("eval_seconds", 0.0) if history.epochs else 0.0
            epochs = budget.plan(
                max(left, 0.0), history.step_seconds, eval_seconds, self.steps, epochs
            ).epochs
        assert epochs is not None
        self.total_steps = epochs * self.steps
        history.planned_epochs = epochs
        if self.hooks.on_plan is not None:
            self.hooks.on_plan(epochs, self.steps)
        return epochs

    def _probe(self, k: int) -> None:
        self.module.train()
        index = np.arange(k * self.options.batch, (k + 1) * self.options.batch) % self.count
        self._backward(index, np.random.default_rng([self.options.seed, 0, k]))

    def _backward(self, index: np.ndarray, rng: np.random.Generator) -> float:
        """The batch's loss, its gradient accumulated over micro-batches of at most ``MICRO_BATCH_VALUES``
        input values (each weighted by its share: the losses are means over samples, so the gradient is
        the whole batch's): a detector at 640x640 in batches of 16 peaked at 14.9 GB whole."""
        inputs = _tensors(self.samples, self.module.input_names, index, self.device)
        inputs = augment.apply(self.options.augmentations, inputs, rng)
        keep = self.loss_fn.student_tensors if isinstance(self.loss_fn, DistillLoss) else []
        total = 0.0
        for part in micro_batches(len(index), sum(x[0].numel() for x in inputs)):
            chunk = [x[part] for x in inputs]
            want = self.targets.batch(index[part], chunk, self.device)
            feed = dict(zip(self.module.input_names, chunk, strict=True))
            loss = self.loss_fn(self.module.run(feed, keep=keep), want) * (len(part) / len(index))
            loss.backward()
            total += float(loss.detach())
        return total

    def _epoch(self, epoch: int) -> tuple[float, float, bool]:
        """Mean training loss, seconds, and whether the budget's deadline has come."""
        began, losses, seen, cut = time.perf_counter(), 0.0, 0, False
        self.module.train()
        rng = np.random.default_rng([self.options.seed, epoch, 1])  # from (seed, epoch): resumable
        for step, index in enumerate(
            _epoch_batches(self.count, self.options.batch, self.options.seed, epoch)
        ):
            global_step = (epoch - 1) * self.steps + step
            if self.clock is not None and time.perf_counter() >= self.clock[1]:
                cut = True
                break
            loss = self._update(index, rng, global_step)
            losses, seen = losses + loss * len(index), seen + len(index)
            if self.hooks.on_step is not None:
                self.hooks.on_step(epoch, step, loss)
        cut = cut or (self.clock is not None and time.perf_counter() >= self.clock[1])
        return losses / max(seen, 1), time.perf_counter() - began, cut

    def _update(self, index: np.ndarray, rng: np.random.Generator, global_step: int) -> float:
        """One optimiser step on the batch ``index``; its loss."""
        done = self._share(global_step)
        lr = _set_lr(self.optimizer, self.options, done)
        self.optimizer.zero_grad(set_to_none=True)
        loss = self._backward(index, rng)
        l1 = self.options.l1_gamma
        if l1 and self.options.l1_step == "subgradient":
            _l1_subgradient(self.scales, l1)
        self.optimizer.step()
        if l1 and self.options.l1_step == "proximal":
            _soft_threshold(self.scales, lr * l1)
        return loss

    def _record(self, epoch: int, loss: float | None, seconds: float) -> dict[str, Any]:
        record: dict[str, Any] = {"epoch": epoch, "loss": loss, "accuracy": None, "seconds": seconds}
        began = time.perf_counter()
        if self.eval_set is not None:
            record["accuracy"] = evaluate(self.module, self.eval_set, self.device)
        if self.holdout is not None and isinstance(self.loss_fn, DistillLoss):
            record.update(evaluate_holdout(self.module, self.holdout, self.loss_fn, self.device))
        record["eval_seconds"] = time.perf_counter() - began
        return {**record, **gamma_stats(self.module)}

    def _better(self, record: dict[str, Any], best: dict[str, Any] | None) -> dict[str, Any] | None:
        """The best held-out state so far (fine-tuning only), with its epoch, result (the task's agreement,
        the loss) and the best agreement of any epoch (``top``): ``fidelity.improves`` chooses."""
        loss = record.get("holdout_loss")
        if not self.options.early_stopping or loss is None:
            return best
        result = (agreement(record.get("fidelity") or {}), loss)
        top = _top(result[0], None if best is None else best.get("top"))
        count = self.holdout.count if self.holdout is not None else 0
        if not improves(result, None if best is None else best["result"], top, count):
            return None if best is None else {**best, "top": top}
        state = {k: v.detach().cpu().clone() for k, v in self.module.state_dict().items()}
        return {"epoch": record["epoch"], "result": result, "state": state, "top": top}

    def _stop(self, epoch: int, best: dict[str, Any] | None) -> str:
        """Why fine-tuning stops before the planned end, if it does: ``patience`` epochs without a better
        held-out result, counted in the second half of the schedule only (before, the rate is high, the
        held-out loss of a few dozen samples is noisy, and the gains come as the rate falls)."""
        if best is None or not self.options.early_stopping or self._done(epoch) < 0.5:
            return ""
        self.late = self.late or epoch
        if epoch - max(best["epoch"], self.late - 1) >= self.options.patience:
            return f"no held-out improvement for {self.options.patience} epochs"
        return ""

    def _share(self, global_step: int) -> float:
        """The share of the schedule behind at ``global_step``: by steps, or by the clock under a budget;
        under a budget with an epoch cap too, whichever end comes first (a cap reached in seconds of a
        minutes-long budget must still see the rate decay)."""
        by_steps = global_step / max(self.total_steps, 1)
        if self.clock is None:
            return by_steps
        start, end = self.clock
        by_clock = min((time.perf_counter() - start) / max(end - start, 1e-9), 1.0)
        if self.options.epochs is None:
            return by_clock
        return max(by_clock, global_step / max(self.options.epochs * self.steps, 1))

    def _done(self, epoch: int) -> float:
        """The share of the schedule behind at the end of ``epoch``."""
        return self._share(epoch * self.steps)


def _top(agree: float | None, top: float | None) -> float | None:
    """The best agreement seen, of this epoch and ``top``, the best before it."""
    present = [a for a in (agree, top) if a is not None]
    return max(present) if present else None


def evaluate(module: OnnxModule, data: EvalSet, device: torch.device, batch: int = 256) -> float:
    """Top-1 accuracy of the first output against the labels, in eval mode."""
    module.eval()
    correct = 0
    with torch.no_grad():
        for index in _chunks(len(data.labels), batch):
            outs = module(*_tensors(data.samples, module.input_names, index, device))
            correct += int((outs[0].argmax(dim=1).cpu().numpy() == data.labels[index]).sum())
    return correct / max(len(data.labels), 1)


def student_outputs(
    module: OnnxModule, samples: Batch, device: torch.device, batch: int = 32, keep: list[str] | None = None
) -> Batch:
    """The module's outputs (and the tensors named in ``keep``) on every sample, in eval mode, as numpy."""
    module.eval()
    parts: list[dict[str, torch.Tensor]] = []
    count = int(next(iter(samples.values())).shape[0])
    with torch.no_grad():
        for index in _chunks(count, batch):
            inputs = _tensors(samples, module.input_names, index, device)
            got = module.run(dict(zip(module.input_names, inputs, strict=True)), keep=keep or [])
            parts.append({name: value.cpu() for name, value in got.items()})
    return {name: torch.cat([p[name] for p in parts]).numpy() for name in parts[0]}


def evaluate_holdout(
    module: OnnxModule, holdout: Holdout, loss: DistillLoss, device: torch.device
) -> dict[str, Any]:
    """The distillation loss over outputs (no features) and the fidelity measures on the held-out samples."""
    got = student_outputs(module, holdout.samples, device, keep=[k.logits for k in loss.kinds if k.logits])
    terms = loss.output_terms(
        {k: torch.from_numpy(v) for k, v in got.items()},
        {k: torch.from_numpy(v) for k, v in holdout.teacher.items()},
    )
    return {
        "holdout_loss": float(sum(float(t) for t in terms.values())),
        "fidelity": fidelity(loss.kinds, holdout.teacher, got),
    }


def _set_lr(optimizer: torch.optim.Optimizer, options: TrainOptions, done: float) -> float:
    """The rate when ``done`` (0..1) of the schedule is behind, from that alone: a resumed run needs no
    scheduler state."""
    assert options.lr is not None
    lr = options.lr
    if options.schedule == "cosine":
        lr *= 0.5 * (1.0 + math.cos(math.pi * done))
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
    assert options.lr is not None
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


def micro_batches(count: int, values_per_sample: int) -> list[np.ndarray]:
    """Positions 0..count-1 in near-equal parts of at most ``MICRO_BATCH_VALUES`` input values each (one
    part where they fit), none smaller than two samples: training-mode BatchNormalization needs two."""
    fits = max(2, MICRO_BATCH_VALUES // max(values_per_sample, 1))
    parts = min(-(-count // fits), count // 2)
    return np.array_split(np.arange(count), max(parts, 1))


def _chunks(count: int, size: int) -> Iterator[np.ndarray]:
    for start in range(0, count, size):
        yield np.arange(start, min(start + size, count))


def _tensors(samples: Mapping[str, np.ndarray], names: list[str], index: np.ndarray, device: torch.device):
    return [torch.from_numpy(np.ascontiguousarray(samples[name][index])).to(device) for name in names]
