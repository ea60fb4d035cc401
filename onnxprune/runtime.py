"""ONNX Runtime helpers: a CPU session from a ModelProto or path, one run, and the check every pruned model
passes before it is written (it runs, and its outputs keep the original's shapes)."""

from __future__ import annotations

import importlib.util
import tempfile
import threading
import weakref
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import onnx

from onnxprune.errors import CapabilityError, OriginalRunError, ValidationError, first_line
from onnxprune.files import needs_external_data, save_model
from onnxprune.inputs import Feeds, original_fails_message, prepare_feeds

if TYPE_CHECKING:
    import onnxruntime

    Model = onnx.ModelProto | str | Path | bytes


ORT_MISSING = "ONNX Runtime is not installed: pip install 'onnxprune[cpu]' (or 'onnxprune[gpu]', never both)"


def require_onnxruntime() -> None:
    """Raise the one CapabilityError for a missing ONNX Runtime, without importing it."""
    if importlib.util.find_spec("onnxruntime") is None:
        raise CapabilityError(ORT_MISSING)


# Only fatal messages: ONNX Runtime warns about e.g. unused initializers in exported and rewritten graphs
# ([W:onnxruntime ...] on stderr), and logs every failed run as an error line too, though the run also raises
# (that exception becomes onnxprune's one line).
FATAL_ONLY = 4


def quiet_onnxruntime() -> Any:
    """Import ONNX Runtime (ImportError where it is missing) with its process-wide logger at fatal only.

    The process-wide logger is what a session without a severity of its own logs to (graphsurgeon's
    constant folding and Polygraphy make such sessions), and what logs before a session's own is set up.
    """
    import onnxruntime as ort

    ort.set_default_logger_severity(FATAL_ONLY)
    return ort


def quiet_options(ort: Any) -> Any:
    """``SessionOptions`` that log fatal messages only; every session onnxprune makes starts from these."""
    options = ort.SessionOptions()
    options.log_severity_level = FATAL_ONLY
    return options


def ort_session(
    model: Model, threads: int = 4, optimize: bool = True, spin: bool = True, quick: bool = False
) -> onnxruntime.InferenceSession:
    """A CPU ``InferenceSession`` with few threads: tests run many tiny models, and big ones gain little.

    ``optimize=False`` turns ONNX Runtime's graph optimisations off: the same math summed in another order
    (no fused Conv+BN), which is how verification measures the float32 noise floor. ``spin=False``: idle
    worker threads sleep instead of spinning, for long runs of big batches (calibration), where spinning
    gains nothing and burns a shared machine's CPU. ``quick``: for one run, the session that starts fastest:
    basic graph optimisations (constant folding, what a bias map needs) and no weight prepacking; the
    extended ones only re-lay the same math out for speed, which a single run does not repay.
    """
    try:
        ort = quiet_onnxruntime()
    except ImportError:
        raise CapabilityError(ORT_MISSING) from None

    options = quiet_options(ort)
    options.intra_op_num_threads = threads
    if not spin:
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    if not optimize:
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    elif quick:
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
        options.add_session_config_entry("session.disable_prepacking", "1")
    if isinstance(model, bytes):
        return ort.InferenceSession(model, sess_options=options, providers=["CPUExecutionProvider"])
    if isinstance(model, str | Path) or not needs_external_data(model):
        source = str(model) if isinstance(model, str | Path) else model.SerializeToString()
        return ort.InferenceSession(source, sess_options=options, providers=["CPUExecutionProvider"])
    # Over 2 GB a model cannot be serialised: ORT reads it from a file with external data, which lives as
    # long as the session does.
    folder = tempfile.TemporaryDirectory(prefix="onnxprune-ort-")
    path = save_model(model, Path(folder.name) / "model.onnx", external_data=True)
    session = ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])
    weakref.finalize(session, folder.cleanup)  # the files go when the session does
    return session


def run_model(model: Model, feed: Mapping[str, np.ndarray], threads: int = 4) -> dict[str, np.ndarray]:
    """Runs ``model`` once on ``feed`` (a session that starts fast: ``quick``); returns every graph output
    by name."""
    session = ort_session(model, threads=threads, quick=True)
    names = [output.name for output in session.get_outputs()]
    return dict(zip(names, session.run(names, dict(feed)), strict=True))


# One thread for the check's single run of batch 1: it gains little from more, and runs beside the rest of
# the prune (``PendingCheck``).
CHECK_THREADS = 1


def check_runs(
    original: onnx.ModelProto,
    pruned: onnx.ModelProto,
    seed: int = 0,
    feeds: Feeds | None = None,
    serialized: bytes | None = None,
) -> None:
    """The pruned model runs in ONNX Runtime on the first feed (seeded data by default) and its outputs have
    the original's shapes. If neither model runs there, the error says the original fails and how to give
    it the shapes it takes. ``serialized``: ``pruned`` already serialised (ONNX Runtime takes the bytes)."""
    fed = feeds or prepare_feeds(original, seed=seed)
    feed = fed.feeds[0]
    want = _static_output_shapes(original)
    original_error = None
    if want is None:
        try:
            want = {name: value.shape for name, value in run_model(original, feed, CHECK_THREADS).items()}
        except CapabilityError:
            raise
        except Exception as exc:
            original_error = exc  # nothing to compare shapes against; the pruned model must still run
    try:
        after = run_model(serialized if serialized is not None else pruned, feed, CHECK_THREADS)
    except CapabilityError:
        raise
    except Exception as exc:
        original_error = original_error or _run_error(original, feed)
        if original_error is not None:
            raise OriginalRunError(original_fails_message(fed, original_error)) from None
        raise ValidationError(f"pruned model does not run in ONNX Runtime: {first_line(exc)}") from None
    for name, shape in (want or {}).items():
        got = tuple(after[name].shape) if name in after else None
        if tuple(shape) != got:
            raise ValidationError(f"pruned model changes output {name!r}: {tuple(shape)} → {got}")


class PendingCheck:
    """``check_runs`` in a thread: ONNX Runtime builds its session without holding the GIL, so the rest of a
    prune (counting, the report, writing the temporary file) goes on meanwhile; ``wait`` joins and raises
    what the check raised. prune's save waits for it before the file replaces anything."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, args=args, kwargs=kwargs, daemon=True)
        self._thread.start()

    def _run(self, *args: Any, **kwargs: Any) -> None:
        try:
            check_runs(*args, **kwargs)
        except BaseException as exc:  # re-raised in the caller's thread by wait()
            self._error = exc

    def wait(self) -> None:
        self._thread.join()
        if self._error is not None:
            raise self._error


def _run_error(model: onnx.ModelProto, feed: Mapping[str, np.ndarray]) -> Exception | None:
    try:
        run_model(model, feed, CHECK_THREADS)
    except CapabilityError:
        raise
    except Exception as exc:
        return exc
    return None


def _static_output_shapes(model: onnx.ModelProto) -> dict[str, tuple[int, ...]] | None:
    """Output shapes read from the graph when all are static: saves running the original. A negative
    dim_value is how some exporters (paddle2onnx) write a dynamic dimension: not static."""
    shapes = {}
    for value in model.graph.output:
        dims = value.type.tensor_type.shape.dim
        # -1 or 0 (or no value): a dynamic dim in older exports, not a size to match.
        if not dims or not all(d.HasField("dim_value") and d.dim_value > 0 for d in dims):
            return None
        shapes[value.name] = tuple(d.dim_value for d in dims)
    return shapes
