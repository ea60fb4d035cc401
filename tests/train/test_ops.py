"""Every op of the training backend against ONNX Runtime, one tiny model per op (and per attribute variant).

The check is the one training runs: each node on ONNX Runtime's own input values (``check.py``), then the
whole graph. Every op in the registry must have a case here, and every case must be input-sensitive.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import helper
from typer.testing import CliRunner

from onnxprune.cli import app
from onnxprune.runtime import run_model
from tests.train._ops_cases import CASES

torch = pytest.importorskip("torch", reason="the [train] extra (torch) is not installed")

from onnxprune.train.check import check_conversion  # noqa: E402 - needs torch
from onnxprune.train.ops import OPS, UnsupportedOpError  # noqa: E402
from onnxprune.train.torchgraph import OnnxModule  # noqa: E402

runner = CliRunner()


def moved(a: np.ndarray, b: np.ndarray) -> bool:
    """Whether an output depends on the input: 1e-2 of its scale for floats, any change otherwise."""
    if a.shape != b.shape:
        return True
    if a.dtype.kind != "f":
        return not np.array_equal(a, b)
    finite = np.isfinite(a) & np.isfinite(b)
    return float(np.abs(a[finite] - b[finite]).max()) >= 1e-2 * float(np.abs(a[finite]).max())


def test_every_registered_op_has_a_case() -> None:
    covered = {key.split(":")[0] for key in CASES}
    assert sorted(set(OPS) - covered) == []


@pytest.mark.parametrize("key", sorted(CASES))
def test_conversion_matches_onnx_runtime(key: str) -> None:
    case = CASES[key]
    model = case.model()
    a, b = run_model(model, case.feed(0)), run_model(model, case.feed(1))
    assert any(moved(a[name], b[name]) for name in a), "the case's output does not depend on its input"
    module = OnnxModule(model)
    assert check_conversion(module, model, case.feed(0), torch.device("cpu")) <= 1e-5


def test_a_wrong_op_is_named_even_deep_in_a_graph(monkeypatch: pytest.MonkeyPatch) -> None:
    from onnxprune.errors import VerificationError
    from onnxprune.train import ops

    monkeypatch.setitem(ops.OPS, "Softmax", lambda node, xs: torch.softmax(xs[0] * 1.001, dim=-1))
    model = CASES["pattern:attention"].model()
    with pytest.raises(VerificationError, match="Softmax node '/Softmax"):
        check_conversion(OnnxModule(model), model, CASES["pattern:attention"].feed(0), torch.device("cpu"))


@pytest.mark.parametrize(
    ("op", "attrs", "message"),
    [
        ("LRN", {"size": 3}, "op LRN"),
        ("Resize", {"mode": "linear", "antialias": 1}, "antialias"),
        ("ScatterND", {"reduction": "add"}, "a reduction"),
    ],
)
def test_unconvertible_ops_are_refused_naming_them(
    tmp_path: Path, op: str, attrs: dict, message: str
) -> None:
    inputs = ["x"] if op == "LRN" else (["x", "", "sc"] if op == "Resize" else ["x", "i", "u"])
    consts = {
        "sc": np.array([1, 1, 0.5, 0.5], np.float32),
        "i": np.array([[0]], np.int64),
        "u": np.zeros((1, 3, 8, 8), np.float32),
    }
    used = [onnx.numpy_helper.from_array(v, k) for k, v in consts.items() if k in inputs]
    graph = helper.make_graph(
        [helper.make_node(op, inputs, ["y"], name="/head/odd", **attrs)],
        "g",
        [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["N", 3, 8, 8])],
        [
            helper.make_tensor_value_info(
                "y", onnx.TensorProto.FLOAT, ["N", 3, 4 if op == "Resize" else 8, None]
            )
        ],
        used,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 8
    with pytest.raises(UnsupportedOpError, match=message):
        OnnxModule(model).run({"x": torch.zeros(2, 3, 8, 8)})
    onnx.save(model, tmp_path / "m.onnx")
    np.savez(tmp_path / "d.npz", x=np.ones((4, 3, 8, 8), np.float32))
    out = tmp_path / "o.onnx"
    args = [
        "train",
        str(tmp_path / "m.onnx"),
        "-o",
        str(out),
        "--data",
        str(tmp_path / "d.npz"),
        "--teacher",
        str(tmp_path / "m.onnx"),
        "--batch",
        "2",
    ]
    result = runner.invoke(app, args)
    assert result.exit_code == 1 and message in result.output and "/head/odd" in result.output
    assert "Traceback" not in result.output and not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d.npz", "m.onnx"]


def test_a_pass_drops_each_value_after_its_last_reader(monkeypatch: pytest.MonkeyPatch) -> None:
    """Twelve Relus in a chain with a skip from the first to the last Add: without gradients, at most the
    live values are held (the skip's and the chain's two), not all twelve; the outputs and the values
    asked for are still returned, and keep_all still returns every one."""
    import weakref

    from onnxprune.train import ops

    made: list[weakref.ref] = []
    alive: list[int] = []
    relu = ops.OPS["Relu"]

    def counting(node, xs):  # noqa: ANN001, ANN202
        alive.append(sum(r() is not None for r in made))
        out = relu(node, xs)
        made.append(weakref.ref(out))
        return out

    monkeypatch.setitem(ops.OPS, "Relu", counting)
    nodes = [helper.make_node("Relu", ["x"], ["r0"])]
    nodes += [helper.make_node("Relu", [f"r{i - 1}"], [f"r{i}"]) for i in range(1, 12)]
    nodes.append(helper.make_node("Add", ["r0", "r11"], ["y"]))
    shape = [2, 3, 16, 16]
    graph = helper.make_graph(
        nodes, "chain", [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, shape)],
        [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, shape)],
    )  # fmt: skip
    module = OnnxModule(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]))
    x = torch.from_numpy(np.random.default_rng(0).standard_normal(shape).astype(np.float32))
    with torch.no_grad():
        got = module.run({"x": x}, keep=["r5"])
    assert max(alive) <= 3, alive
    assert torch.equal(got["y"], torch.relu(x) * 2) and torch.equal(got["r5"], torch.relu(x))
    made.clear()
    with torch.no_grad():
        every = module.run({"x": x}, keep_all=True)
    assert {f"r{i}" for i in range(12)} <= set(every)
