"""Do the model's BatchNormalization running statistics still describe its inputs on the training data?

Fine-tuning keeps them (``--batch-norm frozen``) where they do: a few hundred samples in batches of 16
should not re-estimate what the original learnt on its whole training set. Where a prune moved what reaches
a BN (a data-free prune: nothing refitted the layers before it), they no longer do, and training must
re-estimate them (``update``). With a teacher, what counts is the drift beyond the teacher's own on the
same samples: statistics learnt on other data than the user's are off in the original too, and updating
them then moves the student away from the teacher it is distilled from. Measured on 64 samples, in eval
mode:

- unpruned: the plain MNIST nets 0.04-0.23, the PP-OCRv5 recogniser 0.30 and classifier 0.28 on rendered
  text lines, the PP-OCRv5 detector 2.49 on rendered pages (its statistics came from photographs);
- pruned at MACs 0.5-0.7 with calibration: the recogniser and classifier 0.27-0.44, the detector 2.49 (0.00
  beyond the original's): updating its statistics made every epoch worse (held-out cosine 0.993 -> 0.949
  -> 0.860), frozen is right;
- the MNIST ResNet and VGG after a data-free ``prune --ratio 0.5``: 1.2 and 2.8 (variances off by 3-16x);
  frozen, distillation brought the VGG back to 16-41% only (95% updated).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch

from onnxprune.train.torchgraph import OnnxModule

# Above this drift (about a 2x variance ratio, or a mean off by 0.7 running standard deviations, in half the
# channels of half the BNs) fine-tuning updates the statistics.
DRIFT_LIMIT = 0.7
SAMPLES = 64
# Samples per forward pass: a pass returns every BN's input (a detector at 640x640 holds GBs of them for 64
# samples at once).
CHUNK = 8


def drift(module: OnnxModule, samples: Mapping[str, np.ndarray], device: torch.device) -> float | None:
    """The median over BNs of the median over channels of max(|mean - running mean| / running std,
    |log(variance / running variance)|) of each BN's input on the first samples; None without a BN."""
    found = per_bn(module, samples, device)
    return float(np.median(list(found.values()))) if found else None


def per_bn(module: OnnxModule, samples: Mapping[str, np.ndarray], device: torch.device) -> dict[str, float]:
    """Each BN's drift (the median over its channels; see ``drift``), by the name of the BN's input."""
    steps = [s for s in module.steps if s.call.op == "BatchNormalization"]
    if not steps:
        return {}
    sums, squares, counts = _channel_sums(module, samples, [s.inputs[0] for s in steps], device)
    found = {}
    for step in steps:
        name = step.inputs[0]
        mean = sums[name] / counts[name]
        var = (squares[name] / counts[name] - mean * mean).clamp_min(0.0)
        running_mean = module.tensor(step.inputs[3]).double().cpu()
        running_var = module.tensor(step.inputs[4]).double().cpu()
        eps = float(step.call.get("epsilon", 1e-5))
        shift = (mean - running_mean).abs() / (running_var + eps).sqrt()
        spread = ((var + eps) / (running_var + eps)).log().abs()
        found[name] = float(torch.maximum(shift, spread).median())
    return found


def _channel_sums(
    module: OnnxModule, samples: Mapping[str, np.ndarray], names: list[str], device: torch.device
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], dict[str, int]]:
    """Per tensor, the sum and the sum of squares of each channel (axis 1) over the first SAMPLES samples
    and every other axis, in float64, and how many values each sum holds."""
    sums: dict[str, torch.Tensor] = {}
    squares: dict[str, torch.Tensor] = {}
    counts: dict[str, int] = {}
    total = min(SAMPLES, len(next(iter(samples.values()))))
    module.eval()
    with torch.no_grad():
        for start in range(0, total, CHUNK):
            stop = min(start + CHUNK, total)
            feed = {name: torch.from_numpy(np.ascontiguousarray(samples[name][start:stop])).to(device)
                    for name in module.input_names}  # fmt: skip
            values = module.run(feed, keep=names)
            for name in names:
                x = values[name].double()
                axes = [0, *range(2, x.ndim)]
                sums[name] = sums.get(name, 0) + x.sum(axes).cpu()
                squares[name] = squares.get(name, 0) + (x * x).sum(axes).cpu()
                counts[name] = counts.get(name, 0) + x.numel() // x.shape[1]
    return sums, squares, counts


def choose(
    module: OnnxModule, samples: Mapping[str, np.ndarray], device: torch.device,
    teacher: OnnxModule | None = None,
) -> tuple[str, float | None]:  # fmt: skip
    """``(frozen | update, the drift)`` for ``--batch-norm auto`` when fine-tuning. With a ``teacher``, the
    drift is the median over the BNs both have (a pruned model keeps its tensor names) of how much more
    the student's BN drifts than the teacher's on the same samples."""
    mine = per_bn(module, samples, device)
    if not mine:
        return "frozen", None
    theirs = per_bn(teacher, samples, device) if teacher is not None else {}
    beyond = [mine[name] - theirs[name] for name in mine if name in theirs]
    measured = float(np.median(beyond or list(mine.values())))
    return ("update" if measured > DRIFT_LIMIT else "frozen"), measured
