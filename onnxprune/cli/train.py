"""``onnxprune train``: sparsity training or fine-tuning of the ONNX model itself, via PyTorch (the
``[train]`` extra, imported only when the command runs)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from onnxprune.cli.shared import ModelArg, console, user_errors
from onnxprune.data import parse_floats, parse_size
from onnxprune.report import history_table


@user_errors
def train(
    model: ModelArg,
    output: Annotated[Path, typer.Option("-o", "--output", help="Where to write the trained model.")],
    data: Annotated[
        Path,
        typer.Option(
            help="Training samples: .npz keyed by input name (or x, y), or class folders of images."
        ),
    ],
    labels: Annotated[Path | None, typer.Option(help="Class labels (.npy, or .npz with y).")] = None,
    teacher: Annotated[
        Path | None, typer.Option(help="Distil from this model (e.g. the unpruned original): no labels.")
    ] = None,
    l1_gamma: Annotated[
        float, typer.Option(help="Network Slimming: lambda of the L1 penalty on BN gammas.")
    ] = 0.0,
    l1_step: Annotated[
        str, typer.Option(help="proximal (soft-threshold gammas: exact zeros) | subgradient (the paper's)")
    ] = "proximal",
    augment: Annotated[
        str, typer.Option(help="none | shift (image inputs moved by up to 2 px per sample and step)")
    ] = "none",
    distill: Annotated[
        str, typer.Option(help="With --teacher: auto (kl for one [N, classes] output, else mse) | kl | mse")
    ] = "auto",
    image_size: Annotated[str | None, typer.Option(help="Image folders: resize to HxW.")] = None,
    image_mean: Annotated[
        str | None, typer.Option(help="Image folders: mean per channel, m or m,m,m.")
    ] = None,
    image_std: Annotated[str | None, typer.Option(help="Image folders: std per channel, s or s,s,s.")] = None,
    epochs: Annotated[int, typer.Option(help="Passes over the data.")] = 1,
    lr: Annotated[float, typer.Option(help="Learning rate.")] = 0.01,
    batch: Annotated[int, typer.Option(help="Samples per step.")] = 64,
    seed: Annotated[int, typer.Option(help="Shuffling seed (a CPU run repeats exactly).")] = 0,
    optimizer: Annotated[str, typer.Option(help="sgd (momentum 0.9) | adam")] = "sgd",
    schedule: Annotated[str, typer.Option(help="cosine (lr down to 0) | constant")] = "cosine",
    weight_decay: Annotated[float, typer.Option(help="L2 weight decay.")] = 0.0,
    temperature: Annotated[float, typer.Option(help="Distillation temperature.")] = 1.0,
    eval_data: Annotated[
        Path | None, typer.Option("--eval", help="Evaluate accuracy on this after each epoch.")
    ] = None,
    eval_labels: Annotated[Path | None, typer.Option(help="Labels of --eval (else its y).")] = None,
    checkpoint: Annotated[
        Path | None, typer.Option(help="Checkpoint file (default OUTPUT.ckpt, removed once it succeeds).")
    ] = None,
    resume: Annotated[bool, typer.Option(help="Continue from the checkpoint.")] = False,
    device: Annotated[str, typer.Option(help="auto | cpu | cuda")] = "auto",
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON only.")] = False,
) -> None:
    """Sparsity-train (--l1-gamma) or fine-tune (labels or --teacher) the ONNX model itself, via PyTorch."""
    from onnxprune.train import ImageOptions, TrainOptions
    from onnxprune.train import train as train_model

    options = TrainOptions(
        epochs=epochs, lr=lr, batch=batch, seed=seed, l1_gamma=l1_gamma, l1_step=l1_step, augment=augment,
        distill=distill, optimizer=optimizer,
        schedule=schedule, weight_decay=weight_decay, temperature=temperature, device=device,
        checkpoint=checkpoint, resume=resume, progress=not as_json,
    )  # fmt: skip
    images = ImageOptions(
        size=parse_size(image_size, "--image-size") if image_size else None,
        mean=parse_floats(image_mean, "--image-mean") if image_mean else None,
        std=parse_floats(image_std, "--image-std") if image_std else None,
    )
    result = train_model(model, output, data, labels=labels, teacher=teacher, eval_data=eval_data,
                         eval_labels=eval_labels, options=options, images=images)  # fmt: skip
    payload = {
        "output": str(result.output), "device": result.device,
        "checkpoint": str(result.checkpoint) if result.checkpoint.exists() else None,
        "batch_norms": result.batch_norms, "conversion_error": result.conversion_error,
        "export_error": result.export_error, "epochs": result.history, "classes": result.classes,
    }  # fmt: skip
    if as_json:
        print(json.dumps(payload, indent=2))
        return
    console.print(history_table(result.history, f"{model.name} → {output.name} ({result.device})"))
    console.print(
        f"[green]written[/] {output} ({result.batch_norms} BatchNormalization kept; PyTorch vs ONNX Runtime: "
        f"{result.conversion_error:.2g} before, {result.export_error:.2g} after training)",
        highlight=False,
    )
    if result.classes:
        console.print(
            "classes (label: folder): " + ", ".join(f"{k}: {n}" for k, n in enumerate(result.classes))
        )
