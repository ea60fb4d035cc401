"""What grouped convolutions (Conv and ConvTranspose with 1 < group < channels) share.

Conv group k reads input chunk k and writes output chunk k. Every group must keep as many input channels as
the others, and as many output channels, so both sides are cut into ``group`` chunks that are tied (the plan
gives tied groups equal counts). After pruning, each group's block of the weight keeps its own chunk's
channels on the axis that holds one chunk per group.
"""

from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from onnxprune.channels.analysis import Analysis
from onnxprune.channels.span import ChannelMap, channel_count, slice_map


def tie_groups(node: gs.Node, ctx: Analysis, in_map: ChannelMap, group: int, c_out: int) -> ChannelMap:
    """Cut the input into ``group`` tied chunks; return the output's map: ``group`` new tied chunks."""
    c_in = channel_count(in_map)
    a = c_in // group
    ctx.cut(in_map, range(0, c_in + 1, a))
    ctx.tie([slice_map(in_map, k * a, (k + 1) * a) for k in range(group)], node.name)
    chunks = [ctx.new_group(c_out // group) for _ in range(group)]
    ctx.tie(chunks, node.name)
    return tuple(span for chunk in chunks for span in chunk)


def grouped_columns(weight: np.ndarray, keep: np.ndarray, group: int, chunk: int) -> np.ndarray:
    """Rows come in ``group`` blocks; axis 1 holds one chunk of ``chunk`` channels per block. Keep, per
    block, the columns of the positions ``keep`` keeps inside that block's chunk."""
    rows = weight.shape[0] // group
    blocks = []
    for k in range(group):
        local = keep[(keep >= k * chunk) & (keep < (k + 1) * chunk)] - k * chunk
        blocks.append(weight[k * rows : (k + 1) * rows][:, local])
    if len({block.shape[1] for block in blocks}) != 1:
        raise AssertionError("grouped convolution chunks kept different counts; the plan broke a tie")
    return np.concatenate(blocks, axis=0)
