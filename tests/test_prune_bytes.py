"""prune serialises the pruned model once: the bytes ONNX Runtime checked are the bytes written, and
never once anything changed the model after that check."""

from __future__ import annotations

import onnx

from onnxprune import api
from tests import tiny


def _prune(tmp_path, **kw):
    source, output = tmp_path / "chain.onnx", tmp_path / "pruned.onnx"
    source.write_bytes(tiny.chain().SerializeToString())
    result = api.prune(
        source, output, api.PlanOptions(ratio=0.5), verify=api.VerifyOptions(enabled=False), **kw
    )
    return result, output.read_bytes()


def test_the_checked_bytes_are_written(tmp_path):
    result, written = _prune(tmp_path)
    assert result.serialized is not None and written == result.serialized
    assert written == result.pruned.SerializeToString()
    assert len(onnx.load_from_string(written).graph.node) == len(result.pruned.graph.node)


def test_a_model_changed_after_the_check_is_serialised_again(tmp_path):
    result, written = _prune(tmp_path, sparsify=api.SparsifyOptions(min_channels=1))
    assert result.serialized is None
    assert written == result.pruned.SerializeToString()
