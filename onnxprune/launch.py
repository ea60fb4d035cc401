"""The ``onnxprune`` console script: start reading the model named on the command line (readahead.py),
then import and run the CLI. Outside the ``onnxprune.cli`` package on purpose: importing that package
imports onnx, which is what the read overlaps."""

from __future__ import annotations

import os
import sys

from onnxprune import readahead

# Commands whose first argument is the model they read first.
READS_A_MODEL = ("prune", "inspect", "sensitivity", "sweep", "sparsify", "bench", "build")


def main() -> None:
    argv = sys.argv[1:]
    names_a_model = len(argv) >= 2 and argv[0] in READS_A_MODEL and not argv[1].startswith("-")
    try:
        if names_a_model and not {"-h", "--help"} & set(argv):
            readahead.start(argv[1])
        from onnxprune.cli import main as cli_main
    except KeyboardInterrupt:
        # Ctrl-C while the imports run (a second or so on a cold cache), before the CLI's own handling.
        sys.stderr.write("interrupted\n")
        sys.stderr.flush()
        os._exit(130)
    cli_main()
