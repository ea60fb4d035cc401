"""Rewrite: the context every rule's ``apply`` works through while a plan is applied.

Parameters are replaced copy-on-write: a tensor shared by several nodes (a tied initializer) is never sliced
in place for one of them, so no consumer ever sees a half-sliced parameter. Identical slices of one shared
tensor stay shared. The driver that walks the nodes is ``onnxprune.rewrite.apply_plan``; this context knows
nothing of rules, so rules may import it.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import onnx_graphsurgeon as gs

from onnxprune.channels.analysis import Analysis
from onnxprune.channels.plan import Plan
from onnxprune.channels.rebuild import Rebuilt
from onnxprune.names import FreshNames


class Rewrite:
    """What a rule's ``apply`` may read (kept positions, removed values) and do (replace parameters, add
    nodes) while ``plan`` is applied to ``graph``."""

    def __init__(
        self, graph: gs.Graph, analysis: Analysis, plan: Plan, rebuilt: Mapping[str, Rebuilt] | None = None
    ) -> None:
        self.graph = graph
        self.analysis = analysis
        self.plan = plan
        self.rebuilt = rebuilt or {}
        self._sliced: dict[tuple[str, tuple[int, ...], str], list[gs.Constant]] = {}  # by name, shape, dtype
        self._sliced_names: set[str] = set()  # the names in those keys
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

    def axis(self, tensor: gs.Tensor) -> int:
        """The axis a tracked tensor's channels are on (1 unless a Transpose moved them)."""
        return self.analysis.states[tensor.name].axis

    def tracked(self, tensor: gs.Tensor) -> bool:
        """Whether the analysis followed this tensor's channels."""
        return tensor.name in self.analysis.states

    def kept(self, tensor: gs.Tensor) -> np.ndarray | None:
        """Kept positions of the tensor's channel axis, or None if it loses nothing."""
        state = self.analysis.states.get(tensor.name)
        if state is None:
            return None
        keep = self.analysis.kept_positions(state.map, self.plan)
        return None if len(keep) == len(state.removed_value) else keep

    def removed_values(self, tensor: gs.Tensor) -> tuple[np.ndarray, np.ndarray]:
        """(positions, values) of the removed channels of a tensor: what a consumer must fold."""
        found = self.rebuilt.get(tensor.name)
        if found is not None:
            return found.removed, found.constant
        gone = self.analysis.removed_positions(tensor.name, self.plan)
        return gone, self.analysis.states[tensor.name].removed_value[gone]

    def rebuild(self, tensor: gs.Tensor) -> tuple[np.ndarray, np.ndarray] | None:
        """(removed positions, linear: removed x kept) where the removed channels of ``tensor`` are rebuilt
        from the kept ones (a consumer adds their columns, mapped, to its kept weights); None where they
        carry constants only."""
        found = self.rebuilt.get(tensor.name)
        if found is None or found.linear is None:
            return None
        return found.removed, found.linear

    def set_param(self, node: gs.Node, index: int, values: np.ndarray) -> None:
        """Give one node a new value for one parameter input without touching other users of it."""
        old = node.inputs[index]
        # No copy beyond the slice itself: astype reads the array in place (a large model's weights would
        # otherwise be copied three more times).
        values = np.ascontiguousarray(
            values.astype(old.dtype if isinstance(old, gs.Constant) else values.dtype, copy=False)
        )
        node.inputs[index] = self._same_slice(old, values) or self._new_slice(node, old, values)

    def _same_slice(self, old: gs.Tensor, values: np.ndarray) -> gs.Constant | None:
        """The constant made earlier from ``old`` with these very values (users of a shared weight that
        lose the same channels share its slice). Compared only among slices of one name, shape and dtype:
        almost every weight is sliced once, so nothing is compared (hashing every slice costs a pass over
        every weight)."""
        candidates = self._sliced.get((old.name, values.shape, values.dtype.str), [])
        return next((c for c in candidates if np.array_equal(c.values, values)), None)

    def _new_slice(self, node: gs.Node, old: gs.Tensor, values: np.ndarray) -> gs.Constant:
        key = (old.name, values.shape, values.dtype.str)
        shared = isinstance(old, gs.Variable | gs.Constant) and any(n is not node for n in old.outputs)
        name = old.name if not shared and old.name not in self._sliced_names else self.fresh_name(old.name)
        sliced = gs.Constant(name, values)
        self._sliced.setdefault(key, []).append(sliced)
        self._sliced_names.add(old.name)
        if name == old.name:
            old.name = self.fresh_name(old.name + "_orig")
        return sliced

    def add_param(self, node: gs.Node, name_hint: str, values: np.ndarray) -> None:
        """Append a new parameter input to one node (a bias it did not have)."""
        node.inputs.append(gs.Constant(self.fresh_name(name_hint), np.ascontiguousarray(values)))

    def add_node(self, node: gs.Node) -> None:
        """Insert a new node (cleanup and toposort after the rewrite put it in place)."""
        self.graph.nodes.append(node)

    def fresh_name(self, hint: str) -> str:
        return self._names.make(hint)
