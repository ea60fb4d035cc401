"""Rewrite: the context every rule's ``apply`` works through while a plan is applied.

Parameters are replaced copy-on-write: a tensor shared by several nodes (a tied initializer) is never sliced
in place for one of them, so no consumer ever sees a half-sliced parameter. Identical slices of one shared
tensor stay shared. The driver that walks the nodes is ``onnxprune.rewrite.apply_plan``; this context knows
nothing of rules, so rules may import it.
"""

from __future__ import annotations

import hashlib

import numpy as np
import onnx_graphsurgeon as gs

from onnxprune.channels.analysis import Analysis
from onnxprune.names import FreshNames


class Rewrite:
    """What a rule's ``apply`` may read (kept positions, removed values) and do (replace parameters, add
    nodes) while the plan held by the analysis' groups is applied to ``graph``."""

    def __init__(self, graph: gs.Graph, analysis: Analysis) -> None:
        self.graph = graph
        self.analysis = analysis
        self._sliced: dict[tuple[str, str], gs.Constant] = {}
        self._sliced_names: set[str] = set()  # the first halves of those keys
        # One pool for tensors and nodes: a node added to a model pruned before must not take the name of
        # one that an earlier rewrite added.
        used = [t.name for t in graph.tensors().values()] + [n.name for n in graph.nodes if n.name]
        self._names = FreshNames(used)

    @property
    def opset(self) -> int:
        return int(self.graph.opset)

    def width(self, tensor: gs.Tensor) -> int:
        """Positions of the tensor's channel axis before pruning."""
        return len(self.analysis.states[tensor.name].removed_value)

    def tracked(self, tensor: gs.Tensor) -> bool:
        """Whether the analysis followed this tensor's channels."""
        return tensor.name in self.analysis.states

    def kept(self, tensor: gs.Tensor) -> np.ndarray | None:
        """Kept positions of the tensor's channel axis, or None if it loses nothing."""
        state = self.analysis.states.get(tensor.name)
        if state is None:
            return None
        keep = self.analysis.kept_positions(state.map)
        return None if len(keep) == len(state.removed_value) else keep

    def removed_values(self, tensor: gs.Tensor) -> tuple[np.ndarray, np.ndarray]:
        """(positions, values) of the removed channels of a tensor: what a consumer must fold."""
        state = self.analysis.states[tensor.name]
        keep = self.analysis.kept_positions(state.map)
        gone = np.setdiff1d(np.arange(len(state.removed_value)), keep)
        return gone, state.removed_value[gone]

    def set_param(self, node: gs.Node, index: int, values: np.ndarray) -> None:
        """Give one node a new value for one parameter input without touching other users of it."""
        old = node.inputs[index]
        # No copy beyond the slice itself: astype and the hash read the array in place (ResNet-50's weights
        # would otherwise be copied three more times).
        values = np.ascontiguousarray(
            values.astype(old.dtype if isinstance(old, gs.Constant) else values.dtype, copy=False)
        )
        digest = hashlib.sha1(values.reshape(-1).view(np.uint8).data)
        digest.update(str(values.shape).encode())
        key = (old.name, digest.hexdigest())
        if key not in self._sliced:
            users = (
                [n for n in old.outputs if n is not node]
                if isinstance(old, gs.Variable | gs.Constant)
                else []
            )
            name = old.name if not users and old.name not in self._sliced_names else self.fresh_name(old.name)
            self._sliced[key] = gs.Constant(name, values)
            self._sliced_names.add(old.name)
            if name == old.name:
                old.name = self.fresh_name(old.name + "_orig")
        node.inputs[index] = self._sliced[key]

    def add_param(self, node: gs.Node, name_hint: str, values: np.ndarray) -> None:
        """Append a new parameter input to one node (a bias it did not have)."""
        node.inputs.append(gs.Constant(self.fresh_name(name_hint), np.ascontiguousarray(values)))

    def add_node(self, node: gs.Node) -> None:
        """Insert a new node (cleanup and toposort after the rewrite put it in place)."""
        self.graph.nodes.append(node)

    def fresh_name(self, hint: str) -> str:
        return self._names.make(hint)
