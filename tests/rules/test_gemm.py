"""gemm.py: Gemm and MatMul as consumers (input features, constants folded into the bias) and producers
(output features: an MLP head with BatchNorm1d)."""

from ._build import Net, assert_declines, build, check_exact


def mlp(op: str = "Gemm"):
    """GAP → Flatten → Gemm → BN → Relu → Gemm: the hidden features are a group of their own."""
    n = Net()
    x = n.cbr("input", 3, 16)
    flat = n.node("Flatten", [n.node("GlobalAveragePool", [x])], axis=1)
    w1 = n.param(n.rng.normal(0, 0.3, (16, 24)))
    h = n.node(op, [flat, w1] + ([n.param(n.rng.normal(0, 0.1, 24), "b")] if op == "Gemm" else []))
    h = n.act(n.bn(h, 24), "Relu")
    w2 = n.param(n.rng.normal(0, 0.3, (24, 10)))
    return build(n, [n.node(op, [h, w2])])


def test_gemm_mlp_with_batchnorm1d():
    dead, _ = check_exact(mlp("Gemm"), through="Gemm")
    assert dead is not None and any(
        g["channels_before"] == 24 and g["channels_after"] < 24 for g in dead.report["groups"]
    )


def test_matmul_folds_a_constant_into_an_added_bias():
    """BN → Sigmoid → GAP → MatMul: a removed channel is 0.5 at the MatMul, which gains an Add."""
    n = Net()
    x = n.act(n.bn(n.conv("input", 3, 16), 16), "Sigmoid")
    flat = n.node("Flatten", [n.node("GlobalAveragePool", [x])], axis=1)
    model = build(n, [n.node("MatMul", [flat, n.param(n.rng.normal(0, 0.3, (16, 10)))])])
    dead, _ = check_exact(model, through="MatMul")
    assert dead is not None and [node.op_type for node in dead.pruned.graph.node][-1] == "Add"


def test_gemm_with_a_transposed_input_declines():
    n = Net()
    x = n.cbr("input", 3, 16)
    flat = n.node("Flatten", [n.node("GlobalAveragePool", [x])], axis=1)
    y = n.node("Gemm", [flat, n.param(n.rng.normal(0, 0.3, (1, 10)))], transA=1)
    assert_declines(build(n, [y]), "Gemm with a run-time weight, a transposed or non-2-D input")
