"""Imports go one way: CLI (the onnxprune.cli package) → API → stages → rules → primitives. Read from the
source, so a function-local or TYPE_CHECKING import counts as much as a top-level one."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).parents[1] / "onnxprune"


def _module(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    """Every onnxprune module the file imports, wherever the import statement stands."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("onnxprune")}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("onnxprune"):
            found.add(node.module)
            found |= {f"{node.module}.{a.name}" for a in node.names}
    return found


def _files(under: str) -> list[Path]:
    return sorted((PACKAGE / under).rglob("*.py"))


PRIMITIVES = (
    "onnxprune.channels",
    "onnxprune.errors",
    "onnxprune.names",
    "onnxprune.text",
    "onnxprune.tolerances",
)


@pytest.mark.parametrize("path", _files("rules"), ids=lambda p: p.name)
def test_rules_import_only_rules_and_primitives(path: Path) -> None:
    bad = {m for m in _imports(path) if not m.startswith(("onnxprune.rules", *PRIMITIVES))}
    assert not bad, f"{_module(path)} imports {sorted(bad)}: a rule must not import its driver"


@pytest.mark.parametrize("path", _files("channels"), ids=lambda p: p.name)
def test_channel_model_imports_only_primitives(path: Path) -> None:
    bad = {m for m in _imports(path) if not m.startswith(PRIMITIVES)}
    assert not bad, f"{_module(path)} imports {sorted(bad)}: the channel model sits below the rules"


def test_the_check_sees_an_upward_import(tmp_path: Path) -> None:
    sample = tmp_path / "sample.py"
    sample.write_text("if TYPE_CHECKING:\n    from onnxprune.rewrite import Rewrite\n")
    assert "onnxprune.rewrite" in _imports(sample)


# The heavy or optional ones: runtimes, TensorRT, the CLI's printer, and the extras (plot, images, train;
# onnxprune.train is the [train] extra's own code: importing it imports torch).
# onnx.reference: ONNX's reference evaluator, which rules/base.py needs only for ops it has no numpy for.
# ray: the [ray] extra, and onnxprune.search.ray_cluster, its only user (imported where --ray is given).
LAZY = ("onnxruntime", "polygraphy", "tensorrt", "rich", "matplotlib", "PIL", "torch", "onnxprune.train",
        "onnx.reference", "ray", "onnxprune.search.ray_cluster")  # fmt: skip


# The console script: the CLI's first step, outside its package so that it runs before the CLI's imports
# (it starts reading the model meanwhile: readahead.py); it imports the CLI late on purpose.
LAUNCHER = "onnxprune.launch"


def _lazy(module: str, importer: str = "") -> bool:
    if importer == LAUNCHER and _inside(module, "onnxprune.cli"):
        return True
    return any(module == name or module.startswith(name + ".") for name in LAZY)


@pytest.mark.parametrize("path", _files("."), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_imports_stand_at_the_top_but_for_the_heavy_optional_ones(path: Path) -> None:
    tree = ast.parse(path.read_text())
    top = {id(node) for node in tree.body}
    late = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import | ast.ImportFrom) and id(node) not in top:
            module = node.module if isinstance(node, ast.ImportFrom) else node.names[0].name
            if not _lazy(module or "", _module(path)):
                late.append(f"{module} (line {node.lineno})")
    assert not late, f"{_module(path)} imports inside a function or TYPE_CHECKING: {late}"


def _inside(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def _above(name: str) -> tuple[str, ...]:
    """The layers module ``name`` must not import: the CLI's modules import the API and each other, the API
    imports no CLI module, and the rest neither."""
    if _inside(name, "onnxprune.cli") or name == LAUNCHER:
        return ()
    if _inside(name, "onnxprune.api"):
        return ("onnxprune.cli",)
    return ("onnxprune.api", "onnxprune.cli")


def _upward(path: Path, name: str) -> set[str]:
    return {m for m in _imports(path) if any(_inside(m, layer) for layer in _above(name))}


@pytest.mark.parametrize("path", _files("."), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_only_the_cli_imports_the_api_and_nothing_imports_the_cli(path: Path) -> None:
    name = _module(path)
    bad = _upward(path, name)
    assert not bad, f"{name} imports {sorted(bad)}, which sit above it"


def test_the_check_sees_an_import_of_a_cli_module(tmp_path: Path) -> None:
    sample = tmp_path / "sample.py"
    sample.write_text("from onnxprune.cli.printing import fed_line\nfrom onnxprune import api\n")
    cli = {"onnxprune.cli.printing", "onnxprune.cli.printing.fed_line"}
    assert _upward(sample, "onnxprune.verify") == cli | {"onnxprune.api"}
    assert _upward(sample, "onnxprune.client") == cli | {"onnxprune.api"}  # a name, not the package
    assert _upward(sample, "onnxprune.api") == cli
    assert _upward(sample, "onnxprune.cli.prune") == set()


# The pipeline's stages, lowest first: a stage may import the stages before it, never one after it. Drivers
# (search) sit above the pipeline, the API above them, the CLI on top.
STAGES = (
    "onnxprune.channels",
    "onnxprune.rules",
    "onnxprune.graph",
    "onnxprune.analyse",
    "onnxprune.planning",
    "onnxprune.rewrite",
    "onnxprune.compensate",
    "onnxprune.verify",
    "onnxprune.pipeline",
    "onnxprune.search",
    "onnxprune.api",
    "onnxprune.cli",
)


def _stage(module: str) -> int | None:
    return next((i for i, stage in enumerate(STAGES) if _inside(module, stage)), None)


def _later_stages(path: Path, name: str | None = None) -> set[str]:
    mine = _stage(name or _module(path))
    if mine is None:
        return set()
    return {m for m in _imports(path) if (theirs := _stage(m)) is not None and theirs > mine}


@pytest.mark.parametrize("path", _files("."), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_a_stage_imports_no_later_stage(path: Path) -> None:
    bad = _later_stages(path)
    assert not bad, f"{_module(path)} imports {sorted(bad)}, a later stage of the pipeline"


def test_the_stage_check_sees_an_import_of_a_later_stage(tmp_path: Path) -> None:
    sample = tmp_path / "sample.py"
    sample.write_text("from onnxprune.pipeline.run import execute\nfrom onnxprune.channels import Plan\n")
    later = {"onnxprune.pipeline.run", "onnxprune.pipeline.run.execute"}
    assert _later_stages(sample, "onnxprune.planning.make") == later
    assert _later_stages(sample, "onnxprune.search.targets") == set()


@pytest.mark.parametrize("path", _files("measure"), ids=lambda p: p.name)
def test_measurement_does_not_import_the_build_stage(path: Path) -> None:
    """bench asks devices.py whether a GPU and TensorRT are here; the engine package (which imports
    sparsity, which imports measure.counter) sits above it."""
    bad = {m for m in _imports(path) if _inside(m, "onnxprune.engine")}
    assert not bad, f"{_module(path)} imports {sorted(bad)}"
