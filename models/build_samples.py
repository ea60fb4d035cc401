#!/usr/bin/env python3
"""Build the bundled sample models with onnx.helper only (no PyTorch).

usage: python models/build_samples.py OUT_DIR

- ``resnet_slim.onnx``: a small ResNet (stem, three stages of two basic blocks with projection shortcuts,
  global pooling, Flatten, Gemm) whose BN gammas look like Network Slimming's after sparsity training: about
  60% of every BN's |gamma| is near zero (|N(0, 0.01)|), the rest spread around 0.5 to 1.5. Input 1x3x64x64.
- ``resnet_slim_dead.onnx``: the same network where the near-zero gammas (and their betas) are exactly 0,
  so pruning them with ``--threshold 0`` must leave the outputs unchanged.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


class Builder:
    """Appends nodes and initializers; names follow PyTorch's exporter style (/layer1/conv1/Conv)."""

    def __init__(self, seed: int, dead: bool) -> None:
        self.rng = np.random.default_rng(seed)
        self.dead = dead
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []

    def param(self, name: str, values: np.ndarray) -> str:
        self.inits.append(numpy_helper.from_array(values.astype(np.float32), name))
        return name

    def conv_bn(
        self, x: str, scope: str, c_in: int, c_out: int, k: int, stride: int, relu: bool = True
    ) -> str:
        fan_in = c_in * k * k
        w = self.param(f"{scope}.conv.weight", self.rng.normal(0, np.sqrt(2 / fan_in), (c_out, c_in, k, k)))
        pads = [k // 2] * 4
        conv_out = f"{scope}/conv/Conv_output_0"
        attrs = {"kernel_shape": [k, k], "strides": [stride, stride], "pads": pads}
        self.nodes.append(helper.make_node("Conv", [x, w], [conv_out], name=f"{scope}/conv/Conv", **attrs))
        gamma, beta = self.slim_gamma(c_out)
        names = [
            self.param(f"{scope}.bn.weight", gamma),
            self.param(f"{scope}.bn.bias", beta),
            self.param(f"{scope}.bn.running_mean", self.rng.normal(0, 0.1, c_out)),
            self.param(f"{scope}.bn.running_var", self.rng.uniform(0.5, 2.0, c_out)),
        ]
        bn_out = f"{scope}/bn/BatchNormalization_output_0"
        bn_name = f"{scope}/bn/BatchNormalization"
        self.nodes.append(helper.make_node("BatchNormalization", [conv_out, *names], [bn_out], name=bn_name))
        if not relu:
            return bn_out
        return self.relu(bn_out, f"{scope}/relu/Relu")

    def slim_gamma(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        """|gamma| after L1 sparsity training: most near 0, some large; beta small."""
        sparse = self.rng.random(n) < 0.6
        gamma = np.where(sparse, np.abs(self.rng.normal(0, 0.01, n)), self.rng.uniform(0.5, 1.5, n))
        beta = self.rng.normal(0, 0.05, n)
        if self.dead:
            gamma, beta = np.where(sparse, 0.0, gamma), np.where(sparse, 0.0, beta)
        return gamma, beta

    def relu(self, x: str, name: str) -> str:
        out = f"{name}_output_0"
        self.nodes.append(helper.make_node("Relu", [x], [out], name=name))
        return out

    def basic_block(self, x: str, scope: str, c_in: int, c_out: int, stride: int) -> str:
        h = self.conv_bn(x, f"{scope}/conv1", c_in, c_out, 3, stride)
        h = self.conv_bn(h, f"{scope}/conv2", c_out, c_out, 3, 1, relu=False)
        short = (
            x
            if stride == 1 and c_in == c_out
            else self.conv_bn(x, f"{scope}/downsample", c_in, c_out, 1, stride, relu=False)
        )
        out = f"{scope}/Add_output_0"
        self.nodes.append(helper.make_node("Add", [h, short], [out], name=f"{scope}/Add"))
        return self.relu(out, f"{scope}/relu/Relu")


def resnet_slim(seed: int = 0, dead: bool = False, classes: int = 10) -> onnx.ModelProto:
    b = Builder(seed, dead)
    x = b.conv_bn("input", "/stem", 3, 32, 3, 1)
    c_in = 32
    for stage, (width, stride) in enumerate([(32, 1), (64, 2), (128, 2)], start=1):
        for block in range(2):
            x = b.basic_block(x, f"/layer{stage}/{block}", c_in, width, stride if block == 0 else 1)
            c_in = width
    b.nodes.append(
        helper.make_node("GlobalAveragePool", [x], ["/pool_output_0"], name="/avgpool/GlobalAveragePool")
    )
    b.nodes.append(
        helper.make_node("Flatten", ["/pool_output_0"], ["/flatten_output_0"], name="/Flatten", axis=1)
    )
    w = b.param("fc.weight", b.rng.normal(0, np.sqrt(1 / c_in), (classes, c_in)))
    bias = b.param("fc.bias", np.zeros(classes))
    b.nodes.append(
        helper.make_node("Gemm", ["/flatten_output_0", w, bias], ["logits"], name="/fc/Gemm", transB=1)
    )
    graph = helper.make_graph(
        b.nodes,
        "resnet_slim",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, 64, 64])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, classes])],
        b.inits,
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="onnxprune-samples"
    )
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    return model


def main() -> None:
    out = Path(sys.argv[1] if len(sys.argv) > 1 else "out")
    out.mkdir(parents=True, exist_ok=True)
    onnx.save(resnet_slim(), out / "resnet_slim.onnx")
    onnx.save(resnet_slim(dead=True), out / "resnet_slim_dead.onnx")
    print(f"wrote {out / 'resnet_slim.onnx'} and {out / 'resnet_slim_dead.onnx'}")


if __name__ == "__main__":
    main()
