"""Consumers' weights read by input channel: a grouped Conv, a Gemm with transB, a MatMul."""

from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs
import pytest

from onnxprune.consumers import input_gram, input_norms, rows_by_input

rng = np.random.default_rng(0)


def _node(op: str, weight: np.ndarray, **attrs) -> gs.Node:
    x, y = gs.Variable("x"), gs.Variable("y")
    return gs.Node(op, op.lower(), attrs=attrs, inputs=[x, gs.Constant("w", weight)], outputs=[y])


def test_a_grouped_conv_reads_each_input_channel_with_its_groups_filters_only() -> None:
    w = rng.normal(size=(6, 2, 3, 3))  # 3 groups: 2 input and 2 output channels each
    gram = input_gram(_node("Conv", w, group=3))
    assert gram.shape == (6, 6)
    for c in range(6):
        g, k = divmod(c, 2)
        column = w[2 * g : 2 * g + 2, k]  # the filters of group g that read input channel c
        assert gram[c, c] == pytest.approx(float((column**2).sum()))
    assert gram[0, 2] == 0 and gram[1, 5] == 0  # channels of different groups never meet
    assert np.allclose(input_norms(_node("Conv", w, group=3)) ** 2, np.diag(gram))


@pytest.mark.parametrize(("op", "weight", "attrs"), [
    ("Gemm", rng.normal(size=(4, 5)), {"transB": 1}),  # [out, in]
    ("Gemm", rng.normal(size=(5, 4)), {}),  # [in, out]
    ("MatMul", rng.normal(size=(5, 4)), {}),
])  # fmt: skip
def test_dense_consumers_read_five_inputs(op: str, weight: np.ndarray, attrs: dict) -> None:
    w_in_out = weight.T if attrs.get("transB") else weight
    assert np.allclose(input_gram(_node(op, weight, **attrs)), w_in_out @ w_in_out.T)
    assert np.allclose(input_norms(_node(op, weight, **attrs)), np.linalg.norm(w_in_out, axis=1))


def test_a_weight_that_is_not_a_constant_or_transposed_input_is_not_read() -> None:
    node = _node("Gemm", rng.normal(size=(4, 5)), transA=1)
    assert rows_by_input(node) is None and input_gram(node) is None and input_norms(node) is None
    node.inputs[1] = gs.Variable("w_computed")
    assert rows_by_input(node) is None
