"""The registry: every module in rules/ is imported (its rules registered), and an op has one rule."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest

import onnxprune.rules
from onnxprune.rules.base import RULES, Rule, rule

ROOT = Path(__file__).parents[2]


def test_importing_the_package_imports_every_rule_module() -> None:
    """In a fresh interpreter, so that modules imported by other tests do not hide a forgotten import."""
    names = sorted(m.name for m in pkgutil.iter_modules(onnxprune.rules.__path__))
    code = "import sys, onnxprune.rules; print(' '.join(sorted(sys.modules)))"
    loaded = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT
    ).stdout.split()
    missing = [n for n in names if f"onnxprune.rules.{n}" not in loaded]
    assert not missing, f"rules/__init__.py does not import {missing}: their ops would be NO_RULE"


def test_every_public_rule_class_is_registered() -> None:
    registered = {type(r) for r in RULES.values()}
    for info in pkgutil.iter_modules(onnxprune.rules.__path__):
        module = importlib.import_module(f"onnxprune.rules.{info.name}")
        for name, cls in inspect.getmembers(module, inspect.isclass):
            if cls.__module__ != module.__name__ or not issubclass(cls, Rule) or name.startswith("_"):
                continue
            is_base = any(issubclass(r, cls) and r is not cls for r in registered) or name == "NoRule"
            assert cls in registered or is_base, f"{module.__name__}.{name} has no @rule"


def test_a_second_rule_for_an_op_raises() -> None:
    assert "Relu" in RULES
    before = RULES["Relu"]
    with pytest.raises(RuntimeError, match="op Relu has two rules"):

        @rule("Relu")
        class Again(Rule):
            pass

    assert RULES["Relu"] is before
