"""bnstats.py: running statistics re-estimated in one training-mode pass, checked against numpy."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

from onnxprune.compensate import bnstats

from ._models import conv, model, samples

EPS = 1e-5


def _chain(seed: int = 0) -> tuple[onnx.ModelProto, dict[str, np.ndarray]]:
    """x -> A (1x1) -> t -> BN1 -> Relu -> B (1x1) -> u -> BN2 -> y, with stale running statistics."""
    rng = np.random.default_rng(seed)
    p = {
        "wa": rng.standard_normal((6, 4, 1, 1)),
        "wb": rng.standard_normal((5, 6, 1, 1)),
        "g1": rng.uniform(0.5, 2, 6), "b1": rng.standard_normal(6), "m1": np.zeros(6), "v1": np.ones(6),
        "g2": rng.uniform(0.5, 2, 5), "b2": rng.standard_normal(5), "m2": np.zeros(5), "v2": np.ones(5),
    }  # fmt: skip
    nodes = [
        conv("A", "x", "wa", "t", pad=0),
        helper.make_node(
            "BatchNormalization", ["t", "g1", "b1", "m1", "v1"], ["n1"], name="BN1", epsilon=EPS
        ),
        helper.make_node("Relu", ["n1"], ["r"], name="R"),
        conv("B", "r", "wb", "u", pad=0),
        helper.make_node("BatchNormalization", ["u", "g2", "b2", "m2", "v2"], ["y"], name="BN2", epsilon=EPS),
    ]
    return model(nodes, p), p


def _stats(m: onnx.ModelProto, node: str) -> tuple[np.ndarray, np.ndarray]:
    inits = {t.name: numpy_helper.to_array(t) for t in m.graph.initializer}
    bn = next(n for n in m.graph.node if n.name == node)
    return inits[bn.input[3]], inits[bn.input[4]]


def test_first_bn_gets_population_statistics_over_several_batches():
    m, p = _chain()
    data = samples(80, mean=0.5)  # 3 batches of bnstats.BATCH = 32: pooled by the law of total variance
    updates = bnstats.reestimate(m, bnstats.targets(m, {"A"}), data, None)
    assert [u.node for u in updates] == ["BN1", "BN2"]
    t = np.einsum("kc,nchw->nkhw", p["wa"][:, :, 0, 0], data["x"].astype(np.float64))
    mean, var = _stats(m, "BN1")
    np.testing.assert_allclose(mean, t.mean(axis=(0, 2, 3)), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(var, t.var(axis=(0, 2, 3)), rtol=1e-4, atol=1e-5)


def test_later_bn_sees_the_earlier_one_renormalised():
    m, p = _chain(1)
    data = samples(20, mean=0.5)  # one batch: numpy can follow training mode exactly
    bnstats.reestimate(m, bnstats.targets(m, {"A"}), data, None)
    t = np.einsum("kc,nchw->nkhw", p["wa"][:, :, 0, 0], data["x"].astype(np.float64))
    mu, sd = t.mean(axis=(0, 2, 3), keepdims=True), np.sqrt(t.var(axis=(0, 2, 3), keepdims=True) + EPS)
    r = np.maximum((t - mu) / sd * p["g1"][None, :, None, None] + p["b1"][None, :, None, None], 0)
    u = np.einsum("kc,nchw->nkhw", p["wb"][:, :, 0, 0], r)
    mean, var = _stats(m, "BN2")
    np.testing.assert_allclose(mean, u.mean(axis=(0, 2, 3)), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(var, u.var(axis=(0, 2, 3)), rtol=1e-4, atol=1e-4)
    # The model still runs in inference mode, now with those statistics.
    assert all(a.name != "training_mode" for n in m.graph.node for a in n.attribute)


def test_only_bns_downstream_of_a_change_are_targets():
    m, _ = _chain()
    assert [n.name for n in bnstats.targets(m, {"B"})] == ["BN2"]
    assert bnstats.targets(m, set()) == []
