"""verify: does the pruned model compute what it should?

Two questions, answered apart. :func:`exactness`: is the surgery exact, i.e. does the pruned model match the
masked reference (the original with the removed channels zeroed)? :func:`compare` (and :func:`check_models`
behind ``onnxprune check``): how much did pruning change the outputs? :func:`exact_and_change` answers both
in one pass. Sessions are ONNX Runtime CPU sessions run directly (sessions.py): Polygraphy asks of every
array whether it is a torch tensor, which imports torch wherever it is installed. Feeds come from
:func:`make_inputs`: seeded random data, or the user's ``.npz`` / Polygraphy ``--save-inputs`` JSON.

Errors: a missing or unreadable model or data file, or data that does not fit the model's inputs, is a
``ModelLoadError``; a malformed ``--shape`` a ``UsageError``; a model ONNX Runtime cannot build or run a
``ValidationError``; two models with different inputs a ``VerificationError``. A comparison that fails is
returned, not raised.
"""

from onnxprune.inputs import make_inputs, parse_shapes
from onnxprune.tolerances import MIN_SENSITIVITY, NOISE_FACTOR
from onnxprune.verify.check import check_models, load_model_header, render_comparison
from onnxprune.verify.compare import compare, compare_runners, exact_and_change, exactness
from onnxprune.verify.metrics import (
    Comparison,
    OutputMetrics,
    Running,
    assert_close_relative,
    cosine_floor,
    max_relative_error,
)
from onnxprune.verify.sessions import model_session

__all__ = [
    "MIN_SENSITIVITY",
    "NOISE_FACTOR",
    "Comparison",
    "OutputMetrics",
    "Running",
    "assert_close_relative",
    "check_models",
    "compare",
    "compare_runners",
    "cosine_floor",
    "exact_and_change",
    "exactness",
    "load_model_header",
    "make_inputs",
    "max_relative_error",
    "model_session",
    "parse_shapes",
    "render_comparison",
]
