"""The command line: each command parses options, calls one library function and prints with rich.

One module per command (or family: ``measure`` holds bench and sweep); ``shared`` holds the consoles, the
error wrapper and the common options, ``printing`` what several commands print. No graph logic lives here.
Library errors (``OnnxPruneError``) become one line on stderr and exit 1 (2 for bad usage); anything else is
a bug and keeps its traceback.
"""

from __future__ import annotations

import atexit
import os
import sys
from collections.abc import Callable
from typing import Annotated, Any, NoReturn

import typer

from onnxprune import __version__
from onnxprune.cli import build, check, inspect, measure, prune, sensitivity, sparsify, train
from onnxprune.cli.shared import console, errors, say_interrupted, user_errors

__all__ = ["COMMANDS", "app", "console", "errors", "app_for", "main", "user_errors"]


def _version(value: bool) -> None:
    if value:
        console.print(f"onnxprune {__version__}")
        raise typer.Exit()


def _main(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    """Offline channel pruning for exported ONNX CNNs: exact, verified, TensorRT-ready."""


# In the order --help lists them (the order of the pipeline, not of the alphabet).
COMMANDS: dict[str, Callable[..., Any]] = {
    "inspect": inspect.inspect,
    "sensitivity": sensitivity.sensitivity,
    "prune": prune.prune,
    "sparsify": sparsify.sparsify,
    "check": check.check,
    "bench": measure.bench_command,
    "sweep": measure.sweep_command,
    "build": build.build,
    "train": train.train,
}


def _new_app(commands: dict[str, Callable[..., Any]]) -> typer.Typer:
    built = typer.Typer(
        name="onnxprune",
        help="Offline channel pruning for exported ONNX CNNs: exact, verified, TensorRT-ready.",
        no_args_is_help=True,
        add_completion=True,
        pretty_exceptions_enable=False,
        context_settings={"help_option_names": ["-h", "--help"]},
    )
    built.callback()(_main)
    for name, function in commands.items():
        built.command(name)(function)
    return built


app = _new_app(COMMANDS)


def app_for(argv: list[str]) -> typer.Typer:
    """The app that parses ``argv``: where ``argv[1]`` names a command, an app of that command alone.
    Typer builds its parser by inspecting every command's signature, several times longer for all of them
    than for one at each start; what the one command parses, prints and answers is the same."""
    name = argv[1] if len(argv) > 1 else ""
    return _new_app({name: COMMANDS[name]}) if name in COMMANDS else app


def main() -> None:
    """The console script: the parser's own usage errors become one line and exit 2, like onnxprune's.

    Typer runs on click or, in newer releases, on a vendored copy of it; the two raise different classes,
    so usage errors are recognised by what they carry rather than by class.
    """
    try:
        _run()
    except SystemExit as done:
        if not isinstance(done.code, int | None):
            raise  # sys.exit("message"): Python prints it
        _exit_now(done.code or 0)
    except KeyboardInterrupt:  # while the parser is built, before a command runs
        say_interrupted()
        _exit_now(130)


def _exit_now(code: int) -> NoReturn:
    """Exit without tearing the interpreter down: freeing a pruned 100 MB model's objects one by one and
    unloading every module took a noticeable share of a large model's prune. Output is
    flushed and the exit handlers (temporary folders, weakref finalizers) run first, as at a normal exit."""
    sys.stdout.flush()
    sys.stderr.flush()
    atexit._run_exitfuncs()
    os._exit(code)


def _run() -> None:
    command = typer.main.get_command(app_for(sys.argv))
    try:
        code = command.main(standalone_mode=False)
    except KeyboardInterrupt:
        say_interrupted()
        sys.exit(130)
    except Exception as exc:
        if type(exc).__name__ == "Abort":  # the parser's own Ctrl-C
            say_interrupted()
            sys.exit(130)
        if getattr(exc, "exit_code", None) != 2 or not hasattr(exc, "format_message"):
            raise
        message, context = exc.format_message(), getattr(exc, "ctx", None)
        if message:  # an empty one follows the help text printed for a bare `onnxprune`
            hint = f" (see '{context.command_path} --help')" if context is not None else ""
            errors.print(f"error: {message}{hint}", markup=False, highlight=False, soft_wrap=True)
        sys.exit(2)
    sys.exit(code if isinstance(code, int) else 0)
