"""The rule registry, the rule contract, and the base classes rules share.

The contract. A rule is a class registered for one or more op types with ``@rule("Op", ...)`` (a second
registration of an op raises). It has two hooks:

``propagate(node, ctx: Analysis)`` runs during analysis, once per node, in topological order, and says how
channels flow through the op. It reads the state of the node's inputs (``ctx.state(t)``: the channel map,
the value a removed channel carries, whether it is still before the first BatchNormalization) and must
either give each channel-carrying output a state (``ctx.set_state``) or decline (``decline_node``, which
declines the inputs' groups and gives the outputs fixed channels). Along the way it may call:

- ``ctx.new_group(n)``: new channels (a producer's output); ``ctx.produce(out, map, rows, bias)`` marks
  them as born here (removed channels are cut at this tensor; ``rows()`` gives the filters, read only on
  the original-values pass);
- ``ctx.unify(node, maps)``: tie several tensors' channels index by index (residual Add);
  ``ctx.cut(map, bounds)`` and ``ctx.tie(maps, node)`` for grouped convolutions;
- ``ctx.consume(t, node, foldable, how)``: the op reduces over the channel axis; a removed channel's
  constant is folded (``foldable``: into a bias, or ``how="bias map"``) or the channel is kept;
  ``ctx.keep_where`` for other such cases;
- data-free compensation (``ctx.compensating``): ``ctx.cut_value`` gives what a channel cut at a scoring
  BN carries (value and spread), ``set_state(..., spread=)`` carries the spread, ``ctx.approximate(node,
  why, tensor)`` records where an estimate is not exact even for gamma = 0 (the report lists it), which
  only ``ctx.allow_approximate`` permits (not with ``--threshold``);
- ``ctx.member``, ``ctx.add_gamma``, ``ctx.add_filter_norm``, ``ctx.source``: what the
  planner and report need (the group's nodes and producers, scores, MACs, where masking cuts);
- ``ctx.decline(map, reason, node)``: one group cannot be pruned, with the reason;
- ``ctx.opset``, ``ctx.outputs`` (graph output names), ``ctx.original_values`` (True on the second pass,
  which follows the original model's values to find inexact channels; rules that treat a dead channel
  differently there, like BatchNormalization, check it).
A rule never touches the groups themselves: what it records is applied once the walk is over.

``apply(node, rw: Rewrite)`` runs during rewrite and slices the node's parameters and attributes to the kept
channels: ``rw.kept(t)`` (kept positions, None if the tensor loses nothing), ``rw.removed_values(t)`` (what
a consumer must fold), ``rw.width(t)``, ``rw.tracked(t)``, ``rw.opset``; it changes the graph only through
``rw.set_param`` (copy-on-write: shared parameters stay intact for other users), ``rw.add_param``,
``rw.add_node`` and ``rw.fresh_name``. Most ops have nothing to slice.

An op type with no rule (or in another domain, or with a subgraph) gets ``NO_RULE``, which declines every
group that touches it. Rules read parameters with ``const`` (never through graphsurgeon's caches), and
only where they need the values (``const_shape`` for the shape): each read copies the stored bytes.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import onnx
import onnx_graphsurgeon as gs
from onnx import numpy_helper

from onnxprune.channels.analysis import Analysis, TensorState
from onnxprune.channels.edit import Rewrite

RULES: dict[str, Rule] = {}


def rule(*op_types: str) -> Callable[[type[Rule]], type[Rule]]:
    """Register a rule class for one or more ONNX op types (default domain)."""

    def register(cls: type[Rule]) -> type[Rule]:
        instance = cls()
        for op in op_types:
            if op in RULES:
                raise RuntimeError(f"op {op} has two rules: {type(RULES[op]).__name__} and {cls.__name__}")
            RULES[op] = instance
        return cls

    return register


def rule_for(node: gs.Node) -> Rule:
    if node.domain not in (None, "", "ai.onnx") or any(_has_subgraph(v) for v in node.attrs.values()):
        return NO_RULE
    return RULES.get(node.op, NO_RULE)


def _has_subgraph(value: object) -> bool:
    return isinstance(value, gs.Graph)


class Rule:
    """How one op type moves channels (propagate) and follows a plan (apply)."""

    # Follows channels on any axis (a state's ``axis``); the walk declines every other rule's node where a
    # tracked input has its channels elsewhere than on axis 1 (a Transpose to NHWC moved them).
    any_axis = False

    def propagate(self, node: gs.Node, ctx: Analysis) -> None:
        raise NotImplementedError

    def apply(self, node: gs.Node, rw: Rewrite) -> None:
        """Slice this node's parameters to the kept channels; most ops have none."""


class NoRule(Rule):
    """Declines every group the op touches: onnxprune does not know how it moves channels."""

    def propagate(self, node: gs.Node, ctx: Analysis) -> None:
        what = f"{node.domain}::{node.op}" if node.domain not in (None, "", "ai.onnx") else node.op
        subgraphs = [v for v in node.attrs.values() if _has_subgraph(v)]
        if subgraphs:
            what += " with a subgraph"
        decline_node(node, ctx, f"no rule for op {what}")
        for tensor in _outer_reads(subgraphs):
            # A branch may read any tensor of the enclosing graph by name, not only the node's inputs.
            state = ctx.state(tensor)
            if state is not None:
                ctx.decline(state.map, f"read inside the subgraph of {node.op}", node.name)


def _outer_reads(subgraphs: list[gs.Graph]) -> list[gs.Tensor]:
    """Tensors that subgraphs (and theirs, recursively) use without producing them."""
    reads: dict[str, gs.Tensor] = {}
    for graph in subgraphs:
        produced = {t.name for n in graph.nodes for t in n.outputs} | {t.name for t in graph.inputs}
        for node in graph.nodes:
            inner = [v for v in node.attrs.values() if _has_subgraph(v)]
            for tensor in list(node.inputs) + _outer_reads(inner):
                if tensor.name and tensor.name not in produced and not isinstance(tensor, gs.Constant):
                    reads[tensor.name] = tensor
    return list(reads.values())


NO_RULE = NoRule()


class ChannelwiseRule(Rule):
    """An op whose output channel c comes from input channel c alone (activations, pooling, resizing,
    normalisation per channel): the output carries the input's map. A subclass says what a removed channel
    becomes on its way through, or declines."""

    # A removed channel that is still 0 has not met a BatchNormalization yet: the next BN scores it.
    keeps_before_first_bn = True

    def propagate(self, node: gs.Node, ctx: Analysis) -> None:
        state = ctx.state(node.inputs[0])
        if state is None:
            return
        value = self.removed_value(node, ctx, state)
        if value is None:
            return
        spread = None
        if state.spread.any():
            value, spread = self.with_spread(node, state, value)
        ctx.member(state.map, node.name)
        axis = self.out_axis(node, state)
        if self.keeps_before_first_bn:
            carry(node, ctx, state, value, spread, axis)
        else:
            ctx.set_state(node.outputs[0], state.map, value, spread=spread, axis=axis)

    def out_axis(self, node: gs.Node, state: TensorState) -> int:
        """The output's channel axis (a reduction without keepdims drops the axes before it)."""
        return state.axis

    def removed_value(self, node: gs.Node, ctx: Analysis, state: TensorState) -> np.ndarray | None:
        """Per position, what a removed channel carries at the output (nan: not a constant); None once the
        node is declined."""
        raise NotImplementedError

    def with_spread(
        self, node: gs.Node, state: TensorState, value: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """(value, spread) at the output where the input's removed channels carry a spread (data-free
        compensation). By default the op keeps the point value and drops the spread (pools, Resize, Pad)."""
        return value, None


def carry(
    node: gs.Node,
    ctx: Analysis,
    state: TensorState,
    value: np.ndarray,
    spread: np.ndarray | None = None,
    axis: int | None = None,
) -> None:
    """The output carries the input's channels, with ``value`` (and ``spread``) for the removed ones, on
    ``axis`` (default: the input's)."""
    before = state.before_first_bn & (value == 0)
    axis = state.axis if axis is None else axis
    ctx.set_state(node.outputs[0], state.map, value, before, spread, axis=axis)


# ---- helpers shared by rules ---------------------------------------------------------------------
def rank(tensor: gs.Tensor) -> int | None:
    shape = tensor.shape
    return len(shape) if shape is not None else None


def channels(tensor: gs.Tensor) -> int | None:
    """Static size of axis 1 (the channel axis of NCHW tensors), or None."""
    shape = tensor.shape
    if shape is None or len(shape) < 2 or not isinstance(shape[1], int | np.integer) or shape[1] < 0:
        return None
    return int(shape[1])


def const(tensor: gs.Tensor | None) -> np.ndarray | None:
    """A parameter's values, read without keeping them: graphsurgeon caches what ``.values`` loads, which
    would hold a second copy of every weight beside the model's own for the whole pruning."""
    if not isinstance(tensor, gs.Constant):
        return None
    lazy = tensor._values  # graphsurgeon's own field: ``.values`` would load and cache a copy
    if isinstance(lazy, gs.ir.tensor.LazyValues) and lazy.dtype == _numpy_dtype(lazy.tensor):
        # A read-only view of the stored bytes: graphsurgeon's load copies twice, so the analysis would read
        # every weight three times that way. Rules never write into it.
        return numpy_helper.to_array(lazy.tensor)
    # A copy shares the unloaded values; reading them through it leaves the original's cache empty.
    return np.asarray(tensor.copy().values)


def const_shape(tensor: gs.Tensor | None) -> tuple[int, ...] | None:
    """A parameter's shape without reading its values (None where it is not a constant): a dense Conv's
    analysis needs no more of its weight."""
    if not isinstance(tensor, gs.Constant):
        return None
    return tuple(int(d) for d in tensor.shape)


def _numpy_dtype(proto: onnx.TensorProto) -> np.dtype | None:
    try:
        return np.dtype(onnx.helper.tensor_dtype_to_np_dtype(proto.data_type))
    except (KeyError, TypeError):
        return None


def tracked(node: gs.Node, ctx: Analysis) -> list[tuple[int, TensorState]]:
    """(input index, state) of every input that carries channel groups."""
    out = []
    for i, tensor in enumerate(node.inputs):
        state = ctx.state(tensor) if not isinstance(tensor, gs.Constant) else None
        if state is not None:
            out.append((i, state))
    return out


def decline_node(node: gs.Node, ctx: Analysis, reason: str) -> None:
    """Decline every input group and give the outputs fixed channels."""
    for _, state in tracked(node, ctx):
        ctx.decline(state.map, reason, node.name)
    for out in node.outputs:
        size = channels(out)
        if size:
            ctx.set_state(out, ctx.fixed_map(size, reason, node.name))


# The ops the walk evaluates most (residuals, SiLU, squeeze-excite) in numpy: the same float arithmetic
# as ONNX's reference evaluator, without importing it (half a second) and building one per node.
_NUMPY_OPS: dict[str, Callable[..., np.ndarray]] = {
    "Add": np.add, "Sub": np.subtract, "Mul": np.multiply, "Div": np.divide,
    "Relu": lambda x: np.maximum(x, np.zeros((), x.dtype)),
    "Sigmoid": lambda x: (1 / (1 + np.exp(-x))).astype(x.dtype),
    "Identity": lambda x: x,
}  # fmt: skip


def run_node(node: gs.Node, inputs: Sequence[np.ndarray | None]) -> list[np.ndarray] | None:
    """Evaluate one node on small arrays with ONNX's reference evaluator; None if it cannot."""
    fast = _NUMPY_OPS.get(node.op) if node.domain in (None, "", "ai.onnx") and not node.attrs else None
    arrays = [np.asarray(a) for a in inputs if a is not None]
    if fast is not None and len(arrays) == len(inputs) and _one_float_type(arrays):
        with np.errstate(all="ignore"):  # c / 0 is a legitimate inf here: the consumer keeps that channel
            return [np.asarray(fast(*arrays))]
    names = [f"i{k}" if arr is not None else "" for k, arr in enumerate(inputs)]
    outputs = [f"o{k}" for k in range(len(node.outputs))]
    attrs = {k: v for k, v in node.attrs.items() if not isinstance(v, gs.Tensor | gs.Graph)}
    proto = onnx.helper.make_node(node.op, names, outputs, domain=node.domain or "", **attrs)
    feeds = {n: arr for n, arr in zip(names, inputs, strict=True) if n}
    try:
        # Imported here: it costs a noticeable share of the CLI's start-up, and most walks never get here.
        from onnx.reference import ReferenceEvaluator

        evaluator = ReferenceEvaluator(proto)
        with np.errstate(all="ignore"):  # c / 0 is a legitimate inf here: the consumer keeps that channel
            return [np.asarray(x) for x in evaluator.run(None, feeds)]
    except Exception:
        return None


def _one_float_type(arrays: list[np.ndarray]) -> bool:
    return len({a.dtype for a in arrays}) == 1 and arrays[0].dtype.kind == "f"


def as_channel_array(values: np.ndarray, rank_: int, dtype: np.dtype, axis: int = 1) -> np.ndarray:
    """A per-channel vector as a [1, C, 1, ...] tensor of the given rank (C on ``axis``)."""
    return values.astype(dtype).reshape((1,) * axis + (-1,) + (1,) * max(rank_ - axis - 1, 0))


def float_dtype(tensor: gs.Tensor) -> np.dtype:
    dtype = tensor.dtype
    try:
        np_dtype = np.dtype(dtype) if dtype is not None else np.dtype(np.float32)
    except TypeError:
        np_dtype = np.dtype(np.float32)
    return np_dtype if np_dtype.kind == "f" else np.dtype(np.float32)
