"""inspect's per-group MACs: the counter's MACs of the layers whose widths each group sets."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from onnxprune import api
from onnxprune.cli import app
from tests import tiny

runner = CliRunner()

# tiny.concat at 1x3x16x16: a = Conv 3->12 3x3, b = Conv 3->20 1x1, Concat (32), Conv 32->16 3x3, BN, Relu,
# GlobalAveragePool, Flatten, Gemm 16->10. Every Conv is padded to keep 16x16 = 256 positions.
A, B = 12 * 3 * 9 * 256, 20 * 3 * 1 * 256
C, GEMM = 16 * 32 * 9 * 256, 16 * 10


def _by_producer(groups: list[dict]) -> dict[str, dict]:
    return {g["producers"][0]: g for g in groups if g["producers"]}


def test_hand_counted_shares_of_a_concat(tmp_path):
    path = tmp_path / "concat.onnx"
    path.write_bytes(tiny.concat().SerializeToString())
    result = runner.invoke(app, ["inspect", str(path), "--json", "--explain"])
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    assert payload["macs"] == A + B + C + GEMM
    groups = _by_producer(payload["groups"])
    first, second, third = sorted(groups, key=lambda name: int(name.split("/")[1][4:]))[:3]
    # A group sets its producer's output width and its share of each consumer's input width.
    assert groups[first]["macs"] == A + C * 12 // 32
    assert groups[second]["macs"] == B + C * 20 // 32
    assert groups[third]["macs"] == C + GEMM
    for name, macs in ((first, A + C * 12 / 32), (second, B + C * 20 / 32)):
        assert groups[name]["macs_share"] == macs / payload["macs"]
    table = runner.invoke(app, ["inspect", str(path)])
    assert f"{(C + GEMM) / payload['macs']:.1%}" in table.output


def test_counted_at_the_shapes_given(tmp_path):
    """A dynamic spatial input: the shares follow --shape (the rules' own shapes would not know it)."""
    model = tiny.Net(0)
    x = model.cbr("input", 3, 16)
    net = model.model([model.head(x, 16)], shape=(1, 3, "h", "w"))
    small = api.inspect(net, shapes={"input": (1, 3, 8, 8)})
    large = api.inspect(net, shapes={"input": (1, 3, 32, 32)})
    conv = 16 * 3 * 9
    group = next(g for g in small.groups if g.prunable)
    assert small.group_macs[group.id] == conv * 64 + GEMM
    assert large.group_macs[group.id] == conv * 1024 + GEMM
