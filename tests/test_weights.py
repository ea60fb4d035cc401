"""The seeded test weights make every real topology input-sensitive: an exactness check on outputs that
barely depend on the input would prove little (issue 11)."""

from __future__ import annotations

import numpy as np
import pytest
import tiny
import weights

from onnxprune.inputs import contrast_feed, make_inputs
from onnxprune.runtime import ort_session
from onnxprune.verify import MIN_SENSITIVITY


def sensitivity(model) -> float:
    """The least relative change of any output between two seeded random inputs (not the calibration's)."""
    session = ort_session(model)
    names = [o.name for o in session.get_outputs()]
    feed = make_inputs(model, seed=11)[0]
    first, second = session.run(names, feed), session.run(names, contrast_feed([feed], seed=12))
    return min(float(np.max(np.abs(a - b)) / np.max(np.abs(a))) for a, b in zip(first, second, strict=True))


def test_calibration_sets_each_bn_to_its_input_statistics() -> None:
    """After calibration the first BN sees, on the calibration image, inputs of mean `mean` and var `var`."""
    from onnx import numpy_helper

    from onnxprune.runtime import run_model

    model = tiny.chain(dead=0.0)
    stats = weights.bn_statistics(model, seed=0)
    bn = next(n for n in model.graph.node if n.op_type == "BatchNormalization")
    assert set(stats) >= {bn.input[3], bn.input[4]}
    probe = weights._training_mode_copy(model)[0]  # the Conv output feeding the BN, exposed
    del probe.graph.output[:]
    probe.graph.output.extend([__import__("onnx").helper.make_empty_tensor_value_info(bn.input[0])])
    conv_out = run_model(probe, make_inputs(model, seed=0)[0])[bn.input[0]]
    np.testing.assert_allclose(stats[bn.input[3]], conv_out.mean(axis=(0, 2, 3)), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(stats[bn.input[4]], conv_out.var(axis=(0, 2, 3)), rtol=1e-3, atol=1e-5)
    calibrated = weights.calibrate_bn(model, seed=0)
    mean = next(t for t in calibrated.graph.initializer if t.name == bn.input[3])
    np.testing.assert_array_equal(numpy_helper.to_array(mean), stats[bn.input[3]].astype(np.float32))


@pytest.mark.slow
@pytest.mark.parametrize("name", weights.topologies())
def test_every_topology_is_input_sensitive(name: str) -> None:
    assert sensitivity(weights.load(name)) >= MIN_SENSITIVITY
    assert sensitivity(weights.load(name, dead=0.3)) >= MIN_SENSITIVITY
