"""The console script reads the model while the CLI imports (readahead.py, launch.py); read_model takes those
bytes only where they are the file's current ones."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
import tiny
from onnx import helper, numpy_helper

from onnxprune import files, launch, readahead


def _big_model(path: Path, external: bool = False) -> onnx.ModelProto:
    """A Conv whose weight makes the file over readahead's 1 MiB floor."""
    weight = np.random.default_rng(0).normal(size=(64, 64, 9, 9)).astype(np.float32)  # 1.3 MiB
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w"], ["y"])],
        "big",
        [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 64, 9, 9])],
        [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, 64, 1, 1])],
        [numpy_helper.from_array(weight, "w")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.save(model, path, save_as_external_data=external, location=path.name + ".data" if external else None)
    return model


@pytest.fixture(autouse=True)
def _nothing_pending():
    readahead._reads.clear()
    yield
    readahead._reads.clear()


def test_the_bytes_read_ahead_are_the_files_and_are_taken_once(tmp_path: Path) -> None:
    path = tmp_path / "m.onnx"
    _big_model(path)
    readahead.start(str(path))
    assert readahead.take(path) == path.read_bytes()
    assert readahead.take(path) is None


def test_a_file_changed_after_the_read_began_is_read_again(tmp_path: Path) -> None:
    path = tmp_path / "m.onnx"
    _big_model(path)
    readahead.start(str(path))
    readahead._reads[str(path.resolve())].thread.join()
    path.write_bytes(path.read_bytes() + b"\0")  # another size, another mtime
    assert readahead.take(path) is None


@pytest.mark.parametrize("name", ["small.onnx", "missing.onnx", "folder"])
def test_small_missing_or_odd_paths_are_not_read_ahead(tmp_path: Path, name: str) -> None:
    onnx.save(tiny.chain(), tmp_path / "small.onnx")
    (tmp_path / "folder").mkdir()
    readahead.start(str(tmp_path / name))
    assert readahead._reads == {}


@pytest.mark.parametrize("external", [False, True])
def test_read_model_takes_the_bytes_and_loads_external_data(
    tmp_path: Path, external: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(readahead, "_MIN_BYTES", 1)  # an external-data model's own file is small
    path = tmp_path / "m.onnx"
    weight = numpy_helper.to_array(_big_model(path, external=external).graph.initializer[0], str(tmp_path))
    readahead.start(str(path))
    loaded = files.read_model(path)
    assert readahead._reads == {}  # taken
    assert np.array_equal(numpy_helper.to_array(loaded.graph.initializer[0]), weight)


def test_the_console_script_reads_ahead_the_model_a_command_names(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import onnxprune.cli

    path = tmp_path / "m.onnx"
    _big_model(path)
    started: list[list[str]] = []
    monkeypatch.setattr(onnxprune.cli, "main", lambda: started.append(list(readahead._reads)))
    for argv, expected in [
        (["prune", str(path), "-o", "p.onnx"], [str(path.resolve())]),
        (["prune", str(path), "--help"], []),
        (["check", str(path), str(path)], []),  # check loads its models its own way
        (["prune", "--ratio", "0.5"], []),
    ]:
        readahead._reads.clear()
        monkeypatch.setattr(sys, "argv", ["onnxprune", *argv])
        launch.main()
        assert started.pop() == expected, argv


def test_the_installed_script_is_the_launcher() -> None:
    script = Path(sys.executable).parent / "onnxprune"
    if not script.exists():
        pytest.skip("no console script next to this Python (not installed with pip install -e .)")
    assert "onnxprune.launch" in script.read_text(), "reinstall: pip install -e . (pyproject's entry point)"
    assert os.access(script, os.X_OK)


def test_a_link_and_its_target_are_the_same_read(tmp_path: Path) -> None:
    path = tmp_path / "m.onnx"
    _big_model(path)
    link = tmp_path / "link.onnx"
    link.symlink_to(path)
    readahead.start(str(link))  # what the command line said
    assert readahead.take(path.resolve()) == path.read_bytes()  # what the command resolved
