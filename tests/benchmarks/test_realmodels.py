"""benchmarks/realmodels: the rendered data, the box matching and the one-number scoring command.

Drawing needs Pillow and the DejaVu fonts only; the clients, the models and shapely come with the
``[bench]`` extra, and the tests that need them skip without it.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from realmodels import data, models

ROOT = Path(__file__).resolve().parents[2]
SCORE = ROOT / "benchmarks" / "realmodels" / "score.py"
needs_clients = pytest.mark.skipif(
    not models.client_available(), reason="the [bench] extra (rapidocr-onnxruntime, ...) is not installed"
)


def test_items_do_not_depend_on_how_many_are_drawn() -> None:
    few, more = data.rec_crops("eval", 3), data.rec_crops("eval", 5)
    for a, b in zip(few, more[:3], strict=True):
        assert a.text == b.text and np.array_equal(a.image, b.image)


def test_calibration_and_evaluation_images_differ() -> None:
    for task in ("rec", "cls"):
        calib = {c.image.tobytes() for c in data.SETS[task]("calib", 20)}
        assert not calib & {c.image.tobytes() for c in data.SETS[task]("eval", 20)}


def test_line_crops_fit_the_recognizers_padded_width() -> None:
    crops = data.rec_crops("eval", 60)
    assert max(c.image.shape[1] / c.image.shape[0] for c in crops) < 320 / 48
    assert len({c.text for c in crops}) > 40  # varied strings
    assert all(c.image.dtype == np.uint8 and c.image.shape[2] == 3 for c in crops)


def test_pages_have_boxes_inside_and_the_images_vary() -> None:
    pages = data.det_pages("eval", 4)
    for page in pages:
        assert 3 <= len(page.boxes) == len(page.texts)
        height, width = page.image.shape[:2]
        corners = np.concatenate(page.boxes)
        assert corners.min() >= 0 and corners[:, 0].max() < width and corners[:, 1].max() < height
    # Input-sensitive data: two pages differ by more than noise.
    a, b = (p.image.astype(np.float64) for p in pages[:2])
    assert np.linalg.norm(a - b) / np.linalg.norm(a) > 1e-2


def test_rotations_are_labelled_in_turn() -> None:
    assert [c.angle for c in data.cls_crops("eval", 4)] == [0, 180, 0, 180]
    pages = data.orient_pages("eval", 4)
    assert [p.angle for p in pages] == [0, 90, 180, 270]
    assert pages[0].image.shape[:2] == pages[1].image.shape[1::-1]


def test_cached_sets_are_served_as_drawn(tmp_path: Path) -> None:
    drawn = data.cached("rec", "eval", 4, folder=tmp_path)
    again = data.cached("rec", "eval", 3, folder=tmp_path)  # a prefix of the longer file
    assert [c.text for c in again] == [c.text for c in drawn[:3]]
    assert len(list(tmp_path.iterdir())) == 1


def test_boxes_match_one_to_one_at_iou_one_half() -> None:
    pytest.importorskip("shapely")
    from realmodels.score import _matches

    square = np.array([[0, 0], [10, 0], [10, 10], [0, 10]], dtype=np.float32)
    shift = np.array([1.0, 0.0], dtype=np.float32)
    assert _matches([square], [square + 3 * shift]) == 1  # IoU 70 / 130
    assert _matches([square], [square + 4 * shift]) == 0  # IoU 60 / 140
    assert _matches([square, square + shift], [square]) == 1  # one-to-one


def test_a_missing_model_is_one_line_and_exit_1(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, str(SCORE), "--task", "rec", str(tmp_path / "none.onnx")],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 1 and done.stdout == ""
    assert done.stderr.strip().count("\n") == 0 and "not found" in done.stderr


@needs_clients
def test_the_score_command_prints_one_number() -> None:
    done = subprocess.run(
        [sys.executable, str(SCORE), "--task", "cls", str(models.MODELS["v2-cls"].file()), "--n", "20"],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    assert 90.0 <= float(done.stdout) <= 100.0 and done.stdout.count("\n") == 1


@needs_clients
def test_calibration_tensors_are_what_the_client_feeds() -> None:
    from realmodels import calib

    x = calib.tensors("rec", 3)
    assert x.shape == (3, *models.REC_SHAPE[1:]) and x.dtype == np.float32
    assert x.min() >= -1.0 and x.max() <= 1.0  # the client's (x / 255 - 0.5) / 0.5, zero padding
