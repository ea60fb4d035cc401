"""Progress on stderr for the long steps (verification, sweep, bench, the latency search), only where stderr
is a terminal: CI logs, pipes and tests get no progress output at all, not even a blank line."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any


def _stderr_console() -> Any:
    from rich.console import Console

    return Console(stderr=True)


@contextlib.contextmanager
def steps(
    description: str, total: int | None = None, enabled: bool = True
) -> Iterator[Callable[[str], None]]:
    """A transient rich progress line while the block runs. The callable it yields names the step that
    starts now; with a ``total`` each call after the first counts one step done. Where ``enabled`` is false
    or stderr is no terminal, the callable does nothing."""
    console = _stderr_console() if enabled else None
    if console is None or not console.is_terminal:
        yield lambda _step: None
        return
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        SpinnerColumn,
        TextColumn,
        TimeElapsedColumn,
    )

    columns = [SpinnerColumn(), TextColumn("{task.description}")]
    columns += [BarColumn(), MofNCompleteColumn()] if total is not None else []
    with Progress(*columns, TimeElapsedColumn(), console=console, transient=True) as bar:
        task = bar.add_task(description, total=total)
        started = 0

        def step(text: str) -> None:
            nonlocal started
            bar.update(task, description=f"{description}: {text}" if text else description, completed=started)
            started += 1

        yield step
