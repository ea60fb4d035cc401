"""What ``onnxprune train`` is asked to do, validated before any data or model is read (no torch here).

Options left at ``None`` (or ``auto``) follow from the run's purpose (``resolved``): fine-tuning (a teacher
or labels, no L1 penalty) or sparsity training (``l1_gamma > 0``). Those defaults are the recipes measured
in ``benchmarks/train.py`` and ``docs/distill.md``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

from onnxprune.errors import UsageError

OPTIMIZERS = ("auto", "sgd", "adam")
SCHEDULES = ("cosine", "constant")
DEVICES = ("auto", "cpu", "cuda")
AUGMENTS = ("shift", "scale", "brightness")  # as onnxprune.train.augment (which imports torch)
L1_STEPS = ("proximal", "subgradient")
DISTILLS = ("auto", "kl", "mse")
BATCH_NORMS = ("auto", "frozen", "update")
# The options that take one of a few words, with those words (checked in this order).
CHOICES = {"optimizer": OPTIMIZERS, "schedule": SCHEDULES, "l1_step": L1_STEPS, "distill": DISTILLS,
           "device": DEVICES, "batch_norm": BATCH_NORMS}  # fmt: skip
SPARSE_GAMMA = 1e-2  # a |gamma| under this counts as "near zero" in the history and the benchmarks
# The defaults each purpose resolves to: (optimizer, lr, epochs).
FINETUNE = ("adam", 1e-3, 2)
SPARSITY = ("sgd", 0.05, 30)
L1_GAMMA = 0.3  # the documented starting value of --l1-gamma (with the sparsity defaults above)


@dataclass
class TrainOptions:
    """Hyperparameters of one training run.

    Attributes:
        epochs: passes over the training data (a resumed run continues up to this count). None: from
            ``minutes`` if given, else 2 for fine-tuning and 30 for sparsity training.
        minutes: a time budget: the step time is measured first and the epochs that fit are estimated;
            the learning-rate schedule follows the clock and training runs until the deadline (at most
            ``epochs`` when that is given too).
        lr, optimizer: None/auto: Adam at 1e-3 for fine-tuning, SGD (momentum 0.9) at 0.05 for sparsity.
        momentum, weight_decay: of the optimiser.
        batch: samples per step; a last batch of one sample is dropped (BatchNormalization needs two).
        seed: shuffling, augmentation and initial RNG state; with the same seed a CPU run repeats exactly.
        l1_gamma: Network Slimming's lambda: the penalty lambda * sum(|gamma|) over every BN gamma
            (0.3 is the documented starting value, with the sparsity defaults).
        l1_step: how the penalty acts: proximal (soft-threshold every gamma by lr*lambda after each
            optimiser step: exact zeros) or subgradient (lambda*sign(gamma) added to the gradient, as in the
            paper: unimportant gammas oscillate around 0 by about lr*lambda).
        augment: auto (shift,scale,brightness with a teacher, none with labels), none, or a comma list of
            shift, scale, brightness, applied to image inputs ([N, C, H, W] float) per sample and step.
        distill: the loss against a teacher per output (``kinds.py``): auto (KL on class scores and
            per-frame distributions, normalised MSE on everything else), kl (all outputs must be scores or
            distributions), mse (every output as a map).
        feature_weight: weight of feature distillation at the pruned groups' boundaries (0: off). None:
            1.0 for fine-tuning from a teacher, 0 otherwise.
        holdout: the share of the samples held out (never trained on) to measure fidelity to the teacher
            after every epoch; fine-tuning keeps the epoch with the lowest held-out loss among those
            whose agreement (top-1, exact decodes) is within the held-out noise of the best, and stops
            after ``patience`` epochs without improvement. 0: none.
        schedule: cosine (from lr down to 0 over all steps of all epochs) or constant.
        batch_norm: how BatchNormalization trains: update (normalise by the batch, update the running
            statistics: torch's training mode) or frozen (normalise by the running statistics, as at
            inference; scale and bias still train). auto: update for sparsity training; when fine-tuning,
            frozen unless the running statistics no longer describe the BNs' inputs on the data, beyond
            how far the teacher's own do not (``bnstats.py``: a data-free prune moved them).
        temperature: softens both distributions of the distillation KL on class scores (multiplied back by
            T^2); per-frame distributions are distilled at 1.
        ctc_weight: weight of the CTC term on per-frame distributions (a CTC recogniser's output): the CTC
            loss of the student against the teacher's greedy decodes, beside the per-frame KL. 0: KL only.
        device: auto (CUDA when present), cpu or cuda.
        threads: PyTorch's CPU threads (None: its default, one per core); fewer on a machine other jobs
            share, where threads that wait on each other cost more than they gain.
        checkpoint: where the after-every-epoch checkpoint goes (default: OUTPUT + '.ckpt', removed once
            the run succeeds; one given here is kept).
        resume: continue from ``checkpoint`` instead of starting over.
        progress: draw a progress bar per epoch on stderr.
    """

    epochs: int | None = None
    minutes: float | None = None
    lr: float | None = None
    batch: int = 16
    seed: int = 0
    l1_gamma: float = 0.0
    l1_step: str = "proximal"
    augment: str = "auto"
    batch_norm: str = "auto"
    distill: str = "auto"
    optimizer: str = "auto"
    schedule: str = "cosine"
    momentum: float = 0.9
    weight_decay: float = 0.0
    temperature: float = 4.0
    ctc_weight: float = 1.0
    feature_weight: float | None = None
    holdout: float = 0.1
    patience: int = 5
    device: str = "auto"
    threads: int | None = None
    checkpoint: Path | None = None
    resume: bool = False
    progress: bool = True

    def check(self) -> None:
        """Raise ``UsageError`` (one line) for a value out of range."""
        if self.epochs is not None:
            _at_least("epochs", self.epochs, 1)
        if self.minutes is not None:
            _positive("minutes", self.minutes)
        _at_least("batch", self.batch, 2)
        _at_least("patience", self.patience, 1)
        if self.threads is not None:
            _at_least("threads", self.threads, 1)
        if self.lr is not None:
            _positive("lr", self.lr)
        _positive("temperature", self.temperature)
        for name in ("l1_gamma", "momentum", "weight_decay", "feature_weight", "ctc_weight"):
            value = getattr(self, name)
            if value is not None and not value >= 0:  # `not >=` so that NaN is refused too
                raise UsageError(f"--{name.replace('_', '-')} must be >= 0, got {value}")
        if not 0 <= self.holdout < 1:
            raise UsageError(f"--holdout must be in [0, 1), got {self.holdout}")
        for name, allowed in CHOICES.items():
            value = getattr(self, name)
            if value not in allowed:
                flag = "--" + name.replace("_", "-")
                raise UsageError(f"{flag} must be one of {', '.join(allowed)}, got {value!r}")
        augments(self.augment, teacher=True)

    @property
    def sparsity(self) -> bool:
        return self.l1_gamma > 0

    def resolved(self, teacher: bool) -> TrainOptions:
        """A copy with every automatic value decided (``teacher``: distillation rather than labels)."""
        optimizer, lr, epochs = SPARSITY if self.sparsity else FINETUNE
        return dataclasses.replace(
            self,
            optimizer=optimizer if self.optimizer == "auto" else self.optimizer,
            lr=lr if self.lr is None else self.lr,
            epochs=epochs if self.epochs is None and self.minutes is None else self.epochs,
            augment=",".join(augments(self.augment, teacher)) or "none",
            # fine-tuning's auto is decided on the data (bnstats.choose)
            batch_norm="update" if self.sparsity and self.batch_norm == "auto" else self.batch_norm,
            feature_weight=(1.0 if teacher and not self.sparsity else 0.0)
            if self.feature_weight is None
            else self.feature_weight,
        )

    @property
    def augmentations(self) -> tuple[str, ...]:
        return augments(self.augment, teacher=True)

    @property
    def early_stopping(self) -> bool:
        """Fine-tuning stops early on held-out fidelity; sparsity training trades fidelity on purpose."""
        return self.holdout > 0 and not self.sparsity


def augments(text: str, teacher: bool) -> tuple[str, ...]:
    """``--augment`` as a tuple of augmentation names (auto: all of them with a teacher)."""
    if text == "auto":
        return AUGMENTS if teacher else ()
    if text == "none":
        return ()
    names = tuple(part.strip() for part in text.split(","))
    unknown = [n for n in names if n not in AUGMENTS]
    if unknown or not names:
        raise UsageError(
            f"--augment must be auto, none or a comma list of {', '.join(AUGMENTS)}, got {text!r}"
        )
    return names


def _at_least(name: str, value: int, low: int) -> None:
    if not isinstance(value, int) or value < low:
        raise UsageError(f"--{name} must be an integer >= {low}, got {value}")


def _positive(name: str, value: float) -> None:
    if not value > 0:
        raise UsageError(f"--{name} must be > 0, got {value}")
