"""``onnxprune train``: sparsity training or fine-tuning of the ONNX model itself, via PyTorch (the
``[train]`` extra, imported only when the command runs)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from onnxprune.cli.shared import ModelArg, console, user_errors
from onnxprune.data import parse_floats, parse_size
from onnxprune.report import history_table

if TYPE_CHECKING:
    from onnxprune.train import TrainResult


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
    minutes: Annotated[
        float | None,
        typer.Option(help="Time budget: epochs and schedule follow from the measured step time."),
    ] = None,
    l1_gamma: Annotated[
        float, typer.Option(help="Network Slimming: lambda of the L1 penalty on BN gammas (start with 0.3).")
    ] = 0.0,
    l1_step: Annotated[
        str, typer.Option(help="proximal (soft-threshold gammas: exact zeros) | subgradient (the paper's)")
    ] = "proximal",
    augment: Annotated[
        str,
        typer.Option(
            help="auto (all with a teacher, none with labels) | none | comma list of shift,scale,brightness"
        ),
    ] = "auto",
    batch_norm: Annotated[
        str,
        typer.Option(
            help="auto (update with --l1-gamma; fine-tuning: frozen unless the statistics drifted from the"
            " data, beyond the teacher's own drift) | frozen (running statistics kept) | update (batch"
            " statistics, running ones updated)"
        ),
    ] = "auto",
    distill: Annotated[
        str,
        typer.Option(
            help="With --teacher, per output: auto (KL on scores/frame distributions, MSE on maps) | kl | mse"
        ),
    ] = "auto",
    feature_weight: Annotated[
        float | None,
        typer.Option(
            help="Weight of feature distillation at the pruned groups' boundaries (default 1 with --teacher)."
        ),
    ] = None,
    holdout: Annotated[
        float, typer.Option(help="With --teacher: share of --data held out for fidelity and early stopping.")
    ] = 0.1,
    patience: Annotated[int, typer.Option(help="Stop after this many epochs without held-out gain.")] = 5,
    image_size: Annotated[str | None, typer.Option(help="Image folders: resize to HxW.")] = None,
    image_mean: Annotated[
        str | None, typer.Option(help="Image folders: mean per channel, m or m,m,m.")
    ] = None,
    image_std: Annotated[str | None, typer.Option(help="Image folders: std per channel, s or s,s,s.")] = None,
    epochs: Annotated[
        int | None,
        typer.Option(help="Passes over the data (default 2; 30 with --l1-gamma; the cap with --minutes)."),
    ] = None,
    lr: Annotated[
        float | None, typer.Option(help="Learning rate (default 1e-3 Adam; 0.05 SGD with --l1-gamma).")
    ] = None,
    batch: Annotated[int, typer.Option(help="Samples per step.")] = 16,
    seed: Annotated[int, typer.Option(help="Shuffling seed (a CPU run repeats exactly).")] = 0,
    optimizer: Annotated[str, typer.Option(help="auto (adam; sgd with --l1-gamma) | sgd | adam")] = "auto",
    schedule: Annotated[str, typer.Option(help="cosine (lr down to 0) | constant")] = "cosine",
    weight_decay: Annotated[float, typer.Option(help="L2 weight decay.")] = 0.0,
    temperature: Annotated[float, typer.Option(help="Distillation temperature.")] = 4.0,
    ctc_weight: Annotated[
        float,
        typer.Option(help="With --teacher: weight of CTC against the teacher's decodes on frame outputs."),
    ] = 1.0,
    eval_data: Annotated[
        Path | None, typer.Option("--eval", help="Evaluate accuracy on this after each epoch.")
    ] = None,
    eval_labels: Annotated[Path | None, typer.Option(help="Labels of --eval (else its y).")] = None,
    checkpoint: Annotated[
        Path | None, typer.Option(help="Checkpoint file (default OUTPUT.ckpt, removed once it succeeds).")
    ] = None,
    resume: Annotated[bool, typer.Option(help="Continue from the checkpoint.")] = False,
    device: Annotated[str, typer.Option(help="auto | cpu | cuda")] = "auto",
    threads: Annotated[
        int | None,
        typer.Option(help="PyTorch CPU threads (default: one per core; fewer on a shared machine)."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON only.")] = False,
) -> None:
    """Sparsity-train (--l1-gamma) or fine-tune (labels or --teacher) the ONNX model itself, via PyTorch."""
    from onnxprune.train import ImageOptions, TrainOptions
    from onnxprune.train import train as train_model

    options = TrainOptions(
        epochs=epochs, minutes=minutes, lr=lr, batch=batch, seed=seed, l1_gamma=l1_gamma, l1_step=l1_step,
        augment=augment, batch_norm=batch_norm, distill=distill, optimizer=optimizer, schedule=schedule,
        weight_decay=weight_decay,
        temperature=temperature, ctc_weight=ctc_weight, feature_weight=feature_weight, holdout=holdout,
        patience=patience,
        device=device, threads=threads, checkpoint=checkpoint, resume=resume, progress=not as_json,
    )  # fmt: skip
    images = ImageOptions(
        size=parse_size(image_size, "--image-size") if image_size else None,
        mean=parse_floats(image_mean, "--image-mean") if image_mean else None,
        std=parse_floats(image_std, "--image-std") if image_std else None,
    )
    result = train_model(model, output, data, labels=labels, teacher=teacher, eval_data=eval_data,
                         eval_labels=eval_labels, options=options, images=images)  # fmt: skip
    if as_json:
        payload = {("epochs" if k == "history" else k): v for k, v in vars(result).items()}
        print(json.dumps(payload, indent=2, default=str))
        return
    console.print(history_table(result.history, f"{model.name} → {output.name} ({result.device})"))
    _print_how(result)
    console.print(
        f"[green]written[/] {output} ({result.batch_norms} BatchNormalization kept; PyTorch vs ONNX Runtime: "
        f"{result.conversion_error:.2g} before, {result.export_error:.2g} after training)",
        highlight=False,
    )
    if result.classes:
        console.print(
            "classes (label: folder): " + ", ".join(f"{k}: {n}" for k, n in enumerate(result.classes))
        )


def _print_how(result: TrainResult) -> None:
    """Outputs' kinds, features, the held-out split, the budget's plan and why training stopped."""
    lines = []
    if result.kinds:
        lines.append("outputs: " + "; ".join(result.kinds))
    if result.features:
        lines.append(f"feature targets: {len(result.features)} tensors at the pruned groups' boundaries")
    if result.batch_norms:
        drift = ""
        if result.bn_drift is not None:
            beyond = ", beyond the teacher's" if result.kinds else ""  # kinds: distilled outputs
            drift = f" (statistics' drift on the data {result.bn_drift:.2f}{beyond})"
        lines.append(f"BatchNormalization: {result.options.get('batch_norm')}{drift}")
    if result.held_out:
        lines.append(f"held out for fidelity: {result.held_out} samples (never trained on)")
    if result.step_seconds is not None:
        lines.append(
            f"time budget: {result.step_seconds:.3f} s per step, {result.planned_epochs} epoch(s) planned"
        )
    if result.best_epoch is not None:
        lines.append(f"kept the state of epoch {result.best_epoch} (held-out: lowest loss, best agreement)")
    if result.stopped:
        lines.append(f"stopped early: {result.stopped}")
    for line in lines:
        console.print(line, highlight=False)
