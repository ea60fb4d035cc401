"""Calibration's linear algebra on one BLAS thread, wherever it runs.

A threaded BLAS sums in an order that depends on its thread count: the same refit gave a MNIST VGG at MACs
0.7 a cosine of 0.9763533 with ``OMP_NUM_THREADS=1`` and 0.9763567 with 2, so a point calibrated on a Ray
worker (one BLAS thread) differed from one process's. The grams and solves are small next to the ONNX
Runtime runs that capture their data, which this does not touch.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import ParamSpec, TypeVar

from threadpoolctl import threadpool_limits

P = ParamSpec("P")
R = TypeVar("R")


def one_blas_thread(function: Callable[P, R]) -> Callable[P, R]:
    """``function`` with BLAS limited to one thread while it runs (restored after)."""

    @functools.wraps(function)
    def limited(*args: P.args, **kwargs: P.kwargs) -> R:
        with threadpool_limits(limits=1, user_api="blas"):
            return function(*args, **kwargs)

    return limited
