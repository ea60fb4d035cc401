"""refit.py through calibrate(): exact reconstruction where it exists, grouped Convs, Gemm, im2col."""

from __future__ import annotations

import numpy as np
from onnx import numpy_helper

from onnxprune.compensate.calibrate import CalibOptions, calibrate
from onnxprune.compensate.layers import Layer
from onnxprune.compensate.refit import conv_patches

from ._models import conv, model, run, samples


def _linear_pair(seed: int = 0):
    """x -> A (4 -> 8, 1x1) -> t -> B (8 -> 5, 3x3, bias) -> y, where t's channels 4..7 are linear
    combinations of channels 0..3 (A's filters are). Pruned: t keeps 0..3, B keeps its first 4 inputs."""
    rng = np.random.default_rng(seed)
    a_kept = rng.standard_normal((4, 4, 1, 1))
    mix = rng.standard_normal((4, 4))
    a = np.concatenate([a_kept, np.einsum("jc,cdkl->jdkl", mix, a_kept)])
    b = rng.standard_normal((5, 8, 3, 3))
    bias = rng.standard_normal(5)
    nodes = [conv("A", "x", "wa", "t", pad=0), conv("B", "t", "wb", "y", "bb")]
    original = model(nodes, {"wa": a, "wb": b, "bb": bias})
    pruned = model(nodes, {"wa": a[:4], "wb": b[:, :4], "bb": bias})
    return original, pruned, {"t": np.arange(4)}


def test_linear_combinations_are_reconstructed_exactly():
    original, pruned, kept = _linear_pair()
    options = CalibOptions(steps=("refit",), ridge=1e-10, waves=1, positions=8)
    done = calibrate(original, pruned, kept, samples(40), options)
    (record,) = done.report["layers"]
    assert record["applied"] == "refit" and record["rel_mse_before"] > 0.1
    assert record["rel_mse_after"] < 1e-6
    feed = samples(6, seed=1)
    want, got, uncalibrated = (
        run(original, feed)["y"],
        run(done.model, feed)["y"],
        run(_linear_pair()[1], feed)["y"],
    )
    assert np.abs(got - want).max() < 1e-4 * np.abs(want).max()
    assert np.abs(uncalibrated - want).max() > 0.1 * np.abs(want).max()  # the test data is sensitive
    assert done.report["fidelity"]["after"]["y"]["cosine"] > 0.999999


def test_a_near_exact_refit_reports_no_negative_error():
    """The error is a sum of squares from expanded Gram sums: near zero it must not come out below 0."""
    for seed in range(8):
        original, pruned, kept = _linear_pair(seed)
        options = CalibOptions(steps=("refit",), ridge=1e-10, waves=1, positions=8)
        (record,) = calibrate(original, pruned, kept, samples(40, seed=seed), options).report["layers"]
        assert record["applied"] == "refit" and 0.0 <= record["rel_mse_after"] < 1e-6, seed


def test_bias_step_moves_only_the_bias_by_the_mean_residual():
    original, pruned, kept = _linear_pair()
    # Inputs with a mean: what the removed channels carried has one too.
    done = calibrate(original, pruned, kept, samples(40, mean=1.0), CalibOptions(steps=("bias",), waves=1))
    (record,) = done.report["layers"]
    assert record["applied"] == "bias" and record["rel_mse_after"] < record["rel_mse_before"]
    weights = {t.name: numpy_helper.to_array(t) for t in done.model.graph.initializer}
    node = next(n for n in done.model.graph.node if n.name == "B")
    untouched = {t.name: numpy_helper.to_array(t) for t in _linear_pair()[1].graph.initializer}
    np.testing.assert_allclose(weights[node.input[1]], untouched["wb"])
    feed = samples(64, seed=2, mean=1.0)
    residual = (run(original, feed)["y"] - run(done.model, feed)["y"]).mean(axis=(0, 2, 3))
    before = (run(original, feed)["y"] - run(_linear_pair()[1], feed)["y"]).mean(axis=(0, 2, 3))
    assert np.abs(residual).max() < 0.25 * np.abs(before).max()


def test_depthwise_consumer_solves_per_channel():
    """x -> A (4 -> 8) -> t -> D (depthwise 8) -> u -> E (8 -> 3) -> y; t and u lose 4..7 (one tied group):
    each kept depthwise filter sees its own unchanged channel, so its refit is exact; E is refitted too."""
    rng = np.random.default_rng(3)
    a, d, e = (
        rng.standard_normal((8, 4, 1, 1)),
        rng.standard_normal((8, 1, 3, 3)),
        rng.standard_normal((3, 8, 1, 1)),
    )

    def nodes(group):
        return [
            conv("A", "x", "wa", "t", pad=0),
            conv("D", "t", "wd", "u", group=group),
            conv("E", "u", "we", "y", pad=0),
        ]

    original = model(nodes(8), {"wa": a, "wd": d, "we": e})
    pruned = model(nodes(4), {"wa": a[:4], "wd": d[:4], "we": e[:, :4]})
    kept = {"t": np.arange(4), "u": np.arange(4)}
    done = calibrate(
        original, pruned, kept, samples(30), CalibOptions(steps=("refit",), ridge=1e-10, waves=2)
    )
    records = {r["node"]: r for r in done.report["layers"]}
    assert records["D"]["rows"] > 0 and records["D"]["rel_mse_after"] < 1e-6
    assert records["E"]["rel_mse_after"] <= records["E"]["rel_mse_before"]


def test_im2col_matches_a_direct_convolution():
    rng = np.random.default_rng(4)
    x = rng.standard_normal((2, 3, 7, 5))
    w = rng.standard_normal((2, 3, 3, 2))
    layer = Layer("c", "Conv", "x", "y", "y", None, w, None, 1, (3, 2), (2, 1), (1, 2), (1, 0, 2, 1))
    out_h, out_w = (7 + 3 - 2 * 1 - 1) // 2 + 1, (5 + 1 - 2 - 1) // 1 + 1
    positions = np.array([[0, out_h * out_w - 1, 3], [1, 2, out_w]])
    cols = conv_patches(x, positions, layer)
    padded = np.pad(x, ((0, 0), (0, 0), (1, 2), (0, 1)))
    for b in range(2):
        for p, flat in enumerate(positions[b]):
            oy, ox = divmod(int(flat), out_w)
            patch = padded[b, :, oy * 2 : oy * 2 + 3 : 1, ox : ox + 3 : 2]
            np.testing.assert_allclose(cols[b * 3 + p], patch.reshape(-1))


def test_targets_are_gathered_at_their_positions_and_kept_channels():
    from onnxprune.compensate.refit import gather_target

    rng = np.random.default_rng(5)
    y = rng.standard_normal((3, 6, 4, 5))
    layer = Layer("c", "Conv", "x", "y", "y", np.array([0, 2, 5]), np.zeros((3, 6, 1, 1)), None)
    positions = np.array([[0, 19, 7], [3, 3, 11], [18, 1, 2]])
    got = gather_target(layer, y, positions)
    for b in range(3):
        for p, flat in enumerate(positions[b]):
            oy, ox = divmod(int(flat), 5)
            np.testing.assert_array_equal(got[b, p], y[b, [0, 2, 5], oy, ox])


def test_too_few_rows_for_the_unknowns_declines_the_refit_for_the_bias_step():
    """Pruned B has 4*9 + 1 unknowns per output; one position of 9 fitted samples is 9 rows: a refit would
    interpolate them, so the bias moves instead."""
    original, pruned, kept = _linear_pair()
    done = calibrate(original, pruned, kept, samples(10, mean=1.0), CalibOptions(positions=1, waves=1))
    (record,) = done.report["layers"]
    assert record["rows"] == 9 and "unknowns" in record["refit_declined"]
    assert record["applied"] == "bias" and record["rel_mse_after"] < record["rel_mse_before"]


def test_convs_behind_factored_bias_maps_are_refitted():
    """A padded Conv's bias map stored as factors (two MatMuls of constants, rules/padmap.py) is still the
    Conv's offset: the refit matches its output, not declined for a channel-count mismatch."""
    from pathlib import Path

    import onnx

    from onnxprune import api

    mnist = Path(__file__).parents[2] / "models" / "mnist"
    model = onnx.load(str(mnist / "mnist_vgg.plain.onnx"))
    calib = api.CalibRequest(mnist / "mnist5k_calib.npz", limit=96)
    result = api.prune_model(model, api.PlanOptions(ratio=0.5, compensate="calib"), None, calib)
    assert any("bias_map_rows" in n.name for n in result.pruned.graph.node), "no factored map to test"
    convs = [la for la in result.report["calibration"]["layers"] if la["op"] == "Conv"]
    assert convs and all(la["applied"] == "refit" for la in convs), convs
