"""Estimate a plan's MACs and parameters from the analysis, without rewriting the model.

Every counted node (``counter.COUNTED_OPS``) costs its full MACs (from the counter, at the fed shapes) times
the kept fraction of its input width and of its output width (of one of them for a depthwise conv, whose
input and output are the same channels). Parameters follow the same widths: a weight like its node's MACs,
a bias and a BatchNormalization's vectors like their channels, any other per-channel constant like the
tensor it matches; everything else is unchanged. A zero-padded Conv that folds removed non-zero constants
gains a per-position bias map (its separable factors, see rules/padmap.py) whenever the plan removes such a
channel from its input: counted too. Exact for the ops onnxprune slices, so a target search can try
hundreds of plans in the time one rewrite takes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx_graphsurgeon as gs

from onnxprune.channels.analysis import Analysis
from onnxprune.channels.plan import Plan
from onnxprune.channels.span import width
from onnxprune.measure.counter import COUNTED_OPS, Counts
from onnxprune.rules.padmap import bias_map_size


@dataclass(frozen=True)
class _Term:
    size: int
    tensors: tuple[str, ...]  # the channel widths it scales with (their kept fractions multiply)


class Estimator:
    """MACs and params of a plan, as fractions of the original's."""

    def __init__(self, graph: gs.Graph, analysis: Analysis, counts: Counts) -> None:
        self.analysis = analysis
        self.mac_terms: list[_Term] = []
        self.param_terms: dict[str, _Term] = {}
        # (input tensor, output tensor, its channels, kernel taps, output spatial size) of every Conv that
        # may gain a bias map
        self.map_terms: list[tuple[str, str, int, list[int], list[int]]] = []
        nodes = {node.name: node for node in graph.nodes}
        for node in graph.nodes:
            self._add(node, counts)
        for tensor, name, how in analysis.consumers:
            if how == "bias map" and name in nodes:
                self._bias_map(tensor, nodes[name])
        self.full_macs = sum(t.size for t in self.mac_terms)
        self.full_params = sum(t.size for t in self.param_terms.values())

    def _add(self, node: gs.Node, counts: Counts) -> None:
        data = node.inputs[0].name if node.inputs else ""
        out = node.outputs[0].name if node.outputs else ""
        if node.op in COUNTED_OPS:
            widths = (out,) if _depthwise(node) else (data, out)
            if out in counts.nodes:
                self.mac_terms.append(_Term(counts.nodes[out], widths))
            for i, tensor in enumerate(node.inputs[1:3], start=1):
                self._param(tensor, widths if i == 1 else (out,))
            return
        for tensor in node.inputs[1:]:
            if node.op == "BatchNormalization":
                self._param(tensor, (data,))
            elif isinstance(tensor, gs.Constant):
                self._param(tensor, self._matching(tensor, data, out))

    def _bias_map(self, tensor: str, node: gs.Node) -> None:
        shape = node.outputs[0].shape if node.outputs else None
        weight = node.inputs[1] if len(node.inputs) > 1 else None
        if shape is None or len(shape) < 3 or not all(isinstance(d, int) for d in shape[2:]):
            return
        if not isinstance(weight, gs.Constant):
            return
        self.map_terms.append(
            (tensor, node.outputs[0].name, int(shape[1]), list(weight.shape[2:]), list(shape[2:]))
        )

    def _maps(self, plan: Plan) -> float:
        """Parameters of the bias maps the plan adds: where a removed input channel carries a constant."""
        total = 0.0
        for tensor, out, channels, taps, out_size in self.map_terms:
            state = self.analysis.states.get(tensor)
            if state is None:
                continue
            gone = np.ones(width(state.map), dtype=bool)
            gone[self.analysis.kept_positions(state.map, plan)] = False
            if np.any(np.nan_to_num(state.removed_value[gone], nan=1.0) != 0):
                out_state = self.analysis.states.get(out)
                if out_state is not None:
                    channels = len(self.analysis.kept_positions(out_state.map, plan))
                total += bias_map_size(channels, taps, out_size)
        return total

    def _matching(self, tensor: gs.Constant, data: str, out: str) -> tuple[str, ...]:
        size = int(np.prod(tensor.shape, dtype=np.int64))
        for name in (data, out):
            state = self.analysis.states.get(name)
            if state is not None and size == width(state.map) and size > 1:
                return (name,)
        return ()

    def _param(self, tensor: gs.Tensor, widths: tuple[str, ...]) -> None:
        if not isinstance(tensor, gs.Constant) or tensor.name in self.param_terms:
            return
        if np.dtype(tensor.dtype).kind != "f" or not tensor.outputs:
            return
        self.param_terms[tensor.name] = _Term(int(np.prod(tensor.shape, dtype=np.int64)), widths)

    def fractions(self, plan: Plan) -> tuple[float, float]:
        """(params, MACs) of ``plan``, each a fraction of the unpruned model's."""
        kept: dict[str, float] = {}
        macs = sum(t.size * self._factor(t, kept, plan) for t in self.mac_terms)
        params = sum(t.size * self._factor(t, kept, plan) for t in self.param_terms.values()) + self._maps(
            plan
        )
        return params / max(self.full_params, 1), macs / max(self.full_macs, 1)

    def group_macs(self) -> dict[int, int]:
        """Group id -> the MACs of the layers whose widths it sets (counted at the fed shapes): each counted
        node's MACs times the fraction of its input or output width the group holds, of either when it
        holds part of both (``1 - (1 - f_in)(1 - f_out)``): what would go if every channel of it went.
        Shares overlap: a Conv between two groups counts in both."""
        total: dict[int, float] = {}
        for term in self.mac_terms:
            held: dict[int, float] = {}  # group -> fraction of this node's MACs it does not reach
            for name in term.tensors:
                state = self.analysis.states.get(name)
                full = width(state.map) if state is not None else 0
                if state is None or not full:
                    continue
                for group, fraction in self._fractions(state.map, full).items():
                    held[group] = held.get(group, 1.0) * (1.0 - fraction)
            for group, untouched in held.items():
                total[group] = total.get(group, 0.0) + term.size * (1.0 - untouched)
        return {group: int(round(macs)) for group, macs in total.items()}

    def _fractions(self, cmap: tuple, full: int) -> dict[int, float]:
        found: dict[int, float] = {}
        for group, span, _ in self.analysis.pieces(cmap):
            found[group.id] = found.get(group.id, 0.0) + span.width / full
        return found

    def _factor(self, term: _Term, kept: dict[str, float], plan: Plan) -> float:
        factor = 1.0
        for name in term.tensors:
            if name not in kept:
                state = self.analysis.states.get(name)
                full = width(state.map) if state is not None else 0
                positions = self.analysis.kept_positions(state.map, plan) if state and full else None
                kept[name] = len(positions) / full if positions is not None else 1.0
            factor *= kept[name]
        return factor


def _depthwise(node: gs.Node) -> bool:
    group = int(node.attrs.get("group", 1))
    weight = node.inputs[1] if len(node.inputs) > 1 else None
    if group == 1 or not isinstance(weight, gs.Constant) or weight.shape is None:
        return False
    # Conv: weight [C_out, 1, k...] with C_out == group; ConvTranspose: weight [C_in, 1, k...], C_in == group.
    return int(weight.shape[1]) == 1 and int(weight.shape[0]) == group
