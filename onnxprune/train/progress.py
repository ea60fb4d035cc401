"""A rich progress bar per epoch (loss as it goes) and one summary line per finished epoch, on stderr:
training loss, held-out fidelity to the teacher, eval accuracy, the share of small gammas, seconds."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from onnxprune.train.fidelity import headline
from onnxprune.train.loop import Hooks, steps_per_epoch
from onnxprune.train.options import SPARSE_GAMMA, TrainOptions


@contextlib.contextmanager
def epoch_progress(options: TrainOptions, count: int) -> Iterator[Hooks]:
    """Yields the hooks for ``loop.fit``; none without ``progress``."""
    if not options.progress:
        yield Hooks()
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    console = Console(stderr=True)
    plan = {"epochs": options.epochs or 0, "steps": steps_per_epoch(count, options.batch)}
    columns = (TextColumn("epoch {task.fields[epoch]}/{task.fields[epochs]}"), BarColumn(),
               MofNCompleteColumn(), TextColumn("batch loss {task.fields[loss]}"),
               TimeElapsedColumn())  # fmt: skip
    tasks: dict[int, Any] = {}
    with Progress(*columns, console=console) as bar:

        def on_plan(epochs: int, steps: int) -> None:
            plan.update(epochs=epochs, steps=steps)
            if options.minutes is not None:
                bar.console.print(f"time budget {options.minutes:g} min: {epochs} epoch(s)", highlight=False)

        def on_step(epoch: int, step: int, loss: float) -> None:
            if epoch not in tasks:
                tasks[epoch] = bar.add_task(
                    "", total=plan["steps"], epoch=epoch, epochs=plan["epochs"], loss="-"
                )
            bar.update(tasks[epoch], advance=1, loss=f"{loss:.4f}")

        def on_epoch(record: dict[str, Any]) -> None:
            bar.console.print(summary(record), highlight=False)

        yield Hooks(on_step=on_step, on_epoch=on_epoch, on_plan=on_plan)


def summary(record: dict[str, Any]) -> str:
    parts = [f"epoch {record['epoch']}"]
    if record.get("loss") is not None:
        parts.append(f"mean loss {record['loss']:.4f}")
    if record.get("holdout_loss") is not None:
        parts.append(f"held-out loss {record['holdout_loss']:.4f} ({headline(record['fidelity'])})")
    if record.get("accuracy") is not None:
        parts.append(f"eval accuracy {record['accuracy']:.2%}")
    if record.get("gammas"):
        parts.append(f"|gamma| < {SPARSE_GAMMA:g}: {record['gamma_small']:.1%}")
    parts.append(f"{record['seconds']:.1f} s")
    return ", ".join(parts)
