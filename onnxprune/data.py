"""Calibration data: many unlabeled samples for a model, batch axis 0, checked against its inputs.

Sources (``--calib``):
- an ``.npz`` keyed by input name, or a Polygraphy ``--save-inputs`` JSON (read by ``inputs.py``, the same
  formats as ``--inputs``); every feed's samples are stacked along axis 0;
- a directory of ``.npy`` files (single-input models): each file one sample (the input's rank minus one) or a
  batch (the input's rank), taken in sorted name order;
- a directory of images (Pillow, the ``[images]`` extra) for an NCHW input with 1 or 3 channels: resized to
  ``size`` (H, W) or the input's static spatial dims, scaled to [0, 1], then ``(x - mean) / std`` per channel.

Bad data is a ``ModelLoadError`` (one line): names, ranks, static dims other than the batch, dtypes, NaNs or
infinities, an empty folder, an unreadable image. Bad image options are a ``UsageError`` naming the flags of
the command that was run: ``--calib-size/-mean/-std`` by default, ``--image-*`` for ``onnxprune train``
(``flags``). Nothing here writes a file.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np
import onnx

from onnxprune import inputs as _inputs
from onnxprune.errors import ModelLoadError, OnnxPruneError, UsageError, first_line

Samples = dict[str, np.ndarray]
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")


def load_calibration(
    source: str | Path,
    model: onnx.ModelProto,
    *,
    size: tuple[int, int] | None = None,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    flags: str = "--calib",
) -> Samples:
    """All calibration samples in ``source`` for ``model``, by input name, batch axis 0.

    Args:
        source: an ``.npz`` / Polygraphy ``.json`` file, or a directory of ``.npy`` files or of images.
        model: the model whose graph inputs the data must fit (the original, unpruned one).
        size, mean, std: images only: target (H, W), and per-channel normalisation (one value, or one per
            channel); defaults: the input's static spatial dims, mean 0, std 1.
        flags: the prefix of the command's image options, for messages: ``--calib`` gives
            ``--calib-size``, ``--calib-mean``, ``--calib-std``.

    Raises:
        ModelLoadError: the data is missing, unreadable, or does not fit the model.
        UsageError: image options given for non-image data, or malformed.
    """
    path = Path(source)
    specs = _free_batch(_inputs._graph_inputs(model))
    if not path.exists():
        raise ModelLoadError(f"calibration data {path} not found")
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.is_file() and not p.name.startswith("."))
        images = [p for p in files if p.suffix.lower() in IMAGE_SUFFIXES]
        arrays = [p for p in files if p.suffix == ".npy"]
        if not images and not arrays:
            raise ModelLoadError(f"calibration folder {path} has no .npy files and no images")
        if images and arrays:
            raise ModelLoadError(f"calibration folder {path} mixes .npy files and images; keep one kind")
        if images:
            samples = _images(images, specs, size, mean, std, flags)
        else:
            _no_image_options(size, mean, std, flags)
            samples = _npy_folder(arrays, specs)
    else:
        _no_image_options(size, mean, std, flags)
        samples = _stacked_feeds(path, specs)
    return _checked(samples, specs, path.name)


def check_samples(
    samples: Mapping[str, np.ndarray], model: onnx.ModelProto, where: str = "calibration samples"
) -> Samples:
    """Samples given as arrays (the API's ``CalibRequest(samples=...)``), checked and cast to the inputs'
    types as a file's are: numpy's float64 for a float32 input is no mistake."""
    specs = _free_batch(_inputs._graph_inputs(model))
    return _checked(_inputs._check_feed(samples, specs, where), specs, where)


def batches(samples: Mapping[str, np.ndarray], batch_size: int) -> Iterator[Samples]:
    """Consecutive feeds of at most ``batch_size`` samples (the last may be smaller)."""
    if batch_size < 1:
        raise UsageError(f"batch size must be at least 1, got {batch_size}")
    total = count(samples)
    for start in range(0, total, batch_size):
        yield {name: array[start : start + batch_size] for name, array in samples.items()}


def count(samples: Mapping[str, np.ndarray]) -> int:
    """The number of samples (the shared length of axis 0)."""
    return len(next(iter(samples.values()))) if samples else 0


def take(samples: Mapping[str, np.ndarray], limit: int | None) -> Samples:
    """The first ``limit`` samples (all when None)."""
    if limit is not None and limit < 1:
        raise UsageError(f"--calib-samples must be at least 1, got {limit}")
    return {name: array[:limit] for name, array in samples.items()}


def split_holdout(samples: Mapping[str, np.ndarray], fraction: float) -> tuple[Samples, Samples]:
    """(fit, held-out): the last ``fraction`` of the samples is held out; at least one sample on each side.

    A deterministic tail rather than a random draw, so a run is reproducible and the user can predict which
    samples measured the fidelity.
    """
    if not 0 < fraction < 1:
        raise UsageError(f"held-out fraction must be in (0, 1), got {fraction}")
    total = count(samples)
    if total < 2:
        raise ModelLoadError(f"calibration data has {total} sample(s); need at least 2 to hold some out")
    held = min(total - 1, max(1, round(total * fraction)))
    fit = {name: array[: total - held] for name, array in samples.items()}
    return fit, {name: array[total - held :] for name, array in samples.items()}


def parse_size(text: str, option: str = "--calib-size") -> tuple[int, int]:
    """``--calib-size`` (or ``option``) ``HxW``, or one number for a square."""
    parts = text.lower().split("x")
    try:
        dims = tuple(int(p) for p in parts)
    except ValueError:
        dims = ()
    if len(dims) == 1:
        dims = dims * 2
    if len(dims) != 2 or min(dims) < 1:
        raise UsageError(f"bad {option} {text!r}: expected HxW, e.g. 224x224")
    return dims[0], dims[1]


def parse_floats(text: str, option: str) -> tuple[float, ...]:
    """``--calib-mean`` / ``--calib-std`` (or ``option``): ``m`` or ``m,m,m``."""
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        expected = "expected a number or three, e.g. 0.485,0.456,0.406"
        raise UsageError(f"bad {option} {text!r}: {expected}") from None
    return values


def _free_batch(specs: list) -> list:
    # Calibration holds many samples even where the model's batch is static (say 1): axis 0 is free here.
    return [s if not s.dims else replace(s, dims=(None, *s.dims[1:])) for s in specs]


def _no_image_options(size: object, mean: object, std: object, flags: str) -> None:
    if size is not None or mean is not None or std is not None:
        raise UsageError(f"{flags}-size/{flags}-mean/{flags}-std apply to a folder of images only")


def _stacked_feeds(path: Path, specs: list) -> Samples:
    feeds = _inputs._load_feeds(path)
    checked = [_inputs._check_feed(feed, specs, f"{path.name}, feed {i}") for i, feed in enumerate(feeds)]
    for feed in checked:
        for name, array in feed.items():
            if array.ndim == 0:
                raise ModelLoadError(f"{path.name}: {name!r} is a scalar; calibration needs a batch axis")
    try:
        return {s.name: np.concatenate([feed[s.name] for feed in checked]) for s in specs}
    except ValueError as err:
        raise ModelLoadError(f"{path.name}: feeds cannot be stacked on axis 0: {first_line(err)}") from err


def _npy_folder(files: list[Path], specs: list) -> Samples:
    if len(specs) != 1:
        names = ", ".join(s.name for s in specs)
        raise ModelLoadError(f".npy folders feed single-input models (this takes {names}); use .npz")
    spec = specs[0]
    rank = len(spec.dims) if spec.dims is not None else None
    parts = []
    for file in files:
        try:
            array = np.load(file, allow_pickle=False)
        except (OSError, ValueError) as err:
            raise ModelLoadError(f"cannot read {file.name}: {first_line(err)}") from err
        if rank is not None and array.ndim == rank - 1:
            array = array[None]
        elif rank is not None and array.ndim != rank:
            raise ModelLoadError(
                f"{file.name} has shape {_inputs.fmt_dims(array.shape)}; input {spec.name!r} takes "
                f"{_inputs.fmt_dims(spec.dims)} (one sample, or a batch)"
            )
        parts.append(array)
    try:
        return {spec.name: np.concatenate(parts)}
    except ValueError as err:
        raise ModelLoadError(f"the .npy files do not share one sample shape: {first_line(err)}") from err


def _images(
    files: list[Path],
    specs: list,
    size: tuple[int, int] | None,
    mean: Sequence[float] | None,
    std: Sequence[float] | None,
    flags: str,
) -> Samples:
    spec = _image_spec(specs)
    channels = spec.dims[1]
    size = size or _static_size(spec, flags)
    shift = _per_channel(mean, channels, f"{flags}-mean", 0.0)
    scale = _per_channel(std, channels, f"{flags}-std", 1.0)
    if np.any(scale == 0):
        raise UsageError(f"{flags}-std must not be 0")
    pixels = np.stack([_read_image(file, channels, size) for file in files])
    normalised = (pixels - shift[None, :, None, None]) / scale[None, :, None, None]
    return {spec.name: normalised.astype(spec.dtype)}


def _image_spec(specs: list):
    if len(specs) != 1:
        raise ModelLoadError("a folder of images feeds a single-input model; use .npz for several inputs")
    spec = specs[0]
    dims = spec.dims
    if dims is None or len(dims) != 4 or dims[1] not in (1, 3) or spec.dtype.kind != "f":
        shown = _inputs.fmt_dims(dims) if dims is not None else "no shape"
        raise ModelLoadError(
            f"images feed a float NCHW input with 1 or 3 channels; {spec.name!r} is {shown} {spec.dtype}"
        )
    return spec


def _static_size(spec, flags: str) -> tuple[int, int]:
    height, width = spec.dims[2], spec.dims[3]
    if not isinstance(height, int) or not isinstance(width, int):
        raise UsageError(f"input {spec.name!r} has dynamic spatial dims; give {flags}-size HxW for images")
    return height, width


def _per_channel(values: Sequence[float] | None, channels: int, option: str, default: float) -> np.ndarray:
    if values is None:
        return np.full(channels, default)
    if len(values) not in (1, channels):
        raise UsageError(f"{option} has {len(values)} values; the input has {channels} channel(s)")
    return np.broadcast_to(np.asarray(values, dtype=np.float64), (channels,))


def _read_image(file: Path, channels: int, size: tuple[int, int]) -> np.ndarray:
    try:
        from PIL import Image, UnidentifiedImageError
    except ImportError:
        raise OnnxPruneError(
            "reading a folder of images needs Pillow: pip install 'onnxprune[images]'"
        ) from None
    try:
        with Image.open(file) as image:
            converted = image.convert("L" if channels == 1 else "RGB")
            resized = converted.resize((size[1], size[0]), Image.Resampling.BILINEAR)
            array = np.asarray(resized, dtype=np.float64) / 255.0
    except (OSError, ValueError, UnidentifiedImageError) as err:
        raise ModelLoadError(f"cannot read image {file.name}: {first_line(err)}") from err
    return array[None] if channels == 1 else array.transpose(2, 0, 1)


def _checked(samples: Samples, specs: list, where: str) -> Samples:
    total = {len(array) for array in samples.values()}
    if len(total) != 1:
        raise ModelLoadError(f"{where}: inputs have different sample counts ({sorted(total)})")
    if total == {0}:
        raise ModelLoadError(f"{where}: no samples")
    for spec in specs:
        array = samples[spec.name]
        if not spec.fits(array.shape):
            raise ModelLoadError(
                f"{where}: input {spec.name!r} has samples of shape {_inputs.fmt_dims(array.shape[1:])}, "
                f"the model takes {_inputs.fmt_dims(spec.dims[1:])}"
            )
        if array.dtype.kind == "f" and not np.isfinite(array).all():
            raise ModelLoadError(f"{where}: input {spec.name!r} contains NaN or infinite values")
    return samples


def static_batch(model: onnx.ModelProto) -> int | None:
    """The model's static batch size (axis 0 of its first input), or None when dynamic."""
    specs = _inputs._graph_inputs(model)
    if not specs or specs[0].dims is None or not specs[0].dims:
        return None
    first = specs[0].dims[0]
    return first if isinstance(first, int) else None
