"""The engine checked against ONNX Runtime: one seeded inference of the plan through Polygraphy's
``TrtRunner`` against the float32 ONNX on ONNX Runtime's CPU provider, with the criteria of the FP16 check.

Called only where the backend said the plan can run here (a CUDA device, and for TensorRT-RTX a GPU it
compiled for). Polygraphy picks its TensorRT module once, when ``polygraphy.backend.trt`` is first imported
(``POLYGRAPHY_USE_TENSORRT_RTX``): a process compares engines of one backend.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np

from onnxprune.errors import CapabilityError, VerificationError, first_line
from onnxprune.tolerances import REDUCED_PRECISION
from onnxprune.verify import Comparison, cosine_floor
from onnxprune.verify import compare_runners as compare


def compare_engine(
    plan: bytes, reference: Path, feeds: list[dict[str, np.ndarray]], *, rtx: bool, title: str
) -> Comparison:
    """VerificationError where an output disagrees; CapabilityError where the engine cannot be run."""
    _polygraphy_for(rtx)
    from polygraphy.backend.onnxrt import OnnxrtRunner, SessionFromOnnx
    from polygraphy.backend.trt import EngineFromBytes, TrtRunner
    from polygraphy.exception import PolygraphyException

    reference_runner = OnnxrtRunner(SessionFromOnnx(str(reference), providers=["cpu"]), name="onnxruntime")
    engine_runner = TrtRunner(EngineFromBytes(plan), name=title)
    try:
        comparison = compare_runners(reference_runner, engine_runner, feeds)
    except PolygraphyException as err:  # e.g. Polygraphy finds no CUDA runtime library to run the engine with
        raise CapabilityError(
            f"cannot run the engine to check it: {first_line(err)}; no plan written"
        ) from err
    failed = next((output for output in comparison.outputs if not output.passed), None)
    if failed is not None:
        raise VerificationError(
            f"the {title} engine disagrees with the ONNX model on output {failed.name!r}: {failed.reason}; "
            "no plan written"
        )
    return comparison


def _polygraphy_for(rtx: bool) -> None:
    from polygraphy import config

    if "polygraphy.backend.trt" in sys.modules and bool(config.USE_TENSORRT_RTX) != rtx:
        raise CapabilityError(
            "Polygraphy runs engines of one TensorRT per process and this one already ran the other's; "
            "build in a new process"
        )
    config.USE_TENSORRT_RTX = rtx


def compare_runners(
    reference: Any,
    candidate: Any,
    feeds: list[dict[str, np.ndarray]],
    *,
    min_cosine: float | None = REDUCED_PRECISION.min_cosine,
    rtol: float = REDUCED_PRECISION.rtol,
    atol: float = REDUCED_PRECISION.atol,
) -> Comparison:
    """Runs two Polygraphy runners on ``feeds`` and scores each output, with the criteria of
    ``fp16.verify_fp16``: ``max|a - b| <= atol + rtol * max|a|`` (``a``: the reference) and a cosine
    similarity of at least ``min_cosine``.
    """
    comparison = compare(reference, candidate, feeds, atol=atol, rtol=rtol, criterion="scale")
    comparison.outputs = [cosine_floor(output, min_cosine) for output in comparison.outputs]
    return comparison
