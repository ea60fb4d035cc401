"""pyproject.toml builds without setuptools' deprecation banners (`make setup` prints none)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]
BUILD_METADATA = (
    "import sys, tempfile; from setuptools import build_meta; "
    "print(build_meta.prepare_metadata_for_build_wheel(tempfile.mkdtemp()))"
)


def test_metadata_builds_without_a_deprecation_warning() -> None:
    setuptools = pytest.importorskip("setuptools")
    if int(setuptools.__version__.split(".")[0]) < 77:
        pytest.skip("the SPDX license string needs setuptools >= 77 (what pyproject.toml requires to build)")
    done = subprocess.run(
        [sys.executable, "-W", "always", "-c", BUILD_METADATA], cwd=ROOT, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert "deprecated" not in done.stderr.lower(), done.stderr
    assert "onnxprune" in done.stdout
