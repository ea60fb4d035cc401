"""Proxy samples for a search: a fully convolutional model (a detector's input and outputs all of dynamic
height and width) is evaluated on centre crops of its calibration samples, and on fewer of them where each
is large. Its channels see the same textures at the same scale in a crop (a resize would change the scale
every layer was trained for), a plan's cost is a cost in every window, and the evaluations that a scan runs
by the hundred cost what the crop's pixels cost."""

from __future__ import annotations

import onnx

from onnxprune.data import Samples, count, take

# Side of the crops of a fully convolutional model's samples.
CROP = 320
# Pixels the evaluations of one plan may run, all samples together: 32 samples of 224 x 224.
PIXEL_BUDGET = 32 * 224 * 224
MIN_SAMPLES = 8


def fully_convolutional(model: onnx.ModelProto) -> bool:
    """One 4-D input and only 4-D outputs, all of dynamic height and width."""
    inits = {t.name for t in model.graph.initializer}
    inputs = [v for v in model.graph.input if v.name not in inits]
    tensors = inputs + list(model.graph.output)
    return len(inputs) == 1 and all(_dynamic_spatial(v) for v in tensors)


def _dynamic_spatial(value: onnx.ValueInfoProto) -> bool:
    dims = value.type.tensor_type.shape.dim
    return len(dims) == 4 and all(not (d.HasField("dim_value") and d.dim_value > 0) for d in dims[2:])


def proxy(samples: Samples, model: onnx.ModelProto, wanted: int) -> tuple[Samples, str]:
    """``wanted`` samples (fewer where each is large), centre-cropped where the model is fully
    convolutional; and how to say what they are."""
    if not samples or not fully_convolutional(model):
        found = take(samples, min(wanted, count(samples)))
        return found, f"{count(found)} calibration samples"
    cropped = {name: _centre(array) for name, array in samples.items()}
    height, width = next(iter(cropped.values())).shape[2:]
    fits = max(MIN_SAMPLES, PIXEL_BUDGET // max(height * width, 1))
    found = take(cropped, min(wanted, fits, count(cropped)))
    return found, f"{count(found)} calibration samples (centre {height}x{width} crops)"


def _centre(array):  # type: ignore[no-untyped-def]
    if array.ndim != 4:
        return array
    height, width = array.shape[2:]
    top, left = max(0, (height - CROP) // 2), max(0, (width - CROP) // 2)
    return array[:, :, top : top + min(height, CROP), left : left + min(width, CROP)]
