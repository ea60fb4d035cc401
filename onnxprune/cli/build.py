"""``onnxprune build``: an engine plan from an ONNX model (TensorRT or TensorRT-RTX), checked against ONNX
Runtime where it can run here; the options ``prune --plan`` shares live here too."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from onnxprune.cli.printing import print_build
from onnxprune.cli.shared import ModelArg, choices, user_errors, warn
from onnxprune.engine import BiasMapForm, BuildOptions, EngineBackend, build_engine, profiles
from onnxprune.engine.build import with_batch_one
from onnxprune.files import check_output_path
from onnxprune.inputs import parse_shapes
from onnxprune.options import choice

BackendOpt = Annotated[
    str,
    choices(
        EngineBackend,
        "auto: TensorRT where it imports and a GPU is visible, else TensorRT-RTX (builds without a GPU).",
    ),
]
BiasMapsOpt = Annotated[
    str, choices(BiasMapForm, "How bias maps are handed to the builder (auto: the backend's choice).")
]


@user_errors
def build(
    model: ModelArg,
    output: Annotated[Path, typer.Option("-o", "--output", help="Where to write the plan.")],
    backend: BackendOpt = EngineBackend.AUTO,
    fp16: Annotated[bool, typer.Option(help="FP16 engine: the ONNX is converted to float16 first.")] = False,
    sparse_weights: Annotated[
        bool | None,
        typer.Option(
            "--sparse-weights/--no-sparse-weights",
            help="Let TensorRT use 2:4 sparse weights (default: when the model holds 2:4 layers).",
        ),
    ] = None,
    workspace: Annotated[int | None, typer.Option(help="Builder workspace limit in MiB.")] = None,
    save_onnx: Annotated[
        Path | None, typer.Option(help="Write the exact ONNX handed to the builder.")
    ] = None,
    shape: Annotated[
        list[str] | None, typer.Option(help="NAME:1x3x224x224 for a dynamic input (the profile's opt).")
    ] = None,
    min_shape: Annotated[list[str] | None, typer.Option(help="NAME:DIMS, the profile's min.")] = None,
    max_shape: Annotated[list[str] | None, typer.Option(help="NAME:DIMS, the profile's max.")] = None,
    bias_maps: BiasMapsOpt = BiasMapForm.AUTO,
    compute_capability: Annotated[
        list[str] | None, typer.Option(help="TensorRT-RTX: a GPU to compile for, e.g. 8.6 (repeat).")
    ] = None,
) -> None:
    """Build an engine plan from an ONNX model; check it against ONNX Runtime where it can run here."""
    options = BuildOptions(
        backend=choice(EngineBackend, backend, "--backend"),
        fp16=fp16,
        sparse_weights=sparse_weights,
        workspace_mib=workspace,
        profiles=shape_profiles(shape, min_shape, max_shape),
        bias_maps=choice(BiasMapForm, bias_maps, "--bias-maps"),
        compute_capabilities=tuple(compute_capability or ()),
    )
    check_output_path(output, [model])
    if save_onnx is not None:
        check_output_path(save_onnx, [model])
    options, batch_one = with_batch_one(model, options)
    if batch_one:
        warn([f"a dynamic batch built for batch 1 ({', '.join(batch_one)}): give --shape for another"])
    print_build(build_engine(model, output, options, save_onnx=save_onnx))


def shape_profiles(
    shape: list[str] | None, min_shape: list[str] | None = None, max_shape: list[str] | None = None
) -> dict:
    return profiles(parse_shapes(shape or []), parse_shapes(min_shape or []), parse_shapes(max_shape or []))
