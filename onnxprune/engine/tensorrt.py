"""The TensorRT backend: how its network and builder are set up, where its layer list comes from, and the
``trtexec`` line that builds the same plan where onnxprune cannot.

FP16: TensorRT 11 builds strongly typed networks only and has no FP16 builder flag; a tensor's ONNX type is
its precision. So an FP16 build hands TensorRT an FP16 ONNX (``fp16.convert_to_fp16``, checked against the
float32 model) and builds a strongly typed network from it, on TensorRT 10 as well. Without FP16, TensorRT
10 builds a weakly typed float32 network and TensorRT 11 a strongly typed one.
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from onnxprune.engine.builder import Built, Settings, captured_logger
from onnxprune.engine.layers import from_inspector
from onnxprune.engine.options import BuildOptions, Profile
from onnxprune.errors import CapabilityError


def settings(trt: Any, options: BuildOptions, sparse: bool) -> Settings:
    strong = getattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED", None)
    strongly_typed = strong is not None and (options.fp16 or _major(trt.__version__) >= 11)
    if sparse and getattr(trt.BuilderFlag, "SPARSE_WEIGHTS", None) is None:
        raise CapabilityError(f"TensorRT {trt.__version__} has no SPARSE_WEIGHTS builder flag")
    return Settings(
        strongly_typed=strongly_typed,
        # Only a TensorRT without strong typing builds FP16 from the float32 ONNX: its weakly typed mode.
        fp16_flag=options.fp16 and strong is None,
        sparse=sparse,
        workspace_mib=options.workspace_mib,
        profiles=options.profiles,
    )


def layers(trt: Any, built: Built) -> tuple[list[dict[str, Any]], str]:
    """The engine inspector's layers (TensorRT builds only where a device is: it can deserialize here)."""
    return from_inspector(trt, captured_logger(trt), built.plan), "engine inspector"


def _major(version: str) -> int:
    head = version.split(".")[0]
    return int(head) if head.isdigit() else 0


def trtexec_command(
    onnx_path: str | Path,
    plan_path: str | Path,
    fp16: bool = False,
    sparse: bool = False,
    workspace_mib: int | None = None,
    profiles: Mapping[str, Profile] | None = None,
    *,
    strongly_typed: bool = False,
) -> str:
    """The ``trtexec`` line that builds the same plan, for machines where onnxprune cannot.

    ``strongly_typed`` is for an ONNX that is already FP16: ``--stronglyTyped`` instead of ``--fp16`` (which
    TensorRT 11's trtexec no longer has).
    """
    args = ["trtexec", f"--onnx={onnx_path}", f"--saveEngine={plan_path}"]
    if strongly_typed:
        args.append("--stronglyTyped")
    elif fp16:
        args.append("--fp16")
    if sparse:
        args.append("--sparsity=enable")
    if workspace_mib is not None:
        args.append(f"--memPoolSize=workspace:{workspace_mib}M")
    if profiles:
        args += _shape_flags(profiles)
    return " ".join(shlex.quote(arg) for arg in args)


def _shape_flags(profiles: Mapping[str, Profile]) -> list[str]:
    if all(p.min == p.opt == p.max for p in profiles.values()):
        return ["--shapes=" + ",".join(f"{name}:{_dims(p.opt)}" for name, p in profiles.items())]
    return [
        f"--{flag}=" + ",".join(f"{name}:{_dims(getattr(p, which))}" for name, p in profiles.items())
        for flag, which in (("minShapes", "min"), ("optShapes", "opt"), ("maxShapes", "max"))
    ]


def _dims(dims: tuple[int, ...]) -> str:
    return "x".join(str(d) for d in dims)
