"""Depth order for layer-sequential calibration: waves of layers that do not depend on each other.

SparseGPT and OBC take each layer's Gram matrix from the inputs that the *already sparsified* earlier layers
produce, so each layer is fitted to the activations it will really see. A layer's wave is the number of
chosen layers on its longest path from the graph inputs: every layer of wave ``w`` depends only on layers
of waves before ``w``, so one ONNX Runtime run (with their inputs exposed) serves a whole wave, and a plain
chain of N layers takes N runs, a ResNet block's parallel branches one.
"""

from __future__ import annotations

from collections.abc import Sequence

import onnx_graphsurgeon as gs

from onnxprune.sparsity.layers import SparseLayer


def waves(graph: gs.Graph, layers: Sequence[SparseLayer]) -> list[list[SparseLayer]]:
    """``layers`` grouped by depth, shallowest wave first, each wave in graph order.

    The graph's nodes are walked in their stored (topological) order. A tensor read only inside an If or
    Loop body is not among its node's inputs: a layer behind one may then land a wave early, which only
    means its Gram is taken before that upstream layer is sparsified.
    """
    chosen = {id(layer.node): layer for layer in layers}
    depth: dict[str, int] = {}
    found: dict[int, list[SparseLayer]] = {}
    for node in graph.nodes:
        level = max((depth.get(tensor.name, 0) for tensor in node.inputs), default=0)
        layer = chosen.get(id(node))
        if layer is not None:
            found.setdefault(level, []).append(layer)
        for tensor in node.outputs:
            depth[tensor.name] = level + (layer is not None)
    missing = len(layers) - sum(len(wave) for wave in found.values())
    if missing:
        raise AssertionError(f"{missing} chosen layer(s) are not nodes of the graph")
    return [found[level] for level in sorted(found)]
