"""What every command module shares: the two consoles, the error wrapper and the common options.

A module of its own rather than the package's ``__init__`` so that the command modules import it without
importing the package that imports them.
"""

from __future__ import annotations

import copy
import functools
import sys
from collections.abc import Callable
from enum import Enum
from pathlib import Path
from typing import Annotated, Any, TypeVar, get_args

import typer
from rich.console import Console
from rich.markup import escape

from onnxprune import api
from onnxprune.compensate.calibrate import CalibOptions
from onnxprune.data import parse_floats, parse_size
from onnxprune.errors import OnnxPruneError, UsageError
from onnxprune.search.targets import Target

console = Console()
errors = Console(stderr=True)
F = TypeVar("F", bound=Callable[..., Any])


def say_interrupted() -> None:
    """The word "interrupted" on stderr, written directly: a Ctrl-C that lands inside a rich print (an
    error line being written) leaves that console's buffer open, and nothing it prints after is flushed."""
    sys.stderr.write("interrupted\n")
    sys.stderr.flush()


def user_errors(func: F) -> F:
    """Turn library errors into one line and an exit code; Ctrl-C into exit 130 without a traceback."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except OnnxPruneError as exc:
            errors.print(f"[red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
            raise typer.Exit(getattr(exc, "exit_code", 1)) from None
        except KeyboardInterrupt:
            say_interrupted()
            raise typer.Exit(130) from None

    return wrapper  # type: ignore[return-value]


def choices(
    kind: type[Enum],
    help: str,
    offered: tuple[str, ...] | None = None,
    panel: str | None = None,
    flag: str | None = None,
) -> Any:
    """An option whose values are an enum's (or the ``offered`` of them where a command takes fewer):
    typer lists and completes them, and the library's own check (``options.choice``) refuses others with
    one line, like every other bad option. ``panel``: the group --help lists it under."""
    values = [str(m.value) for m in kind if offered is None or m.value in offered]
    names = (flag,) if flag is not None else ()
    return typer.Option(
        *names, metavar="[" + "|".join(values) + "]", help=help, autocompletion=lambda: values,
        rich_help_panel=panel,
    )  # fmt: skip


def in_panel(option: Any, panel: str) -> Any:
    """The ``typer.Option`` of a shared option (``Annotated[type, typer.Option(...)]``), listed under
    ``panel`` in a command's --help: ``Annotated[type, in_panel(SharedOpt, PANEL)]``. The shared one stays
    as it is for the commands that do not group their options."""
    grouped = copy.copy(get_args(option)[1])
    grouped.rich_help_panel = panel
    return grouped


ModelArg = Annotated[Path, typer.Argument(help="ONNX model file.", show_default=False)]
EvalCmdOpt = Annotated[
    str | None,
    typer.Option(
        help="A program printing one number (higher is better) for the model at {model}, e.g. "
        "'python eval.py {model}': what the search trades against, and reported."
    ),
]
SensitivitySamplesOpt = Annotated[
    int, typer.Option(help="Calibration samples each sensitivity evaluation runs.")
]
MinFidelityOpt = Annotated[
    float,
    typer.Option(
        help="Refuse (exit 1, nothing written) a result whose fidelity on the user's data (held-out "
        "calibration samples or --inputs) falls below this; 0 accepts anything."
    ),
]
InputsOpt = Annotated[
    Path | None,
    typer.Option(
        "--inputs",
        "--load-inputs",
        help="Data to verify on: .npz keyed by input name (or x, y), or Polygraphy JSON "
        "(polygraphy --save-inputs).",
    ),
]
CalibOpt = Annotated[
    Path | None, typer.Option(help="Calibration data (.npz, Polygraphy JSON, folder of .npy or images).")
]
RoundToOpt = Annotated[
    str,
    typer.Option(
        metavar="N|auto",
        help="Round kept counts up to a multiple of N (1: off). auto: 8, or the channel block ONNX Runtime's "
        "CPU convolutions use here where larger (16 with AVX-512).",
    ),
]
WorkersOpt = Annotated[
    int | None,
    typer.Option(
        help="Processes that run the search's evaluations (sensitivity, a --target-*'s allocation, sweep "
        "points), one ONNX Runtime thread each. Default: one per core; 1: this process.",
        show_default=False,
    ),
]
RayOpt = Annotated[
    str | None,
    typer.Option(
        metavar="local|ADDRESS",
        help="Run the search's evaluations on a Ray cluster instead: 'local' starts one here with --workers "
        "CPUs; HOST:PORT or ray://HOST:PORT joins a running one (needs onnxprune[ray]).",
    ),
]
CalibSamplesOpt = Annotated[int | None, typer.Option(help="Use the first N calibration samples.")]
CalibStepsOpt = Annotated[
    str, typer.Option(help="Calibration steps, comma list of rebuild, bias, refit, bn.")
]
IterationsOpt = Annotated[
    int | None,
    typer.Option(help="Feeds: N random ones (default 1), or N samples split off an --inputs file."),
]


def warn(lines: list[str]) -> None:
    for line in lines:
        errors.print(f"[yellow]warning:[/] {escape(line)}", highlight=False, soft_wrap=True)


def one_target(macs: float | None, params: float | None, latency: float | None) -> Any:
    """The one ``--target-*`` given, or None."""
    given = [
        Target(k, v) for k, v in (("macs", macs), ("params", params), ("latency", latency)) if v is not None
    ]
    if len(given) > 1:
        raise UsageError("give at most one of --target-macs, --target-params and --target-latency")
    return given[0] if given else None


def calib_request(
    source: Path | None,
    size: str | None,
    mean: str | None,
    std: str | None,
    samples: int | None,
    steps: str,
) -> Any:
    """The ``--calib*`` options as the API's request, or None without ``--calib``."""
    if source is None:
        if any(v is not None for v in (size, mean, std, samples)):
            raise UsageError("--calib-size/--calib-mean/--calib-std/--calib-samples need --calib")
        return None
    return api.CalibRequest(
        source,
        size=parse_size(size) if size is not None else None,
        mean=parse_floats(mean, "--calib-mean") if mean is not None else None,
        std=parse_floats(std, "--calib-std") if std is not None else None,
        limit=samples,
        options=CalibOptions(steps=tuple(s.strip() for s in steps.split(",") if s.strip())),
    )
