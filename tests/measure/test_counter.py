"""The MAC and parameter counter against hand-computed counts, known totals and dynamic dims."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import weights
from onnx import TensorProto, helper, numpy_helper

from onnxprune.measure import count


def _model(nodes, inits, inp_dims, out_name="y", out_dims=None) -> onnx.ModelProto:
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, inp_dims)],
        [helper.make_tensor_value_info(out_name, TensorProto.FLOAT, out_dims)],
        [numpy_helper.from_array(np.asarray(v, np.float32), k) for k, v in inits.items()],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _conv_gemm(batch: int | str = 1, size: int | str = 8) -> onnx.ModelProto:
    rng = np.random.default_rng(0)
    inits = {
        "w": rng.normal(size=(4, 3, 3, 3)),  # 108 params
        "b": rng.normal(size=4),  # 4
        "dw": rng.normal(size=(4, 1, 3, 3)),  # depthwise, 36
        "fc": rng.normal(size=(4, 10)),  # 40
    }
    nodes = [
        helper.make_node("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1], strides=[2, 2]),
        helper.make_node("Conv", ["c", "dw"], ["d"], pads=[1, 1, 1, 1], group=4),
        helper.make_node("GlobalAveragePool", ["d"], ["p"]),
        helper.make_node("Flatten", ["p"], ["f"]),
        helper.make_node("MatMul", ["f", "fc"], ["y"]),
    ]
    return _model(nodes, inits, [batch, 3, size, size])


def test_hand_computed_counts_at_static_shape():
    counts = count(_conv_gemm())
    # Conv 3->4 k3 stride 2 on 8x8: out 4x4; 16 positions * 4*3*3*3 = 1728. Depthwise: 16 * 4*1*3*3 = 576.
    # MatMul [1,4] x [4,10]: 10 * 4 = 40.
    assert counts.nodes == {"c": 1728, "d": 576, "y": 40}
    assert counts.macs == 1728 + 576 + 40
    assert counts.params == 108 + 4 + 36 + 40
    assert counts.inputs == {"x": (1, 3, 8, 8)}


def test_dynamic_dims_count_at_the_fed_shape_not_as_one():
    model = _conv_gemm(batch="N", size="S")
    default = count(model)  # batch 1, spatial 224 (inputs.py defaults): 112x112 after the stride
    assert default.inputs == {"x": (1, 3, 224, 224)}
    assert default.nodes["c"] == 112 * 112 * 108
    fed = count(model, {"x": (4, 3, 16, 16)})
    assert fed.nodes == {"c": 4 * 64 * 108, "d": 4 * 64 * 36, "y": 4 * 40}
    assert fed.unknown == []


def test_shapes_only_the_runtime_knows_come_from_one_onnx_runtime_run():
    # Resize scales computed from the data: onnx infers the rank but no dims; ONNX Runtime knows them.
    rng = np.random.default_rng(1)
    inits = {"w": rng.normal(size=(2, 3, 1, 1)), "base": [1.0, 1.0, 2.0, 2.0], "zero": 0.0}
    nodes = [
        helper.make_node("ReduceMin", ["x"], ["m"], keepdims=0),
        helper.make_node("Mul", ["m", "zero"], ["m0"]),
        helper.make_node("Add", ["base", "m0"], ["scales"]),
        helper.make_node("Resize", ["x", "", "scales"], ["r"], mode="nearest"),
        helper.make_node("Conv", ["r", "w"], ["y"]),
    ]
    model = _model(nodes, inits, [1, 3, 5, 5])
    counts = count(model)
    assert counts.from_runtime >= 1
    assert counts.nodes == {"y": 10 * 10 * 6}
    assert count(model, runtime=False).unknown == ["y"]


def test_gemm_with_trans_and_conv_transpose():
    rng = np.random.default_rng(2)
    inits = {"wt": rng.normal(size=(3, 2, 2, 2)), "g": rng.normal(size=(7, 2 * 8 * 8))}
    nodes = [
        helper.make_node("ConvTranspose", ["x", "wt"], ["t"], strides=[2, 2]),  # 4x4 -> 8x8, 2 channels
        helper.make_node("Flatten", ["t"], ["f"]),
        helper.make_node("Gemm", ["f", "g"], ["y"], transB=1),
    ]
    counts = count(_model(nodes, inits, [2, 3, 4, 4]))
    # ConvTranspose: every input position meets the whole weight: 2 * 16 * 24. Gemm: [2,128] x [128,7].
    assert counts.nodes == {"t": 2 * 16 * 24, "y": 2 * 7 * 128}


@pytest.mark.parametrize(
    ("name", "gmacs", "mparams"),
    [("resnet50", 4.09, 25.6), ("mobilenet_v2", 0.30, 3.54), ("resnet18", 1.81, 11.7)],
)
def test_known_totals_of_real_topologies(name, gmacs, mparams):
    counts = count(weights.load(name))
    assert counts.inputs == {"input": (1, 3, 224, 224)}
    assert round(counts.macs / 1e9, 2) == gmacs
    # BN running statistics are parameters of the ONNX too (0.05 M on ResNet-50).
    assert round(counts.params / 1e6, 2 if mparams < 10 else 1) == mparams


def test_prune_counts_before_and_after_at_the_verification_shapes():
    import tiny

    from onnxprune import api

    n = tiny.Net(0)
    model = n.model([n.head(n.cbr(n.cbr("input", 3, 16), 16, 16), 16)], shape=("N", 3, "H", "W"))
    fed = {"input": (2, 3, 32, 32)}
    result = api.prune_model(model, api.PlanOptions(ratio=0.5), api.VerifyOptions(enabled=False, shapes=fed))
    report = result.report
    assert report["counted_at"] == {"input": [2, 3, 32, 32]}
    assert report["macs"]["before"] == count(model, fed).macs != count(model).macs
    assert report["macs"]["after"] == count(result.pruned, fed).macs < report["macs"]["before"]
    assert report["uncounted_nodes"] == []
