"""files.py: the one atomic writer every model, report and plan goes through."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import onnx
import pytest
import tiny

from onnxprune import files
from onnxprune.errors import ModelSaveError

PACKAGE = Path(__file__).parents[1] / "onnxprune"


def test_json_and_bytes_are_written_whole(tmp_path: Path) -> None:
    files.save_json({"a": [1, 2]}, tmp_path / "r.json")
    files.write_bytes(tmp_path / "p.plan", b"\x00plan")
    assert json.loads((tmp_path / "r.json").read_text()) == {"a": [1, 2]}
    assert (tmp_path / "p.plan").read_bytes() == b"\x00plan"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.plan", "r.json"]


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path: Path) -> None:
    out = tmp_path / "r.json"
    out.write_text("old")

    def fail(handle) -> None:
        handle.write(b"half")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        files.write_atomically(out, fail)
    assert out.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["r.json"]


def test_a_refused_confirmation_keeps_the_old_file(tmp_path: Path) -> None:
    """prune's ONNX Runtime check runs while the file is written: its failure must leave the old output."""
    out, seen = tmp_path / "m.onnx", []
    out.write_bytes(b"old")

    def refuse() -> None:
        seen.append(sorted(p.name for p in tmp_path.iterdir()))  # the new bytes are written by now
        raise ValueError("check failed")

    with pytest.raises(ValueError, match="check failed"):
        files.write_atomically(out, lambda handle: handle.write(b"new model"), confirm=refuse)
    assert len(seen[0]) == 2, "confirm runs once the temporary file is written"
    assert out.read_bytes() == b"old" and [p.name for p in tmp_path.iterdir()] == ["m.onnx"]
    files.write_atomically(out, lambda handle: handle.write(b"new model"), confirm=lambda: None)
    assert out.read_bytes() == b"new model"


def test_a_missing_directory_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(ModelSaveError, match="does not exist"):
        files.save_json({}, tmp_path / "nowhere" / "r.json")


def test_a_device_is_written_through() -> None:
    assert files.write_bytes("/dev/null", b"x") == Path("/dev/null")


def _writes_files(path: Path) -> list[str]:
    """Calls that create or replace files on their own: os.replace, tempfile.mkstemp, open(..., 'w...')."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if not isinstance(node, ast.Call):
            continue
        name = ast.unparse(node.func)
        mode = node.args[1] if len(node.args) > 1 else None
        writes = isinstance(mode, ast.Constant) and isinstance(mode.value, str) and "w" in mode.value
        if name in ("os.replace", "tempfile.mkstemp", "os.rename") or (name == "open" and writes):
            found.append(f"{name} at line {node.lineno}")
    return found


@pytest.mark.parametrize(
    "path", [p for p in sorted(PACKAGE.rglob("*.py")) if p.name != "files.py"], ids=lambda p: p.name
)
def test_only_files_py_writes_files(path: Path) -> None:
    assert not _writes_files(path), f"{path.name} writes files itself; use onnxprune.files"


def test_the_writer_check_sees_a_writer(tmp_path: Path) -> None:
    sample = tmp_path / "w.py"
    sample.write_text("import os\nos.replace('a', 'b')\nopen('x', 'wb')\n")
    assert len(_writes_files(sample)) == 2


def test_non_positive_dims_are_read_as_dynamic(tmp_path: Path) -> None:
    model = tiny.residual()
    model.graph.input[0].type.tensor_type.shape.dim[0].dim_value = -1
    model.graph.output[0].type.tensor_type.shape.dim[0].dim_value = 0
    path = tmp_path / "old_export.onnx"
    onnx.save(model, path)
    read = files.read_model(path)
    for value in (read.graph.input[0], read.graph.output[0]):
        batch = value.type.tensor_type.shape.dim[0]
        assert not batch.HasField("dim_value") and not batch.HasField("dim_param"), value.name
    assert [d.dim_value for d in read.graph.input[0].type.tensor_type.shape.dim[1:]] == [3, 16, 16]
