"""Load and save: parameters as initializers, Constant nodes or Identity-forwarded; atomic writes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
import tiny
from onnx import helper

from onnxprune import files
from onnxprune import graph as graphs
from onnxprune.errors import ModelLoadError, ModelSaveError


def as_constant_nodes(model: onnx.ModelProto) -> onnx.ModelProto:
    """PaddlePaddle's export style: no initializers, every parameter a Constant node."""
    consts = [
        helper.make_node("Constant", [], [t.name], name=f"{t.name}_const", value=t)
        for t in model.graph.initializer
    ]
    del model.graph.initializer[:]
    nodes = consts + list(model.graph.node)
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    return model


def through_identity(model: onnx.ModelProto) -> onnx.ModelProto:
    """Every parameter read through an Identity node, as some exporters share weights."""
    for node in model.graph.node:
        for i, name in enumerate(node.input):
            if name in {t.name for t in model.graph.initializer}:
                node.input[i] = f"{name}_id"
    ids = [
        helper.make_node("Identity", [t.name], [f"{t.name}_id"], name=f"{t.name}/Identity")
        for t in model.graph.initializer
    ]
    nodes = ids + list(model.graph.node)
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    return model


@pytest.mark.parametrize("convert", [as_constant_nodes, through_identity])
def test_parameters_stored_any_way_prune_exactly(convert) -> None:
    model = convert(tiny.residual())
    onnx.checker.check_model(model)
    result = tiny.prune_dead(model)
    assert tiny.removed_channels(result) > 0
    tiny.assert_exact(model, result.pruned)


def test_save_is_atomic_and_leaves_no_temporary(tmp_path: Path) -> None:
    out = tmp_path / "m.onnx"
    files.save_model(tiny.chain(), out)
    assert [p.name for p in tmp_path.iterdir()] == ["m.onnx"]
    assert onnx.load(out).graph.node


def test_interrupted_save_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(files.os, "fsync", boom)
    with pytest.raises(KeyboardInterrupt):
        files.save_model(tiny.chain(), tmp_path / "m.onnx")
    assert list(tmp_path.iterdir()) == []


def test_bad_files_are_one_line_errors(tmp_path: Path) -> None:
    empty, garbage = tmp_path / "empty.onnx", tmp_path / "garbage.onnx"
    empty.write_bytes(b"")
    garbage.write_bytes(b"\x08\x96\x01 not a model \xff" * 10)
    for path, message in [
        (empty, "empty"),
        (garbage, "not"),
        (tmp_path, "directory"),
        (tmp_path / "x", "no such"),
    ]:
        with pytest.raises(ModelLoadError, match=message):
            files.read_model(path)


def test_output_into_a_missing_directory_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ModelSaveError, match="does not exist"):
        files.check_output_path(tmp_path / "missing" / "m.onnx", [])


def test_models_past_2gb_are_checked_on_their_skeleton(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Past protobuf's limit the checker and strict shape inference see stubs, not weights: the same path,
    forced here on a small model."""
    from onnxprune import api
    from onnxprune.options import PlanOptions

    for module in (files, graphs):  # the load's shape inference and the save
        monkeypatch.setattr(module, "needs_external_data", lambda model: True)
    source = tmp_path / "m.onnx"
    onnx.save(tiny.residual(), source)
    result = api.prune(
        source,
        tmp_path / "p.onnx",
        PlanOptions(ratio=0.5, round_to=4),
        verify=api.VerifyOptions(enabled=False),
    )
    assert result.pruned.graph.value_info, "the skeleton's inferred shapes are carried over"
    assert any(
        t.data_location == onnx.TensorProto.EXTERNAL
        for t in onnx.load(tmp_path / "p.onnx", load_external_data=False).graph.initializer
    )
    tiny.assert_exact(result.masked, onnx.load(tmp_path / "p.onnx"))


def test_an_input_with_external_data_keeps_it(tmp_path: Path) -> None:
    from onnxprune import api
    from onnxprune.options import PlanOptions

    source = tmp_path / "m.onnx"
    onnx.save(
        tiny.residual(), source, save_as_external_data=True, all_tensors_to_one_file=True, size_threshold=0
    )
    out = tmp_path / "p.onnx"
    api.prune(source, out, PlanOptions(ratio=0.5, round_to=4), verify=api.VerifyOptions(enabled=False))
    assert (tmp_path / "p.onnx.data").exists()
    inline = tmp_path / "inline.onnx"
    api.prune(
        source,
        inline,
        PlanOptions(ratio=0.5, round_to=4),
        verify=api.VerifyOptions(enabled=False),
        external_data=False,
    )
    assert not (tmp_path / "inline.onnx.data").exists()
    tiny.assert_exact(onnx.load(out), onnx.load(inline), rtol=0.0)


def test_a_file_with_constant_node_weights_loads_and_prunes(tmp_path: Path) -> None:
    """PaddlePaddle's layout on disk: the load check runs on a skeleton whose Constant nodes are stubs."""
    from onnxprune import api
    from onnxprune.options import PlanOptions

    source = tmp_path / "paddle.onnx"
    onnx.save(as_constant_nodes(tiny.residual()), source)
    result = api.prune(source, tmp_path / "p.onnx", PlanOptions(ratio=0.5, round_to=4))
    assert result.report["verify"]["exact"]["passed"]
    tiny.assert_exact(result.masked, onnx.load(tmp_path / "p.onnx"))


def test_every_real_topology_loads_from_a_file(tmp_path: Path) -> None:
    import weights

    for name in weights.topologies():
        path = tmp_path / f"{name}.onnx"
        onnx.save(weights.load(name), path)
        assert files.read_model(path).graph.node, name


def test_folding_is_skipped_only_where_nothing_could_fold() -> None:
    """graphsurgeon's folding pass is skipped when no node computes from constants alone and no Shape
    or Size starts shape arithmetic: ShuffleNet's chunk bounds (Shape -> Gather -> Div) still fold."""
    import onnx_graphsurgeon as gs

    plain = gs.import_onnx(tiny.chain())
    assert not graphs._may_fold(plain)
    x = gs.Variable("x", dtype="float32", shape=(1, 4))
    shape = gs.Variable("s", dtype="int64")
    assert graphs._may_fold(gs.Graph(nodes=[gs.Node("Shape", inputs=[x], outputs=[shape])], inputs=[x]))
    two = gs.Constant("two", values=np.array([2.0], np.float32))
    y = gs.Variable("y", dtype="float32")
    constant_only = gs.Node("Mul", inputs=[two, two], outputs=[y])
    assert graphs._may_fold(gs.Graph(nodes=[constant_only], outputs=[y]))
