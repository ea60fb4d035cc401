"""The TensorRT-RTX backend: strongly typed networks (it has no FP16 builder flag: FP16 is an FP16 ONNX), the
GPUs the plan is compiled for, and its layer list, read from the builder's verbose log with or without a GPU.

2:4 sparse weights are not used: TensorRT-RTX compiles its kernels on the GPU when the plan is loaded, and
the plan it writes with the sparse-weights flag is byte for byte the one it writes without it (a 2:4 FP16
Conv, default targets and 8.6 alike), so no sparse kernel can be promised from here.
"""

from __future__ import annotations

from typing import Any

from onnxprune.engine.builder import Built, Settings
from onnxprune.engine.layers import from_builder_log
from onnxprune.engine.options import BuildOptions


def settings(options: BuildOptions) -> Settings:
    return Settings(
        strongly_typed=True,
        workspace_mib=options.workspace_mib,
        profiles=options.profiles,
        compute_capabilities=options.compute_capabilities,
    )


def layers(built: Built) -> tuple[list[dict[str, Any]], str]:
    return from_builder_log(built.log) or [], "builder log"
