"""A score of the user's choosing: ``--eval-cmd 'CMD {model}'``, a program that prints one number (higher is
better) for the ONNX model at ``{model}``. ModelOpt's score function, from the command line: what
sensitivity and allocation trade against, and what the report quotes for the original and the result."""

from __future__ import annotations

import math
import shlex
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import onnx

from onnxprune import files
from onnxprune.errors import EvalCommandError, UsageError

PLACEHOLDER = "{model}"
# A run that takes longer is a hung program, not a slow score.
TIMEOUT_SECONDS = 3600


@dataclass(frozen=True)
class EvalCommand:
    """``template``: a command line holding ``{model}``, split as a POSIX shell would (no shell runs it)."""

    template: str

    def __post_init__(self) -> None:
        if PLACEHOLDER not in self.template:
            raise UsageError(f"--eval-cmd must contain {PLACEHOLDER} where the model's path goes")
        try:
            shlex.split(self.template)
        except ValueError as err:
            raise UsageError(f"--eval-cmd cannot be split into arguments: {err}") from None

    def score(self, model: onnx.ModelProto) -> float:
        """The number the command prints for ``model`` (written to a temporary file)."""
        with tempfile.TemporaryDirectory(prefix="onnxprune-eval-") as folder:
            path = files.save_model(model, Path(folder) / "model.onnx")
            return self.score_file(path)

    def score_file(self, path: str | Path) -> float:
        args = [arg.replace(PLACEHOLDER, str(path)) for arg in shlex.split(self.template)]
        try:
            done = subprocess.run(args, capture_output=True, text=True, timeout=TIMEOUT_SECONDS, check=False)
        except (OSError, subprocess.TimeoutExpired) as err:
            raise EvalCommandError(f"--eval-cmd could not run {args[0]!r}: {err}") from None
        if done.returncode != 0:
            tail = (done.stderr or done.stdout).strip().splitlines()
            said = f": {tail[-1][:200]}" if tail else ""
            raise EvalCommandError(f"--eval-cmd exited with status {done.returncode}{said}")
        return _number(done.stdout)


def _number(text: str) -> float:
    """The number on the last non-empty line of the command's output."""
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    try:
        value = float(lines[-1]) if lines else math.nan
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        shown = repr(lines[-1][:80]) if lines else "nothing"
        raise EvalCommandError(f"--eval-cmd printed {shown}, not a number on its last line")
    return value
