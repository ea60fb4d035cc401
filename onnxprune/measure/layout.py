"""The channel widths this machine runs fast, for ``--round-to auto``.

ONNX Runtime's CPU convolutions work in MLAS's NCHWc layout: channels in blocks of 8 floats (AVX2) or 16
(AVX-512), a width that is not a multiple of the block padded up to one, so a layer of 40 channels costs what
one of 48 does on AVX-512. The block is asked of ONNX Runtime itself, not guessed from CPU flags: a Conv of
72 channels is optimised and the weight it is given back shows the padding (72 or 80 filters). What the
block is worth on a pruned model: ``benchmarks/prune_speed.py`` (docs/measured.md). Used for ``--for cpu``.
"""

from __future__ import annotations

import math
import os
import tempfile
import threading

import numpy as np
import onnx
from onnx import helper, numpy_helper

from onnxprune.runtime import quiet_onnxruntime, quiet_options

# Tensor Cores want multiples of 8 (FP16): auto never goes below it, whatever the CPU.
TENSOR_CORES = 8
# 9 x 8: padded to 72, 80, 96 or 128 by blocks of 8, 16, 32 or 64, so its padding names the block.
PROBE_CHANNELS = 72


def auto_round_to() -> int:
    """What ``--round-to auto`` means here: 8, or ONNX Runtime's CPU channel block where that is larger."""
    return math.lcm(TENSOR_CORES, cpu_channel_block())


def auto_reason() -> str:
    """One line for reports: why auto chose its step."""
    block = cpu_channel_block()
    if block <= 1:
        return "auto: 8 for Tensor Cores (ONNX Runtime's CPU convolutions here use no channel blocks)"
    return f"auto: ONNX Runtime's CPU convolutions here use blocks of {block} channels; Tensor Cores want 8"


_asked: list[int] = []  # the answer, once asked
_asking = threading.Lock()


def cpu_channel_block() -> int:
    """The channel block of ONNX Runtime's CPU Conv on this machine (1 where it uses no NCHWc layout or ONNX
    Runtime is not installed), asked once per process."""
    with _asking:
        if not _asked:
            _asked.append(_ask_onnxruntime())
        return _asked[0]


def prefetch() -> None:
    """Ask in a thread (ONNX Runtime builds the session without the GIL) while the model is read."""
    if not _asked:
        threading.Thread(target=cpu_channel_block, name="onnxprune-channel-block", daemon=True).start()


def _ask_onnxruntime() -> int:
    try:
        ort = quiet_onnxruntime()
    except ImportError:
        return 1
    try:
        with tempfile.TemporaryDirectory() as folder:
            options = quiet_options(ort)  # not the warning that the saved graph is machine-specific
            options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
            options.optimized_model_filepath = os.path.join(folder, "optimized.onnx")
            ort.InferenceSession(_probe().SerializeToString(), options, providers=["CPUExecutionProvider"])
            return _block_of(onnx.load(options.optimized_model_filepath))
    except Exception:  # an ONNX Runtime build that cannot save its graph, no temporary folder: no answer
        return 1  # auto is then 8, what it was before there was a question


def _block_of(optimized: onnx.ModelProto) -> int:
    """The padding of the probe's weight: its output width rounded up to the block, 1 where it stayed NCHW."""
    if not any(node.domain == "com.microsoft.nchwc" for node in optimized.graph.node):
        return 1
    padded = max(init.dims[0] for init in optimized.graph.initializer if len(init.dims) == 4)
    for block in (8, 16, 32, 64):
        if -(-PROBE_CHANNELS // block) * block == padded:
            return block  # unpadded: a block of 8 or one that divides 72 (all the same to auto)
    return 1


def _probe() -> onnx.ModelProto:
    c = PROBE_CHANNELS
    weight = numpy_helper.from_array(np.ones((c, c, 3, 3), np.float32), "w")
    conv = helper.make_node("Conv", ["x", "w"], ["y"], pads=[1, 1, 1, 1])
    graph = helper.make_graph(
        [conv],
        "channel_block_probe",
        [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, c, 4, 4])],
        [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, c, 4, 4])],
        [weight],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
