"""``python -m onnxprune.cli``: the same as the ``onnxprune`` console script."""

from onnxprune.cli import main

if __name__ == "__main__":
    main()
