"""What ``onnxprune train`` is asked to do, validated before any data or model is read (no torch here)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from onnxprune.errors import UsageError

OPTIMIZERS = ("sgd", "adam")
SCHEDULES = ("cosine", "constant")
DEVICES = ("auto", "cpu", "cuda")
AUGMENTS = ("none", "shift")  # as onnxprune.train.augment (which imports torch)
L1_STEPS = ("proximal", "subgradient")
DISTILLS = ("auto", "kl", "mse")
# The options that take one of a few words, with those words (checked in this order).
CHOICES = {"optimizer": OPTIMIZERS, "schedule": SCHEDULES, "l1_step": L1_STEPS, "augment": AUGMENTS,
           "distill": DISTILLS, "device": DEVICES}  # fmt: skip
SPARSE_GAMMA = 1e-2  # a |gamma| under this counts as "near zero" in the history and the benchmarks


@dataclass
class TrainOptions:
    """Hyperparameters of one training run.

    Attributes:
        epochs: passes over the training data (a resumed run continues up to this count).
        lr, momentum, weight_decay, optimizer: the optimiser (SGD with momentum, or Adam).
        batch: samples per step; a last batch of one sample is dropped (BatchNormalization needs two).
        seed: shuffling and initial RNG state; with the same seed a CPU run repeats exactly.
        l1_gamma: Network Slimming's lambda: the penalty lambda * sum(|gamma|) over every BN gamma.
        l1_step: how the penalty acts: proximal (soft-threshold every gamma by lr*lambda after each
            optimiser step: exact zeros) or subgradient (lambda*sign(gamma) added to the gradient, as in the
            paper: unimportant gammas oscillate around 0 by about lr*lambda).
        augment: none, or shift: every image input ([N, C, H, W] float) moved by up to 2 pixels each way per
            sample and step (border replicated); a teacher then runs per batch on the shifted images.
        distill: the loss against a teacher: kl (on the softened logits of a classifier's one output),
            mse (on every output: detectors, embeddings, regressors), or auto: kl when the model has exactly
            one output and it is [batch, classes] with at least 2 classes, else mse.
        schedule: cosine (from lr down to 0 over all steps of all epochs) or constant. The cosine's small
            last steps let the L1 subgradient settle unimportant gammas near zero, not around +-lr*lambda.
        temperature: softens both distributions of the distillation KL (multiplied back by T^2).
        device: auto (CUDA when present), cpu or cuda.
        checkpoint: where the after-every-epoch checkpoint goes (default: OUTPUT + '.ckpt', removed once
            the run succeeds; one given here is kept).
        resume: continue from ``checkpoint`` instead of starting over.
        progress: draw a progress bar per epoch on stderr.
    """

    epochs: int = 1
    lr: float = 0.01
    batch: int = 64
    seed: int = 0
    l1_gamma: float = 0.0
    l1_step: str = "proximal"
    augment: str = "none"
    distill: str = "auto"
    optimizer: str = "sgd"
    schedule: str = "cosine"
    momentum: float = 0.9
    weight_decay: float = 0.0
    temperature: float = 1.0
    device: str = "auto"
    checkpoint: Path | None = None
    resume: bool = False
    progress: bool = True

    def check(self) -> None:
        """Raise ``UsageError`` (one line) for a value out of range."""
        _at_least("epochs", self.epochs, 1)
        _at_least("batch", self.batch, 2)
        _positive("lr", self.lr)
        _positive("temperature", self.temperature)
        for name in ("l1_gamma", "momentum", "weight_decay"):
            value = getattr(self, name)
            if not value >= 0:  # `not >=` so that NaN is refused too
                raise UsageError(f"--{name.replace('_', '-')} must be >= 0, got {value}")
        for name, allowed in CHOICES.items():
            value = getattr(self, name)
            if value not in allowed:
                flag = "--" + name.replace("_", "-")
                raise UsageError(f"{flag} must be one of {', '.join(allowed)}, got {value!r}")


def _at_least(name: str, value: int, low: int) -> None:
    if not isinstance(value, int) or value < low:
        raise UsageError(f"--{name} must be an integer >= {low}, got {value}")


def _positive(name: str, value: float) -> None:
    if not value > 0:
        raise UsageError(f"--{name} must be > 0, got {value}")
