"""Options of the library's calls, validated when they are made: a bad option is a UsageError from the API
as much as from the CLI, and an options object that exists is a valid one (frozen; derive a variant with
``dataclasses.replace``, which validates again).

Choices are string enums, so that typer offers and checks them on the command line and a plain string
(``criterion="l1"``) is accepted from Python. Messages name the CLI flag, which is also the keyword.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from enum import Enum, StrEnum
from pathlib import Path
from typing import Any, TypeVar

from onnxprune.errors import UsageError
from onnxprune.measure.layout import TENSOR_CORES, auto_reason, auto_round_to

E = TypeVar("E", bound=Enum)
AUTO = "auto"
# A collapsed model (one class always, a recognizer of blanks only) scores about 0; a prune that keeps the
# task scores near 1. Half way catches the collapse without refusing a model that lost a few points.
MIN_FIDELITY = 0.5


class Criterion(StrEnum):
    """How a channel is ranked (see importance.py)."""

    AUTO = "auto"
    GAMMA = "gamma"
    L1 = "l1"
    L2 = "l2"
    ACTIVATION = "activation"  # needs calibration data (importance.activation_scores)
    REBUILD = "rebuild"  # needs calibration data (redundancy.redundancy_scores)


# Criteria that rank channels on calibration data.
ON_DATA = (Criterion.ACTIVATION, Criterion.REBUILD)


class Scope(StrEnum):
    """What a ratio is a fraction of: all prunable channels ranked together, or each group."""

    GLOBAL = "global"
    LAYER = "layer"


class Allocate(StrEnum):
    """How a target's budget is shared among the groups (search/budget.py): one global ranking of the
    scores (Network Slimming's, meaningful for models trained with an L1 penalty on gamma), one ratio for
    every group, or widths chosen by measured sensitivity on data. auto: sensitivity when data is given,
    else global for a model trained for slimming, else layer."""

    AUTO = "auto"
    GLOBAL = "global"
    LAYER = "layer"
    SENSITIVITY = "sensitivity"


class Device(StrEnum):
    """What the pruned model is for (``--for``): the widths ``--round-to auto`` rounds to are its. TensorRT
    (and any GPU): multiples of 8, what Tensor Cores want, on whatever machine prunes; cpu: ONNX Runtime's
    CPU channel block on this machine (8 or 16), for a model deployed where it is pruned."""

    TENSORRT = "tensorrt"
    CPU = "cpu"


class Compensate(StrEnum):
    """What removed channels leave behind (see compensate/datafree.py): nothing, their BN's expected output
    (data-free), or their mean on calibration data and the consumers refitted; auto: calib when calibration
    data is given, else bn."""

    AUTO = "auto"
    NONE = "none"
    BN = "bn"
    CALIB = "calib"


def choice(kind: type[E], value: object, flag: str) -> E:
    """``value`` as a member of ``kind``, or a UsageError listing the choices."""
    try:
        return kind(value)
    except ValueError:
        names = ", ".join(str(m.value) for m in kind)
        raise UsageError(f"{flag} must be one of {names}, got {value!r}") from None


@dataclass(frozen=True, kw_only=True)
class PlanOptions:
    """How many channels go, and which. Exactly one of ``ratio``, ``threshold`` and ``replay``."""

    ratio: float | None = None
    threshold: float | None = None
    # "auto": what ``device`` wants: 8 for Tensor Cores, or for cpu ONNX Runtime's CPU channel block here
    # where larger (measure/layout.py).
    round_to: int | str = AUTO
    min_keep: int = 8
    scope: Scope = Scope.GLOBAL
    exclude: tuple[str, ...] = ()
    criterion: Criterion = Criterion.AUTO
    # An earlier report whose kept indices are applied (plan.load_plan); not echoed into new reports.
    replay: Mapping[str, Any] | None = field(default=None, metadata={"report": False})
    compensate: Compensate = Compensate.AUTO
    # A ratio removes at most this fraction of any one group (global scope): one layer is never cut to its
    # minimum while others keep half; what it cannot take goes to the next-ranked channels elsewhere.
    max_group_ratio: float = 0.85
    allocate: Allocate = Allocate.AUTO
    device: Device = Device.TENSORRT

    def __post_init__(self) -> None:
        set_ = object.__setattr__  # frozen: normalise once, here
        set_(self, "scope", choice(Scope, self.scope, "--scope"))
        set_(self, "compensate", choice(Compensate, self.compensate, "--compensate"))
        set_(self, "criterion", choice(Criterion, self.criterion, "--criterion"))
        set_(self, "allocate", choice(Allocate, self.allocate, "--allocate"))
        set_(self, "device", choice(Device, self.device, "--for"))
        set_(self, "exclude", _strings(self.exclude, "--exclude"))
        if sum(x is not None for x in (self.ratio, self.threshold, self.replay)) != 1:
            raise UsageError("give exactly one of --ratio, --threshold and --replay")
        if self.ratio is not None and not 0.0 <= self.ratio < 1.0:
            raise UsageError(f"--ratio must be in [0, 1), got {self.ratio}")
        if self.threshold is not None and (self.threshold < 0 or not math.isfinite(self.threshold)):
            raise UsageError(f"--threshold must be a finite number >= 0, got {self.threshold}")
        set_(self, "round_to", round_to_value(self.round_to))
        if self.min_keep < 1:
            raise UsageError("--min-keep must be at least 1")
        if not 0.0 < self.max_group_ratio <= 1.0:
            raise UsageError(f"--max-group-ratio must be in (0, 1], got {self.max_group_ratio}")
        if self.replay is not None:
            self._check_replay()

    def resolved(self, calibrating: bool) -> PlanOptions:
        """These options with ``compensate=auto`` decided: calib when calibration data is given, else bn.
        Every driver resolves once, here, before it prepares the model."""
        if self.compensate != Compensate.AUTO:
            return self
        return replace(self, compensate=Compensate.CALIB if calibrating else Compensate.BN)

    @property
    def analysis_mode(self) -> str:
        """The analysis a mode prunes with: calibration starts from the data-free ``bn`` folding and
        refits what that leaves."""
        if self.compensate == Compensate.AUTO:
            raise AssertionError("compensate=auto must be resolved before the model is analysed")
        return "none" if self.compensate == Compensate.NONE else "bn"

    @property
    def width_step(self) -> int:
        """The multiple every kept width is rounded to: ``round_to``, with auto resolved on this machine."""
        if self.round_to != AUTO:
            return int(self.round_to)
        return auto_round_to() if self.device == Device.CPU else TENSOR_CORES

    @property
    def aligned_to(self) -> int:
        """The multiple every width is promised to be (what the report's "unaligned" is checked against), and
        the one a grouped Conv's total kept width is rounded to: ``round_to``, or with auto the Tensor Core 8.
        Auto takes the CPU block (``width_step``) where a group is free to; a grouped Conv's chunks are not:
        ONNX Runtime runs a grouped Conv in the blocked layout only where each group's width is a multiple
        of the block, otherwise plainly, padding nothing (measure/layout.py), and chunks forced to the block
        (8 wide in RegNet) could not be pruned at all (RegNetY-400MF at --ratio 0.5: MACs 0.92 instead of
        0.71)."""
        return TENSOR_CORES if self.round_to == AUTO else int(self.round_to)

    def _check_replay(self) -> None:
        """A replayed plan fixes every kept channel: options that shape a new plan would be ignored."""
        defaults = PlanOptions(threshold=0.0)
        ignored = [
            f"--{name.replace('_', '-')}"
            for name in ("round_to", "min_keep", "scope", "criterion")
            if getattr(self, name) != getattr(defaults, name)
        ]
        if ignored:
            raise UsageError(
                f"{', '.join(ignored)}: no effect with --replay (the saved plan fixes the kept channels); "
                "drop them"
            )

    def to_dict(self) -> dict[str, Any]:
        """What a report records of these options: every field but those marked ``report: False``, the
        width step auto resolved to (and why) and the alignment promised."""
        kept = [f.name for f in fields(self) if f.metadata.get("report", True)]
        recorded = {name: _plain(getattr(self, name)) for name in kept}
        reason = None
        if self.round_to == AUTO:
            reason = auto_reason() if self.device == Device.CPU else "auto for TensorRT: Tensor Cores want 8"
        return dict(recorded, width_step=self.width_step, aligned_to=self.aligned_to, width_reason=reason)


@dataclass(frozen=True, kw_only=True)
class VerifyOptions:
    """How ``prune`` checks its result. ``inputs``: an .npz or Polygraphy JSON file instead of random data."""

    enabled: bool = True
    inputs: str | Path | None = None
    iterations: int | None = None  # None: 1 random feed, or the --inputs file as it is
    seed: int = 0
    shapes: Mapping[str, tuple[int, ...]] = field(default_factory=dict)
    progress: bool = False
    # The verdict: on the user's data (held-out calibration samples or --inputs) every output must keep at
    # least this fidelity (fidelity.py), else nothing is written. 0 or below accepts anything.
    min_fidelity: float = MIN_FIDELITY

    def __post_init__(self) -> None:
        if self.iterations is not None and self.iterations < 1:
            raise UsageError(f"--iterations must be at least 1, got {self.iterations}")
        if not (math.isfinite(self.min_fidelity) and -1.0 <= self.min_fidelity <= 1.0):
            raise UsageError(f"--min-fidelity must be in [-1, 1], got {self.min_fidelity}")


def round_to_value(value: object) -> int | str:
    """``--round-to`` as given: a whole number >= 1 (also as a string, from the command line) or "auto"."""
    if value == AUTO:
        return AUTO
    try:
        number = int(str(value), 10) if not isinstance(value, bool) else 0  # 2.5 and "8.0" do not parse
    except ValueError:
        number = 0
    if number < 1:
        raise UsageError(f"--round-to must be a whole number >= 1 or auto, got {value!r}")
    return number


def _strings(values: object, flag: str) -> tuple[str, ...]:
    """One glob or several, as a tuple (a lone string is one glob, not a list of characters)."""
    items = (values,) if isinstance(values, str) else values
    out = tuple(items) if isinstance(items, list | tuple | set | frozenset) else None
    if out is None or not all(isinstance(v, str) for v in out):
        raise UsageError(f"{flag} takes node-name globs, got {values!r}")
    return out


def _plain(value: object) -> object:
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, tuple):
        return list(value)
    return value
