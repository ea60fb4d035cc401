"""``train()``: an ONNX model in, a trained ONNX model out, on PyTorch (the ``[train]`` extra, lazily).

Order of work: options and paths, data and targets (labels, or a teacher: its outputs, the held-out split,
feature targets), the conversion and its check against ONNX Runtime, training with a checkpoint per epoch,
the trained values written back into the same graph, validation, the atomic write. ``fit_model`` is the
in-memory core that ``train`` (files) and ``finetune`` (``prune --finetune-minutes``) share.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import onnx

from onnxprune import files as graphs
from onnxprune.data import static_batch
from onnxprune.errors import CapabilityError, ModelLoadError, OnnxPruneError, UsageError
from onnxprune.train.dataset import (
    ImageOptions,
    Samples,
    class_names,
    load_labels,
    load_samples,
    sample_count,
)
from onnxprune.train.options import TrainOptions

if TYPE_CHECKING:
    import torch

    from onnxprune.train.loop import EvalSet

CHECK_SAMPLES = 8  # samples the conversion and the written model are checked on


class TrainingInterrupted(OnnxPruneError):
    """Ctrl-C during training: nothing is written; the last checkpoint stays for ``--resume``."""

    exit_code = 130


@dataclass
class TrainResult:
    output: Path | None
    checkpoint: Path | None
    history: list[dict[str, Any]] = field(default_factory=list)
    conversion_error: float = 0.0  # PyTorch vs ONNX Runtime before training, max relative error
    export_error: float = 0.0  # the written ONNX vs the trained PyTorch module
    batch_norms: int = 0
    device: str = "cpu"
    classes: list[str] = field(default_factory=list)  # class folders: label k is classes[k]
    kinds: list[str] = field(default_factory=list)  # each output's kind, e.g. "logits: scores"
    features: list[str] = field(default_factory=list)  # tensors distilled as features
    held_out: int = 0  # samples held out for fidelity (never trained on)
    planned_epochs: int = 0
    step_seconds: float | None = None  # measured, with a time budget
    best_epoch: int | None = None  # the epoch whose state was kept (early stopping)
    stopped: str = ""
    bn_drift: float | None = None  # with --batch-norm auto when fine-tuning: what chose frozen or update
    options: dict[str, Any] = field(default_factory=dict)  # the options as resolved


def require_torch() -> Any:
    try:
        import torch
    except ImportError:
        raise CapabilityError("onnxprune train needs PyTorch: pip install 'onnxprune[train]'") from None
    return torch


def train(
    source: str | Path, output: str | Path, data: str | Path, *, labels: str | Path | None = None,
    teacher: str | Path | None = None, eval_data: str | Path | None = None,
    eval_labels: str | Path | None = None, options: TrainOptions | None = None,
    images: ImageOptions | None = None,
) -> TrainResult:  # fmt: skip
    """Train ``source`` on ``data`` and write the result to ``output`` (only if it validates).

    The loss is cross-entropy against ``labels`` (a file, or ``y`` in the data file), or, with
    ``teacher``, distillation from that model's outputs (no labels needed). ``options.l1_gamma`` adds
    Network Slimming's sparsity penalty on every BatchNormalization gamma. ``data`` (and ``eval_data``) may
    be a folder of class folders of images: labels from the sorted folder names, pixels as ``images`` says.
    """
    options = options or TrainOptions()
    options.check()
    if labels is not None and teacher is not None:
        raise UsageError("--labels and --teacher are two different losses: give one")
    if options.resume and options.minutes is not None:
        raise UsageError("--resume continues a run of a fixed length: give --epochs N, not --minutes")
    inputs = [p for p in (source, teacher) if p is not None]
    output = graphs.check_output_path(output, inputs)
    checkpoint = Path(options.checkpoint or output.with_name(output.name + ".ckpt"))
    graphs.check_output_path(checkpoint, [*inputs, output])
    require_torch()
    model = graphs.read_model(source)
    check_dynamic_batch(model)
    samples, file_labels = load_samples(data, model, images)
    teacher_model = graphs.read_model(teacher) if teacher is not None else None
    found_labels = None
    if teacher_model is None:
        found_labels = load_labels(labels, sample_count(samples)) if labels is not None else file_labels
        if found_labels is None:
            raise UsageError("no labels: give --labels, a data .npz with 'y', or --teacher for distillation")
    eval_set = _eval_set(model, eval_data, eval_labels, images)
    trained, result = fit_model(model, samples, teacher=teacher_model, labels=found_labels,
                                options=options, eval_set=eval_set, checkpoint=checkpoint)  # fmt: skip
    graphs.save_model(trained, output, external_data=True if graphs.uses_external_data(source) else None)
    if options.checkpoint is None:
        checkpoint.unlink(missing_ok=True)  # the default one serves a --resume only until the run succeeds
    result.output = output
    result.classes = class_names(Path(data)) or []
    return result


def fit_model(
    model: onnx.ModelProto, samples: Samples, *, teacher: onnx.ModelProto | None = None,
    labels: np.ndarray | None = None, options: TrainOptions, eval_set: EvalSet | None = None,
    checkpoint: Path | None = None, kept: Mapping[str, np.ndarray] | None = None,
) -> tuple[onnx.ModelProto, TrainResult]:  # fmt: skip
    """Train ``model`` in memory (labels or a teacher); the trained model has passed its export checks."""
    import torch

    from onnxprune.train import bnstats, export, loop, prepare
    from onnxprune.train.check import check_conversion
    from onnxprune.train.torchgraph import OnnxModule

    options = options.resolved(teacher is not None)
    torch.manual_seed(options.seed)
    if options.threads is not None:
        torch.set_num_threads(options.threads)
    device = _device(torch, options.device)
    if device.type == "cpu":
        torch.use_deterministic_algorithms(True, warn_only=True)
    module = OnnxModule(model).to(device)
    feed = {name: array[:CHECK_SAMPLES] for name, array in samples.items()}
    result = TrainResult(None, checkpoint, device=str(device), batch_norms=export.bn_count(model))
    result.conversion_error = check_conversion(module, model, feed, device)
    fit, held = prepare.split(samples, options, teacher is not None)
    if teacher is not None:
        targets, holdout = prepare.distill_targets(module, model, teacher, fit, held, options, device, kept)
    else:
        assert labels is not None
        targets, holdout = loop.Targets(labels=labels), None
        _check_label_range(module, labels, feed, device)
    if options.batch_norm == "auto":
        reference = _teacher_module(teacher, targets, device)
        mode, result.bn_drift = bnstats.choose(module, fit, device, reference)
        options = replace(options, batch_norm=mode)
    module.batch_statistics = options.batch_norm == "update"
    result.options = {k: str(v) if isinstance(v, Path) else v for k, v in vars(options).items()}
    result.kinds, result.features = [k.describe() for k in targets.kinds], targets.feature_names
    result.held_out = 0 if holdout is None else holdout.count
    history = _fit(module, fit, targets, options, checkpoint, device, eval_set, holdout)
    result.history, result.planned_epochs, result.step_seconds = (
        history.epochs,
        history.planned_epochs,
        history.step_seconds,
    )
    result.best_epoch, result.stopped = history.best_epoch, history.stopped
    trained = export.write_back(model, module.trained_arrays(), module.sources)
    from onnxprune.train.check import float32_noise

    expected = _outputs(module, feed, device)
    floors = float32_noise(module, feed, expected, device)
    result.export_error = export.check_trained(model, trained, feed, expected, floors)
    return trained, result


def _teacher_module(teacher: onnx.ModelProto | None, targets: Any, device: torch.device) -> Any:
    """The teacher in PyTorch, for the BN drift: the one distillation made (augmented or feature targets),
    else converted here; None without a teacher."""
    from onnxprune.train.torchgraph import OnnxModule

    if teacher is None:
        return None
    return targets.teacher_module if targets.teacher_module is not None else OnnxModule(teacher).to(device)


def _fit(module: Any, samples: Samples, targets: Any, options: TrainOptions, checkpoint: Path | None,
         device: torch.device, eval_set: EvalSet | None, holdout: Any) -> Any:  # fmt: skip
    from onnxprune.train import loop
    from onnxprune.train.progress import epoch_progress

    try:
        with epoch_progress(options, sample_count(samples)) as hooks:
            return loop.fit(module, samples, targets, options, checkpoint, device, eval_set, holdout, hooks)
    except KeyboardInterrupt:
        where = "no checkpoint is kept"
        if checkpoint is not None:
            where = f"the last checkpoint {checkpoint} is kept (rerun with --resume)"
            if not checkpoint.exists():
                where = "no epoch had finished, so there is no checkpoint"
        raise TrainingInterrupted(f"interrupted: nothing written; {where}") from None


def check_dynamic_batch(model: onnx.ModelProto) -> None:
    fixed = static_batch(model)
    if fixed is not None:
        name = model.graph.input[0].name
        raise ModelLoadError(
            f"train needs a dynamic batch axis: input {name!r} is fixed at batch {fixed} "
            "(export it with a dynamic first axis)"
        )


def _eval_set(
    model: onnx.ModelProto, data: str | Path | None, labels: str | Path | None, images: ImageOptions | None
) -> EvalSet | None:
    from onnxprune.train.loop import EvalSet

    if data is None:
        if labels is not None:
            raise UsageError("--eval-labels needs --eval DATA")
        return None
    samples, file_labels = load_samples(data, model, images)
    found = load_labels(labels, sample_count(samples)) if labels is not None else file_labels
    if found is None:
        raise UsageError("--eval: no labels: give --eval-labels or an eval .npz with 'y'")
    return EvalSet(samples, found)


def _device(torch: Any, choice: str) -> torch.device:
    if choice == "cuda" and not torch.cuda.is_available():
        raise CapabilityError("--device cuda: no CUDA device is available to PyTorch here")
    if choice == "auto":
        choice = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(choice)


def _outputs(module: Any, feed: Samples, device: torch.device) -> dict[str, np.ndarray]:
    import torch

    module.eval()
    with torch.no_grad():
        values = module.run({k: torch.from_numpy(v).to(device) for k, v in feed.items()})
    return {k: v.cpu().numpy() for k, v in values.items()}


def _check_label_range(module: Any, labels: np.ndarray, feed: Samples, device: torch.device) -> None:
    first = _outputs(module, feed, device)[module.output_names[0]]
    if first.ndim != 2:
        raise UsageError(
            f"labels need a [batch, classes] first output; {module.output_names[0]!r} is {first.shape}"
        )
    if labels.max() >= first.shape[1]:
        raise ModelLoadError(f"label {labels.max()} is out of range for {first.shape[1]} classes")
