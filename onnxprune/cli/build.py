"""``onnxprune build``: a TensorRT plan from an ONNX model, checked against ONNX Runtime."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Annotated

import typer

from onnxprune.cli.printing import print_build
from onnxprune.cli.shared import ModelArg, user_errors
from onnxprune.files import check_output_path
from onnxprune.inputs import parse_shapes
from onnxprune.tensorrt import build_engine


@user_errors
def build(
    model: ModelArg,
    output: Annotated[Path, typer.Option("-o", "--output", help="Where to write the TensorRT plan.")],
    fp16: Annotated[bool, typer.Option(help="FP16 engine: the ONNX is converted to float16 first.")] = False,
    sparse_weights: Annotated[
        bool | None,
        typer.Option(
            "--sparse-weights/--no-sparse-weights",
            help="Let TensorRT use 2:4 sparse weights (default: when the model holds 2:4 layers).",
        ),
    ] = None,
    workspace: Annotated[int | None, typer.Option(help="Builder workspace limit in MiB.")] = None,
    save_onnx: Annotated[Path | None, typer.Option(help="Write the exact ONNX handed to TensorRT.")] = None,
    shape: Annotated[list[str] | None, typer.Option(help="NAME:1x3x224x224 for a dynamic input.")] = None,
) -> None:
    """Build a TensorRT plan (engine) from an ONNX model and check it against ONNX Runtime."""
    shapes = parse_shapes(shape or [])
    _build_and_print(model, output, fp16=fp16, save_onnx=save_onnx, shapes=shapes, sparse=sparse_weights,
                     workspace=workspace)  # fmt: skip


def _build_and_print(model: Path, plan: Path, *, fp16: bool, save_onnx: Path | None, shapes: Mapping,
                     sparse: bool | None = None, workspace: int | None = None) -> None:  # fmt: skip
    check_output_path(plan, [model])
    if save_onnx is not None:
        check_output_path(save_onnx, [model])
    result = build_engine(model, plan, fp16=fp16, sparse_weights=sparse, workspace_mib=workspace,
                          shapes=shapes or None, save_onnx=save_onnx)  # fmt: skip
    print_build(result)
