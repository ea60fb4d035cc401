"""Errors a user can cause. The CLI turns every ``OnnxPruneError`` into one line on stderr and exit 1.

Anything else that escapes is a bug in onnxprune and keeps its traceback.
"""


class OnnxPruneError(Exception):
    """A problem with the user's model, files or request (exit code 1)."""


class ModelLoadError(OnnxPruneError):
    """The input file is missing, unreadable, or not a valid ONNX model."""


class ModelSaveError(OnnxPruneError):
    """The output could not be written (bad path, read-only location, full disk)."""


class ValidationError(OnnxPruneError):
    """The rewritten model failed onnx.checker, shape inference or an ONNX Runtime run."""


class OriginalRunError(ValidationError):
    """The original model itself does not run on the inputs fed (often: dynamic dims set to defaults)."""


class NothingToPruneError(OnnxPruneError):
    """Every channel group of the model is declined: there is nothing to remove."""


class VerificationError(OnnxPruneError):
    """The pruned model does not match its masked reference, or two models disagree."""


class UsageError(OnnxPruneError):
    """Options that contradict each other or are out of range (exit code 2)."""

    exit_code = 2


class CapabilityError(OnnxPruneError):
    """A backend (TensorRT, a CUDA device) that the request needs is not available here."""


class BuildError(CapabilityError):
    """The engine builder refused the model: its first error, and the node that error names."""


def first_line(err: BaseException, limit: int = 300) -> str:
    """The first line of an exception's message (libraries raise multi-page ones), or its type's name."""
    lines = str(err).strip().splitlines()
    return lines[0][:limit] if lines else type(err).__name__


class FidelityError(OnnxPruneError):
    """The pruned model lost too much of the original's behaviour on the user's data (--min-fidelity)."""


class EvalCommandError(OnnxPruneError):
    """The user's --eval-cmd failed, or printed no number."""


class WorkerError(OnnxPruneError):
    """The search's workers cannot run: a Ray cluster that cannot be reached, workers that keep dying."""
