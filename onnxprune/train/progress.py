"""A rich progress bar per epoch (loss as it goes) and one summary line per finished epoch, on stderr."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from onnxprune.train.options import SPARSE_GAMMA, TrainOptions


@contextlib.contextmanager
def epoch_progress(options: TrainOptions, count: int) -> Iterator[tuple[Any, Any]]:
    """Yields ``(on_step, on_epoch)`` hooks for ``loop.fit``; both are ``None`` without ``progress``."""
    if not options.progress:
        yield None, None
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from onnxprune.train.loop import steps_per_epoch

    console = Console(stderr=True)
    steps = steps_per_epoch(count, options.batch)
    columns = (TextColumn("epoch {task.fields[epoch]}/" + str(options.epochs)), BarColumn(),
               MofNCompleteColumn(), TextColumn("batch loss {task.fields[loss]}"),
               TimeElapsedColumn())  # fmt: skip
    tasks: dict[int, Any] = {}
    with Progress(*columns, console=console) as bar:

        def on_step(epoch: int, step: int, loss: float) -> None:
            if epoch not in tasks:
                tasks[epoch] = bar.add_task("", total=steps, epoch=epoch, loss="-")
            bar.update(tasks[epoch], advance=1, loss=f"{loss:.4f}")

        def on_epoch(record: dict[str, Any]) -> None:
            bar.console.print(summary(record), highlight=False)

        yield on_step, on_epoch


def summary(record: dict[str, Any]) -> str:
    parts = [f"epoch {record['epoch']}"]
    if record.get("loss") is not None:
        parts.append(f"mean loss {record['loss']:.4f}")
    if record.get("accuracy") is not None:
        parts.append(f"eval accuracy {record['accuracy']:.2%}")
    if record.get("gammas"):
        parts.append(f"|gamma| < {SPARSE_GAMMA:g}: {record['gamma_small']:.1%}")
    parts.append(f"{record['seconds']:.1f} s")
    return ", ".join(parts)
