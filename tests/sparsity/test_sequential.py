"""Layer-sequential calibration: waves in depth order, and each layer's Grams from the model as
sparsified so far (its held-out output error is measured on the inputs the final model gives it)."""

from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs
import pytest
import sparse_models

from onnxprune import graph as graphs
from onnxprune.sparsity import SparsifyOptions, sparsify_model, survey
from onnxprune.sparsity.gram import LayerGrams, paired_grams
from onnxprune.sparsity.sparsegpt import aimed_at_original, output_error
from onnxprune.sparsity.waves import waves
from onnxprune.sparsity.weights import resolve


def _waves(model) -> list[list[str]]:
    graph = gs.import_onnx(graphs.infer_shapes(model))
    layers = [layer for layer in survey(model, SparsifyOptions(min_channels=16))[0] if layer.eligible]
    by_name = {node.name: node for node in graph.nodes}
    for layer in layers:  # the survey's nodes belong to its own import: map them onto this graph
        layer.node = by_name[layer.name]
    return [[layer.name for layer in wave] for wave in waves(graph, layers)]


def test_parallel_layers_share_a_wave_and_a_chain_takes_one_each() -> None:
    assert _waves(sparse_models.branches()) == [["/p/Conv", "/q/Conv"], ["/r/Conv"], ["/s/Conv"]]
    # The depthwise and C=24 Convs are not chosen: they do not add a wave of their own.
    assert _waves(sparse_models.routes()) == [[name] for name in sparse_models.ELIGIBLE]


def _weights(model) -> dict[str, np.ndarray]:
    graph = gs.import_onnx(model)
    return {node.name: resolve(node).values() for node in graph.nodes if node.op == "Conv"}


@pytest.mark.parametrize("sequential", [True, False])
def test_each_layer_is_measured_on_the_inputs_it_sees(sequential: bool) -> None:
    """Sequential: a layer's held-out error is measured on the inputs of the final (all 2:4) model, against
    its output in the original; one pass: on the original's inputs. Recomputed here from the activations."""
    model, samples = sparse_models.branches(), sparse_models.correlated_samples(64)
    options = SparsifyOptions(min_channels=16, calib=samples, batch=16, sequential=sequential)
    result = sparsify_model(model, options)
    held = {"input": samples["input"][-16:]}
    source = result.model if sequential else model
    layers = _layers(source)
    on_held = paired_grams(source, layers, [held], model if sequential else None)
    before, after = _weights(model), _weights(result.model)
    rows = {row["node"]: row for row in result.report["layers"]}
    for layer in layers:
        assert layer.layout is not None
        old, new = (layer.layout.to_rows(w[layer.name]).astype(np.float64) for w in (before, after))
        found = on_held[layer.name]
        want = output_error(old, new, found.ss, found.cross, found.oo)
        assert rows[layer.name]["output_error"] == pytest.approx(want, rel=1e-4), layer.name
    assert result.report["grams"].startswith("sequential" if sequential else "one pass")
    assert result.report["options"]["sequential"] is sequential


def _layers(model) -> list:
    graph = gs.import_onnx(graphs.infer_shapes(model))
    layers = [layer for layer in survey(model, SparsifyOptions(min_channels=16))[0] if layer.eligible]
    by_name = {node.name: node for node in graph.nodes}
    for layer in layers:
        layer.node = by_name[layer.name]
    return layers


def test_later_layers_absorb_the_earlier_layers_error() -> None:
    """Against the original's output of the last layer, on held-out inputs through the sparsified model:
    aiming at the original (sequential) beats fitting each layer to its own dense output (one pass)."""
    model, samples = sparse_models.branches(), sparse_models.correlated_samples(96)
    errors = {}
    for sequential in (True, False):
        options = SparsifyOptions(min_channels=16, calib=samples, batch=16, sequential=sequential)
        result = sparsify_model(model, options)
        found = paired_grams(result.model, _layers(result.model), [{"input": samples["input"][-24:]}], model)
        old = _layers(model)[-1]
        assert old.layout is not None and old.name == "/s/Conv"
        rows = [
            old.layout.to_rows(w["/s/Conv"]).astype(np.float64)
            for w in (_weights(model), _weights(result.model))
        ]
        grams = found["/s/Conv"]
        errors[sequential] = output_error(*rows, grams.ss, grams.cross, grams.oo)
    assert errors[True] < errors[False], errors


def test_aimed_weight_is_the_least_squares_map_to_the_original_output() -> None:
    rng = np.random.default_rng(0)
    x_o = rng.normal(size=(400, 8))
    x = x_o + 0.1 * rng.normal(size=(400, 8))  # the inputs, changed by earlier layers
    w = rng.normal(size=(3, 8))
    grams = LayerGrams(x.T @ x, x.T @ x_o, x_o.T @ x_o)
    aimed = aimed_at_original(w, grams, damp=0.0)
    want = np.linalg.lstsq(x, x_o @ w.T, rcond=None)[0].T
    np.testing.assert_allclose(aimed, want, rtol=1e-8, atol=1e-10)
    # The error formula from Grams is the error of the products themselves.
    direct = np.sum((x_o @ w.T - x @ aimed.T) ** 2) / np.sum((x_o @ w.T) ** 2)
    assert output_error(w, aimed, grams.ss, grams.cross, grams.oo) == pytest.approx(direct, rel=1e-8)
    assert output_error(w, aimed, grams.ss, grams.cross, grams.oo) < output_error(
        w, w, grams.ss, grams.cross, grams.oo
    )
    np.testing.assert_array_equal(aimed_at_original(w, LayerGrams(grams.ss)), w)


def test_sequential_and_one_pass_agree_on_the_first_wave_and_differ_after() -> None:
    model, samples = sparse_models.branches(), sparse_models.correlated_samples(64)
    results = {
        seq: sparsify_model(model, SparsifyOptions(min_channels=16, calib=samples, batch=16, sequential=seq))
        for seq in (True, False)
    }
    a, b = (_weights(results[seq].model) for seq in (True, False))
    for name in ("/p/Conv", "/q/Conv"):  # the first wave sees the original's inputs either way
        np.testing.assert_array_equal(a[name], b[name])
    for name in ("/r/Conv", "/s/Conv"):
        assert not np.allclose(a[name], b[name]), name


def test_magnitude_selection_takes_one_pass() -> None:
    samples = sparse_models.correlated_samples(32)
    options = SparsifyOptions(min_channels=16, calib=samples, batch=16, selection="magnitude")
    assert sparsify_model(sparse_models.branches(), options).report["grams"].startswith("one pass")
    assert sparsify_model(sparse_models.branches(), SparsifyOptions(min_channels=16)).report["grams"] is None
