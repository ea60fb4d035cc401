"""Targets for one run, built before training: labels, or everything distillation from a teacher needs.

With a teacher: the held-out split (the last ``holdout`` share of the samples, never trained on), the
teacher's outputs on them (ONNX Runtime), each output's kind (``kinds.py``) and scale, and, when inputs are
augmented or features distilled, the teacher as a PyTorch module (checked against ONNX Runtime like the
student) with the feature targets found at the pruned groups' boundaries (``features.py``). Otherwise the
teacher's outputs on every training sample are computed once, with ONNX Runtime.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import onnx
import torch

from onnxprune.data import split_holdout
from onnxprune.errors import ModelLoadError
from onnxprune.runtime import ort_session
from onnxprune.train.check import check_conversion
from onnxprune.train.features import boundary_features
from onnxprune.train.kinds import output_kinds, with_logits
from onnxprune.train.losses import variance_scales
from onnxprune.train.options import TrainOptions
from onnxprune.train.targets import Batch, Holdout, Targets, teacher_run
from onnxprune.train.torchgraph import OnnxModule

SCALE_SAMPLES = 64  # samples the teacher's output and feature scales are measured on
ORT_BATCH = 32  # samples per ONNX Runtime run of the teacher (a recogniser's output is MBs per sample)
MIN_HOLDOUT = 8  # fewer samples than this held out measure nothing: then no held-out split


def teacher_outputs(teacher: onnx.ModelProto, samples: Mapping[str, np.ndarray]) -> Batch:
    """The teacher's outputs on every sample, from one ONNX Runtime session."""
    names = [o.name for o in teacher.graph.output]
    count = int(next(iter(samples.values())).shape[0])
    session, chunks = ort_session(teacher), []
    for start in range(0, count, ORT_BATCH):
        feed = {k: v[start : start + ORT_BATCH] for k, v in samples.items()}
        chunks.append(session.run(names, feed))
    return {n: np.concatenate([c[k] for c in chunks]).astype(np.float32) for k, n in enumerate(names)}


def split(samples: Batch, options: TrainOptions, teacher: bool) -> tuple[Batch, Batch | None]:
    """(training samples, held-out samples or None)."""
    count = int(next(iter(samples.values())).shape[0])
    if not teacher or options.holdout <= 0 or round(count * options.holdout) < MIN_HOLDOUT:
        return samples, None
    return split_holdout(samples, options.holdout)


def distill_targets(
    student: OnnxModule, model: onnx.ModelProto, teacher: onnx.ModelProto, samples: Batch,
    held: Batch | None, options: TrainOptions, device: torch.device,
    kept: Mapping[str, np.ndarray] | None = None,
) -> tuple[Targets, Holdout | None]:  # fmt: skip
    """Everything distillation from ``teacher`` needs, for training on ``samples``."""
    names = [o.name for o in model.graph.output]
    if [o.name for o in teacher.graph.output] != names:
        raise ModelLoadError(f"--teacher: its outputs must be the student's ({', '.join(names)})")
    probe = {k: v[:SCALE_SAMPLES] for k, v in samples.items()}
    first = teacher_outputs(teacher, probe)
    kinds = output_kinds(first, options.distill)
    kinds = with_logits(kinds, model, {name: values.ndim for name, values in first.items()})
    targets = Targets(kinds=kinds, scales=variance_scales(first))
    assert options.feature_weight is not None
    if options.augmentations or options.feature_weight > 0:
        targets.teacher_module = teacher_module(teacher, probe, device)
        if options.feature_weight > 0:
            targets.features = boundary_features(targets.teacher_module, student, probe, kept)
            targets.scales |= _feature_scales(targets, probe, device)
    else:
        targets.teacher = teacher_outputs(teacher, samples)
    holdout = None if held is None else Holdout(held, teacher_outputs(teacher, held))
    return targets, holdout


def teacher_module(teacher: onnx.ModelProto, feed: Batch, device: torch.device) -> OnnxModule:
    """The teacher in PyTorch, frozen, after the same conversion check as the student."""
    module = OnnxModule(teacher).to(device)
    check_conversion(module, teacher, {k: v[:8] for k, v in feed.items()}, device)
    module.eval()
    for param in module.parameters():
        param.requires_grad_(False)
    return module


def _feature_scales(targets: Targets, probe: Batch, device: torch.device) -> dict[str, float]:
    """Each feature's variance over the probe samples, from running sums (feature maps are large)."""
    assert targets.teacher_module is not None
    module = targets.teacher_module
    sums = {f.name: np.zeros(3) for f in targets.features}  # count, sum, sum of squares
    for start in range(0, int(next(iter(probe.values())).shape[0]), 16):
        inputs = [torch.from_numpy(probe[n][start : start + 16]).to(device) for n in module.input_names]
        got = teacher_run(module, inputs, targets.features)
        for name, acc in sums.items():
            value = got[name].double()
            acc += [value.numel(), float(value.sum()), float((value * value).sum())]
    scales = {}
    for name, (n, total, squares) in sums.items():
        mean_square = squares / max(n, 1)
        scales[name] = max(mean_square - (total / max(n, 1)) ** 2, 1e-8 * max(mean_square, 1e-12))
    return scales
