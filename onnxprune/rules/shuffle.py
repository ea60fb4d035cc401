"""Channel regrouping chains: a Reshape that spreads the channel axis over several axes, then Transpose or
Softmax, then a Reshape that gathers it back into one axis. Two CNN patterns are such chains:

- ShuffleNet's channel shuffle, [N, C, H, W] → [N, g, C/g, H, W] → swap axes 1 and 2 → [N, C, H, W], is
  followed as a fixed permutation of channel positions: output position p carries input position
  ``perm[p]``, so the output's map is the input's map permuted and no groups are tied. After pruning, the
  kept channels no longer fill a g x C/g grid, so the chain is replaced by one Gather on axis 1 with the
  kept part of the permutation (a copy, as the Transpose it replaces).
- ResNeSt's radix softmax, [N, rC] → [N, 1, r, C] → swap → Softmax over r → [N, rC], is a Softmax across
  r chunks of the channel axis, index by index: the chunks are unified, so every chunk keeps the same
  channels, the grid survives pruning, and the Reshape targets shrink with the kept chunk size. A removed
  set of r channels carries the softmax of its constants.

The chain is simulated once on an array of channel indices. Anything else is declined with its reason: a
Softmax that also permutes, or normalises channel sets that are not equal chunks, or spatial axes inside
the chain; a chain tensor used twice; a Transpose or Reshape that moves the batch axis.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import onnx_graphsurgeon as gs

from onnxprune.channels.analysis import Analysis, TensorState
from onnxprune.channels.edit import Rewrite
from onnxprune.channels.span import ChannelMap, Span, slice_map
from onnxprune.rules.base import const

CHAIN_OPS = ("Reshape", "Transpose", "Softmax", "LogSoftmax")


@dataclass
class Chain:
    nodes: list[gs.Node]
    perm: np.ndarray  # output position -> input position
    chunks: int = 1  # > 1: a Softmax ties this many equal chunks of the channel axis index by index
    log: bool = False
    local_axes: dict[int, list[int]] = field(default_factory=dict)  # id(Reshape) -> axes that shrink


def _dims(tensor: gs.Tensor) -> list[int] | None:
    """The static shape with the batch axis set to 1 (the batch never mixes with channels here)."""
    shape = tensor.shape
    if shape is None or len(shape) < 2 or any(not isinstance(d, int | np.integer) for d in shape[1:]):
        return None
    return [1] + [int(d) for d in shape[1:]]


def _follow(node: gs.Node) -> list[gs.Node] | str:
    """The chain's nodes from the splitting Reshape to the Reshape that merges the channels back."""
    src = _dims(node.inputs[0])
    if src is None:
        return "channel regrouping of a tensor whose shape is not static"
    spatial = int(np.prod(src[2:], dtype=np.int64))
    chain = [node]
    while len(chain) < 8:
        tensor = chain[-1].outputs[0]
        if len(tensor.outputs) != 1:
            return "channels spread over several axes are used by several ops"
        nxt = tensor.outputs[0]
        if nxt.op not in CHAIN_OPS or nxt.inputs[0] is not tensor:
            return f"channels spread over several axes reach a {nxt.op}"
        chain.append(nxt)
        dst = _dims(nxt.outputs[0])
        if dst is None:
            return "channels spread over several axes with run-time shapes"
        moves_batch = nxt.op == "Transpose" and list(nxt.attrs.get("perm", [-1]))[0] != 0  # default: reversed
        if moves_batch or nxt.outputs[0].shape[0] != node.inputs[0].shape[0]:
            return "channels spread over several axes mix with the batch axis"
        if nxt.op == "Reshape" and dst[1] == src[1] and int(np.prod(dst[2:], dtype=np.int64)) == spatial:
            return chain
    return "channels spread over several axes are not gathered back"


def _mixing_sets(idx: np.ndarray, node: gs.Node, opset: int) -> np.ndarray:
    """Rows of channel indices a Softmax normalises together (opset < 13: everything from its axis on)."""
    axis = int(node.attrs.get("axis", -1 if opset >= 13 else 1)) % idx.ndim
    if opset >= 13:
        rows = np.moveaxis(idx, axis, -1).reshape(-1, idx.shape[axis])
    else:
        rows = idx.reshape(int(np.prod(idx.shape[:axis])), -1)
    return np.unique(np.sort(rows, axis=1), axis=0)


def _chunks(sets: np.ndarray, c: int) -> int | None:
    """m if the sets are {i, i + C/m, ..., i + (m-1)C/m} for every i < C/m; 1 if each is one channel."""
    unique = [np.unique(row) for row in sets]
    if all(len(u) == 1 for u in unique):
        return 1
    m = len(unique[0])
    if c % m or len(unique) != c // m or any(len(u) != m for u in unique):
        return None
    expected = np.arange(c // m)[:, None] + np.arange(m)[None, :] * (c // m)
    return m if np.array_equal(np.array(sorted(map(tuple, unique))), expected) else None


def match(node: gs.Node, opset: int) -> Chain | str | None:
    """The chain that starts at this Reshape; None if it does not spread the channel axis; else why not."""
    src, dst = _dims(node.inputs[0]), _dims(node.outputs[0])
    if src is None or dst is None or const(node.inputs[1]) is None or np.prod(src) != np.prod(dst):
        return None
    if src[1] not in np.cumprod(dst[1:])[1:]:  # axes 1..k of the output do not hold exactly the channels
        return None
    nodes = _follow(node)
    if isinstance(nodes, str):
        return nodes
    c = src[1]
    idx = np.broadcast_to(np.arange(c, dtype=np.int32).reshape([1, c] + [1] * (len(src) - 2)), src)
    chain = Chain(nodes, np.arange(c))
    shapes: list[tuple[gs.Node, np.ndarray]] = []
    for n in nodes:
        if n.op == "Reshape":
            if const(n.inputs[1]) is None:
                return "a channel shuffle Reshape with a run-time shape"
            idx = idx.reshape(_dims(n.outputs[0]))  # type: ignore[arg-type]
            shapes.append((n, idx))
        elif n.op == "Transpose":
            idx = idx.transpose(list(n.attrs.get("perm", range(idx.ndim)[::-1])))
        elif chain.chunks > 1 or (m := _chunks(_mixing_sets(idx, n, opset), c)) is None:
            return f"{n.op} over channels that are not equal chunks of the channel axis"
        elif m == 1:  # the Gather that replaces a permutation would drop it
            return f"{n.op} over spatial axes inside a channel regrouping"
        else:
            chain.chunks, chain.log = m, n.op == "LogSoftmax"
    per_channel = idx.reshape(c, -1)
    if (per_channel != per_channel[:, :1]).any():
        return "a Reshape that mixes channels with spatial positions"
    chain.perm = per_channel[:, 0].astype(np.int64)
    if chain.chunks > 1:
        return _grid(chain, shapes, c)
    return chain


def _grid(chain: Chain, shapes: list[tuple[gs.Node, np.ndarray]], c: int) -> Chain | str:
    """A radix softmax: record which target entries shrink with the kept chunk size."""
    if not np.array_equal(chain.perm, np.arange(c)):
        return "a Softmax across channel chunks that also permutes channels"
    size = c // chain.chunks
    for n, idx in shapes:
        local = idx % size
        axes = [a for a in range(1, idx.ndim) if idx.shape[a] > 1 and (np.diff(local, axis=a) != 0).any()]
        target = np.asarray(const(n.inputs[1])).reshape(-1)
        if any(idx.shape[a] % size or target[a] == 0 for a in axes):
            return "a Reshape that cuts a channel chunk of a Softmax in two"
        chain.local_axes[id(n)] = axes
    return chain


def permuted(cmap: ChannelMap, perm: np.ndarray) -> ChannelMap:
    """The map of a tensor whose position p is position perm[p] of a tensor with map ``cmap``."""
    positions = [(s.group, s.start + j) for s in cmap for j in range(s.length)]
    spans: list[Span] = []
    for p in perm:
        group, ch = positions[p]
        last = spans[-1] if spans else None
        if last is not None and last.group == group and last.start + last.length == ch:
            spans[-1] = Span(group, last.start, last.length + 1)
        else:
            spans.append(Span(group, ch, 1))
    return tuple(spans)


def softmax_values(values: np.ndarray, chunks: int, log: bool) -> np.ndarray:
    """What a Softmax across ``chunks`` equal chunks makes of per-channel constants (nan stays nan)."""
    grid = values.reshape(chunks, -1)
    shifted = grid - grid.max(axis=0)
    out = shifted - np.log(np.exp(shifted).sum(axis=0)) if log else np.exp(shifted) / np.exp(shifted).sum(0)
    return out.reshape(-1)


def propagate(chain: Chain, ctx: Analysis, state: TensorState) -> None:
    """Give the chain's last tensor its map: the input's permuted, or the input's with its chunks tied."""
    cmap, value, before = state.map, state.removed_value, state.before_first_bn
    out = chain.nodes[-1].outputs[0]
    if chain.chunks > 1:
        size = len(value) // chain.chunks
        chunks = [slice_map(cmap, k * size, (k + 1) * size) for k in range(chain.chunks)]
        if not ctx.unify(chain.nodes[0].name, chunks):
            ctx.set_state(out, ctx.fixed_map(len(value), "Softmax across unequal channel chunks"))
            return
        value = softmax_values(value, chain.chunks, chain.log)
        before = np.zeros_like(before)
    else:
        cmap, value, before = permuted(cmap, chain.perm), value[chain.perm], before[chain.perm]
    for n in chain.nodes:
        ctx.member(state.map, n.name)
    ctx.set_state(out, cmap, value, before)


def apply(chain: Chain, rw: Rewrite, keep_in: np.ndarray) -> None:
    """Shrink a radix softmax's grid, or replace a permutation with one Gather of the kept channels."""
    if chain.chunks > 1:
        _shrink_grid(chain, rw, len(keep_in) // chain.chunks)
    else:
        _as_gather(chain, rw, keep_in)


def _shrink_grid(chain: Chain, rw: Rewrite, kept: int) -> None:
    """Every chunk keeps ``kept`` channels: explicit target entries along the chunk axis follow."""
    size = len(chain.perm) // chain.chunks
    for n in chain.nodes:
        if n.op != "Reshape" or not chain.local_axes.get(id(n)):
            continue
        target = np.array(const(n.inputs[1]), dtype=np.int64).reshape(-1)
        for a in chain.local_axes[id(n)]:
            target[a] = target[a] // size * kept if target[a] > 0 else target[a]  # -1 follows by itself
        rw.set_param(n, 1, target)


def _as_gather(chain: Chain, rw: Rewrite, keep_in: np.ndarray) -> None:
    """The kept channels no longer fill the grid: one Gather on axis 1 takes the chain's place."""
    first, last = chain.nodes[0], chain.nodes[-1]
    out = last.outputs[0]
    rank = np.full(len(chain.perm), -1, dtype=np.int64)
    rank[keep_in] = np.arange(len(keep_in))  # position in the pruned input of each kept channel
    keep_out = rw.kept(out)
    indices = rank[chain.perm[keep_out if keep_out is not None else np.arange(len(chain.perm))]]
    first.op = "Gather"
    first.attrs.clear()
    first.attrs["axis"] = 1
    first.inputs[1] = gs.Constant(rw.fresh_name(f"{first.name or 'shuffle'}_perm"), indices)
    last.outputs.clear()  # the Transpose and the last Reshape lose their consumers and go at cleanup
    first.outputs.clear()
    first.outputs.append(out)
