"""``train()``: an ONNX model in, a trained ONNX model out, on PyTorch (the ``[train]`` extra, lazily).

Order of work: options and paths, data and targets (labels or the teacher's outputs from ONNX Runtime),
the conversion and its check against ONNX Runtime, training with a checkpoint per epoch, the trained values
written back into the same graph, validation, the atomic write.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import onnx

from onnxprune import files as graphs
from onnxprune.data import static_batch
from onnxprune.errors import CapabilityError, ModelLoadError, OnnxPruneError, UsageError
from onnxprune.runtime import ort_session
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

    from onnxprune.train.loop import EvalSet, Targets

CHECK_SAMPLES = 8  # samples the conversion and the written model are checked on


class TrainingInterrupted(OnnxPruneError):
    """Ctrl-C during training: nothing is written; the last checkpoint stays for ``--resume``."""

    exit_code = 130


@dataclass
class TrainResult:
    output: Path
    checkpoint: Path
    history: list[dict[str, Any]] = field(default_factory=list)
    conversion_error: float = 0.0  # PyTorch vs ONNX Runtime before training, max relative error
    export_error: float = 0.0  # the written ONNX vs the trained PyTorch module
    batch_norms: int = 0
    device: str = "cpu"
    classes: list[str] = field(default_factory=list)  # class folders: label k is classes[k]


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
    inputs = [p for p in (source, teacher) if p is not None]
    output = graphs.check_output_path(output, inputs)
    checkpoint = Path(options.checkpoint or output.with_name(output.name + ".ckpt"))
    graphs.check_output_path(checkpoint, [*inputs, output])
    torch = require_torch()
    model = graphs.read_model(source)
    _check_dynamic_batch(model)
    samples, file_labels = load_samples(data, model, images)
    targets = _targets(model, samples, file_labels, labels, teacher, options.distill)
    eval_set = _eval_set(model, eval_data, eval_labels, images)
    device = _device(torch, options.device)
    result = _train(
        model,
        samples,
        targets,
        eval_set,
        options,
        output,
        checkpoint,
        device,
        graphs.uses_external_data(source),
    )
    result.classes = class_names(Path(data)) or []
    return result


def _train(
    model: onnx.ModelProto, samples: Samples, targets: Targets, eval_set: EvalSet | None,
    options: TrainOptions, output: Path, checkpoint: Path, device: torch.device, external: bool,
) -> TrainResult:  # fmt: skip
    import torch

    from onnxprune.train import export, loop
    from onnxprune.train.check import check_conversion
    from onnxprune.train.torchgraph import OnnxModule

    torch.manual_seed(options.seed)
    if device.type == "cpu":
        torch.use_deterministic_algorithms(True, warn_only=True)
    module = OnnxModule(model).to(device)
    feed = {name: array[:CHECK_SAMPLES] for name, array in samples.items()}
    result = TrainResult(output, checkpoint, device=str(device), batch_norms=export.bn_count(model))
    result.conversion_error = check_conversion(module, model, feed, device)
    _check_label_range(module, targets, feed, device)
    if options.augment != "none" and targets.teacher_model is not None:
        targets.teacher_module = _teacher_module(targets.teacher_model, feed, device)
    try:
        with _progress(options, sample_count(samples)) as hooks:
            history = loop.fit(module, samples, targets, options, checkpoint, device, eval_set, *hooks)
    except KeyboardInterrupt:
        where = f"the last checkpoint {checkpoint} is kept (rerun with --resume)"
        if not checkpoint.exists():
            where = "no epoch had finished, so there is no checkpoint"

        raise TrainingInterrupted(f"interrupted: nothing written; {where}") from None
    result.history = history.epochs
    trained = export.write_back(model, module.trained_arrays(), module.sources)
    expected = _outputs(module, feed, device)
    result.export_error = export.check_trained(model, trained, feed, expected)
    graphs.save_model(trained, output, external_data=True if external else None)
    if options.checkpoint is None:
        checkpoint.unlink(missing_ok=True)  # the default one serves a --resume only until the run succeeds
    return result


def _check_dynamic_batch(model: onnx.ModelProto) -> None:

    fixed = static_batch(model)
    if fixed is not None:
        name = model.graph.input[0].name
        raise ModelLoadError(
            f"train needs a dynamic batch axis: input {name!r} is fixed at batch {fixed} "
            "(export it with a dynamic first axis)"
        )


def _targets(
    model: onnx.ModelProto, samples: Samples, file_labels: np.ndarray | None,
    labels: str | Path | None, teacher: str | Path | None, distill: str,
) -> Targets:  # fmt: skip
    from onnxprune.train.loop import Targets

    if teacher is not None:
        return _teacher_targets(model, graphs.read_model(teacher), samples, distill)
    if labels is not None:
        return Targets(labels=load_labels(labels, sample_count(samples)))
    if file_labels is None:
        raise UsageError("no labels: give --labels, a data .npz with 'y', or --teacher for distillation")
    return Targets(labels=file_labels)


def _teacher_targets(
    model: onnx.ModelProto, teacher: onnx.ModelProto, samples: Samples, distill: str
) -> Targets:
    """The teacher's outputs for every sample, computed once with ONNX Runtime (not once per epoch)."""
    from onnxprune.train.loop import Targets

    names = [o.name for o in model.graph.output]
    if [o.name for o in teacher.graph.output] != names:
        raise ModelLoadError(f"--teacher: its outputs must be the student's ({', '.join(names)})")
    count, chunks = sample_count(samples), []
    session = ort_session(teacher)  # one session for every batch, not one per 256 samples
    for start in range(0, count, 256):
        feed = {k: v[start : start + 256] for k, v in samples.items()}
        chunks.append(dict(zip(names, session.run(names, feed), strict=True)))
    outputs = {n: np.concatenate([c[n] for c in chunks]).astype(np.float32) for n in names}
    classifier = _is_classifier(names, outputs)
    if distill == "kl" and not classifier:
        shapes = ", ".join(f"{n} {list(outputs[n].shape)}" for n in names)
        raise UsageError(
            f"--distill kl needs one [batch, classes] output (>= 2 classes); the model has {shapes}"
        )
    classifier = classifier and distill != "mse"
    return Targets(teacher=outputs, classifier=classifier, teacher_model=teacher)


def _is_classifier(names: list[str], outputs: dict[str, np.ndarray]) -> bool:
    """One output, [batch, classes] with 2 or more classes: logits, where KL on softmax means something."""
    return len(names) == 1 and outputs[names[0]].ndim == 2 and outputs[names[0]].shape[1] >= 2


def _teacher_module(teacher: onnx.ModelProto, feed: Samples, device: torch.device) -> Any:
    """The teacher in PyTorch, for augmented batches (checked against ONNX Runtime like the student)."""
    from onnxprune.train.check import check_conversion
    from onnxprune.train.torchgraph import OnnxModule

    module = OnnxModule(teacher).to(device)
    check_conversion(module, teacher, feed, device)
    module.eval()
    for param in module.parameters():
        param.requires_grad_(False)
    return module


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


def _check_label_range(module: Any, targets: Targets, feed: Samples, device: torch.device) -> None:
    if targets.labels is None:
        return
    first = _outputs(module, feed, device)[module.output_names[0]]
    if first.ndim != 2:
        raise UsageError(
            f"labels need a [batch, classes] first output; {module.output_names[0]!r} is {first.shape}"
        )
    if targets.labels.max() >= first.shape[1]:
        raise ModelLoadError(f"label {targets.labels.max()} is out of range for {first.shape[1]} classes")


def _progress(options: TrainOptions, count: int):
    from onnxprune.train.progress import epoch_progress

    return epoch_progress(options, count)
