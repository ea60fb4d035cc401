"""Training samples and labels from files, checked against the model (no torch here).

- ``.npz``: arrays keyed by the model's input names, or ``x`` for a single-input model; an array ``y``
  beside them holds the labels. Other sources (Polygraphy JSON, folders of ``.npy`` files or images) are
  read by ``onnxprune.data.load_calibration``, the same loader as calibration.
- class folders: a directory whose entries are all directories, one per class, of images (or ``.npy``
  files); the labels are the folders' indices in sorted name order (as torchvision's ImageFolder).
- labels: ``--labels`` (``.npy``, or ``.npz`` with ``y`` or a single array), else ``y`` in the data file.
"""

from __future__ import annotations

import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx

from onnxprune import inputs as _inputs
from onnxprune.data import load_calibration
from onnxprune.errors import ModelLoadError, UsageError, first_line

Samples = dict[str, np.ndarray]
LABEL_KEY = "y"


# The prefix of train's image options (--image-size/-mean/-std), for the messages of the shared loader.
IMAGE_FLAGS = "--image"


@dataclass(frozen=True)
class ImageOptions:
    """How image files become input tensors (as calibration's --calib-size/-mean/-std)."""

    size: tuple[int, int] | None = None
    mean: Sequence[float] | None = None
    std: Sequence[float] | None = None


def load_samples(
    source: str | Path, model: onnx.ModelProto, images: ImageOptions | None = None
) -> tuple[Samples, np.ndarray | None]:
    """All samples in ``source`` by input name (batch axis 0), and the labels it carries, if any."""
    path, images = Path(source), images or ImageOptions()
    classes = class_names(path)
    if classes:
        return _class_folders(path, classes, model, images)
    if path.suffix != ".npz" or not path.is_file():
        return _load(path, model, images), None
    if images != ImageOptions():
        raise UsageError("--image-size/--image-mean/--image-std apply to folders of images only")
    arrays = _read_npz(path)
    specs = _inputs._graph_inputs(model)
    names = [s.name for s in specs]
    feed = {k: v for k, v in arrays.items() if k != LABEL_KEY}
    if len(names) == 1 and names[0] not in feed and set(feed) == {"x"}:
        feed = {names[0]: feed["x"]}  # the common (x, y) layout of a labelled set
    free = [s.__class__(s.name, s.dtype, (None,) + s.dims[1:] if s.dims else s.dims) for s in specs]
    checked = _inputs._check_feed(feed, free, path.name)
    counts = {name: array.shape[0] if array.ndim else 0 for name, array in checked.items()}
    if len(set(counts.values())) != 1 or 0 in counts.values():
        raise ModelLoadError(f"{path.name}: inputs need one batch axis of one length, got {counts}")
    labels = arrays.get(LABEL_KEY)
    return checked, None if labels is None else check_labels(labels, next(iter(counts.values())), path)


def class_names(path: Path) -> list[str] | None:
    """The sorted class folder names when ``path`` is a folder of class folders (and nothing else)."""
    if not path.is_dir():
        return None
    entries = [p for p in path.iterdir() if not p.name.startswith(".")]
    folders = sorted(p.name for p in entries if p.is_dir())
    if not folders:
        return None
    if len(folders) != len(entries):
        raise ModelLoadError(f"{path}: mixes class folders and files; keep one kind")
    return folders


def _class_folders(
    path: Path, classes: list[str], model: onnx.ModelProto, images: ImageOptions
) -> tuple[Samples, np.ndarray]:
    """Every class folder read like calibration data, concatenated; label = the folder's sorted index."""
    parts = [_load(path / name, model, images) for name in classes]
    samples = {key: np.concatenate([part[key] for part in parts]) for key in parts[0]}
    labels = np.concatenate([np.full(sample_count(part), k, np.int64) for k, part in enumerate(parts)])
    return samples, labels


def _load(path: Path, model: onnx.ModelProto, images: ImageOptions) -> Samples:
    return load_calibration(
        path, model, size=images.size, mean=images.mean, std=images.std, flags=IMAGE_FLAGS
    )


def load_labels(source: str | Path, count: int) -> np.ndarray:
    """Integer class labels from ``.npy`` or ``.npz`` (``y``, or its only array), one per sample."""
    path = Path(source)
    if not path.is_file() or path.suffix not in (".npy", ".npz"):
        raise ModelLoadError(f"labels file {path} not found, or neither .npy nor .npz")
    if path.suffix == ".npy":
        try:
            labels = np.load(path, allow_pickle=False)
        except (OSError, ValueError) as err:
            raise ModelLoadError(f"cannot read labels {path}: {first_line(err)}") from None
    else:
        arrays = _read_npz(path)
        if LABEL_KEY not in arrays and len(arrays) != 1:
            raise ModelLoadError(f"{path.name}: no array 'y' among {', '.join(arrays)}")
        labels = arrays.get(LABEL_KEY, next(iter(arrays.values())))
    return check_labels(labels, count, path)


def check_labels(labels: np.ndarray, count: int, path: Path) -> np.ndarray:
    labels = np.asarray(labels)
    if labels.ndim != 1 or labels.dtype.kind not in "iu":
        raise ModelLoadError(
            f"{path.name}: labels must be one integer per sample, got {labels.dtype} {labels.shape}"
        )
    if len(labels) != count:
        raise ModelLoadError(f"{path.name}: {len(labels)} labels for {count} samples")
    if labels.size and labels.min() < 0:
        raise ModelLoadError(f"{path.name}: labels must be >= 0, got {labels.min()}")
    return labels.astype(np.int64)


def sample_count(samples: Samples) -> int:
    return int(next(iter(samples.values())).shape[0])


def _read_npz(path: Path) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as data:
            return {name: data[name] for name in data.files}
    except (OSError, ValueError, zipfile.BadZipFile) as err:
        raise ModelLoadError(f"cannot read {path}: {first_line(err)}") from None
