"""What a build is asked for: the backend, precision, sparse weights, workspace, shapes, bias-map form and,
for TensorRT-RTX, the GPUs the plan is compiled for. Checked when made, as every options object is."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum

from onnxprune.errors import UsageError
from onnxprune.options import choice

Shape = tuple[int, ...]


class EngineBackend(StrEnum):
    """Which builder: TensorRT where it imports and a CUDA device exists, else TensorRT-RTX (``auto``)."""

    AUTO = "auto"
    TENSORRT = "tensorrt"
    RTX = "rtx"


class BiasMapForm(StrEnum):
    """How bias maps are handed to the builder (``biasmaps.py``); ``auto``: the backend's choice."""

    AUTO = "auto"
    FACTORED = "factored"
    DENSE = "dense"
    CONV = "conv"
    AFTER_BN = "after-bn"
    INTERIOR = "interior"


@dataclass(frozen=True)
class Profile:
    """One input's optimisation profile: the shapes the engine accepts (min, max) and is tuned for (opt)."""

    min: Shape
    opt: Shape
    max: Shape

    def check(self, name: str) -> None:
        ranks = {len(self.min), len(self.opt), len(self.max)}
        ordered = all(a <= b <= c for a, b, c in zip(self.min, self.opt, self.max, strict=False))
        if len(ranks) != 1 or not ordered:
            raise UsageError(
                f"the shapes of input {name!r} must have one rank and min <= shape <= max on every axis, got "
                f"min {_dims(self.min)}, shape {_dims(self.opt)}, max {_dims(self.max)}"
            )


def profiles(
    shapes: Mapping[str, Shape] | None,
    min_shapes: Mapping[str, Shape] | None = None,
    max_shapes: Mapping[str, Shape] | None = None,
) -> dict[str, Profile]:
    """Profiles from ``--shape`` (the opt shape) and, where given, ``--min-shape`` and ``--max-shape``."""
    shapes, lows, highs = dict(shapes or {}), dict(min_shapes or {}), dict(max_shapes or {})
    stray = sorted((set(lows) | set(highs)) - set(shapes))
    if stray:
        raise UsageError(f"--min-shape/--max-shape for {stray[0]!r} needs its --shape too (the opt shape)")
    result = {}
    for name, opt in shapes.items():
        profile = Profile(lows.get(name, opt), opt, highs.get(name, opt))
        profile.check(name)
        result[name] = profile
    return result


def _dims(shape: Shape) -> str:
    return "x".join(map(str, shape))


@dataclass(frozen=True, kw_only=True)
class BuildOptions:
    """Everything ``build_engine`` is asked, beyond the files."""

    backend: EngineBackend = EngineBackend.AUTO
    fp16: bool = False
    sparse_weights: bool | None = None  # None: exactly when the model holds 2:4 layers
    workspace_mib: int | None = None
    profiles: Mapping[str, Profile] = field(default_factory=dict)
    bias_maps: BiasMapForm = BiasMapForm.AUTO
    # TensorRT-RTX: the GPUs ("8.6", "12.0") the plan is compiled for; empty: the builder's default set.
    compute_capabilities: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        set_ = object.__setattr__  # frozen: normalise once, here
        set_(self, "backend", choice(EngineBackend, self.backend, "--backend"))
        set_(self, "bias_maps", choice(BiasMapForm, self.bias_maps, "--bias-maps"))
        if self.workspace_mib is not None and self.workspace_mib <= 0:
            raise UsageError(f"the workspace must be a positive number of MiB, got {self.workspace_mib}")
        for name, profile in self.profiles.items():
            profile.check(name)
        set_(self, "compute_capabilities", tuple(self.compute_capabilities))
        for value in self.compute_capabilities:
            parts = value.split(".")
            if len(parts) != 2 or not all(part.isdigit() for part in parts):
                raise UsageError(f"--compute-capability is MAJOR.MINOR, e.g. 8.6, got {value!r}")
        if self.compute_capabilities and self.backend == EngineBackend.TENSORRT:
            raise UsageError("--compute-capability is for --backend rtx (TensorRT builds for its own GPU)")

    @property
    def opt_shapes(self) -> dict[str, Shape]:
        return {name: profile.opt for name, profile in self.profiles.items()}
