"""sparsity counts with the one counter: dynamic dims are the fed defaults (224), never 1."""

from __future__ import annotations

from onnxprune.sparsity import SparsifyOptions, survey
from tests import tiny


def test_a_dynamic_image_size_counts_at_the_default_shape():
    net = tiny.Net(0)
    x = net.cbr("input", 3, 16)
    model = net.model([net.head(x, 16)], shape=(1, 3, "h", "w"))
    layers, total = survey(model, SparsifyOptions(min_channels=1))
    conv = next(layer for layer in layers if layer.node.op == "Conv")
    gemm = next(layer for layer in layers if layer.node.op == "Gemm")
    assert conv.macs == 16 * 3 * 9 * 224 * 224  # padded 3x3: 224x224 outputs
    assert gemm.macs == 16 * 10
    assert total == conv.macs + gemm.macs
    assert conv.to_dict(total)["macs_share"] == conv.macs / total
