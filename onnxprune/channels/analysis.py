"""Analyse: build the channel-dependency groups of a graph by running each node's rule in topological order.

Groups live in a union-find. ``unify`` ties the channels of two tensors index by index (a residual Add);
where a span covers only part of a group (a Split output added to a Conv output), the group is first cut in
two at the boundary, together with every group already unified with it, so a union always joins whole
groups of equal size. After the walk, every union class of leaf groups becomes one ``ChannelGroup``.

Besides the maps, the walk tracks for every channel of every tensor the value that channel would carry if
it were removed: 0 where it is born (a producer's output, or the first BatchNormalization after it), then
whatever the ops downstream make of that 0 (a BN turns it into a constant, a Sigmoid into 0.5). A consumer
must fold a non-zero constant into its bias, or keep the channel where folding would not be exact.

With data-free compensation (``compensate="bn"``) a channel cut at a scoring BN carries that BN's expected
output beta instead of 0, with spread |gamma| (see ``onnxprune.compensate.datafree``); a channel that no BN
scores (the BN was folded into its producer) carries its producer's bias (``biased``, set by a second walk
once the first has found which channels a BN scores). Where a consumer cannot fold what compensation makes
of a channel, the channel falls back to 0 at its cut (``disabled``) and the walk runs again, so
compensation never keeps a channel that plain removal would let go.
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import numpy as np
import onnx_graphsurgeon as gs

from onnxprune.channels.group import ChannelGroup, Decline
from onnxprune.channels.notes import (
    DeclineNote,
    FilterNormNote,
    GammaNote,
    InexactNote,
    MemberNote,
    MustKeepNote,
    Note,
    Piece,
)
from onnxprune.channels.plan import Plan
from onnxprune.channels.span import ChannelMap, Span, channel_count, width
from onnxprune.tolerances import VALUE_ATOL, VALUE_RTOL

# Why a consumer keeps a removed channel (inspect --explain lists them): what the channel would carry there.
UNKNOWN_VALUE = "a removed channel would carry no one constant into this op (an op before it made it vary)"
UNFOLDABLE = "a removed channel would carry a constant this op cannot fold exactly"

# The ops whose channel widths the planner aligns (planning/align.py): the walk records what they see.
WIDTH_CONSUMERS = ("Conv", "ConvTranspose", "Gemm", "MatMul")


@dataclass
class TensorState:
    """What the walk knows of one tensor's channel axis."""

    map: ChannelMap
    removed_value: np.ndarray  # per position: value of the channel if it were removed (nan: not constant)
    before_first_bn: np.ndarray  # per position: True until the first BatchNormalization after its producer
    # per position: standard deviation of a removed channel's value (compensate="bn"); 0: a point value
    spread: np.ndarray = field(default_factory=lambda: np.zeros(0))
    axis: int = 1  # the channel axis: 1, or another where a Transpose moved it (NHWC segments of TF exports)

    def __post_init__(self) -> None:
        if len(self.spread) != len(self.removed_value):
            self.spread = np.zeros(len(self.removed_value))


@dataclass
class _Groups:
    """Union-find over leaf groups, with splitting of a whole class at the same offsets."""

    size: list[int] = field(default_factory=list)
    parent: list[int] = field(default_factory=list)
    members: dict[int, list[int]] = field(default_factory=dict)
    children: dict[int, list[tuple[int, int]]] = field(default_factory=dict)

    def new(self, size: int) -> int:
        gid = len(self.size)
        self.size.append(size)
        self.parent.append(gid)
        self.members[gid] = [gid]
        return gid

    def find(self, gid: int) -> int:
        while self.parent[gid] != gid:
            self.parent[gid] = self.parent[self.parent[gid]]
            gid = self.parent[gid]
        return gid

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra == rb:
            return
        if len(self.members[ra]) < len(self.members[rb]):
            ra, rb = rb, ra
        self.parent[rb] = ra
        self.members[ra].extend(self.members.pop(rb))

    def leaves(self, span: Span) -> list[Span]:
        kids = self.children.get(span.group)
        if not kids:
            return [span]
        out: list[Span] = []
        for offset, kid in kids:
            lo, hi = max(span.start, offset), min(span.start + span.length, offset + self.size[kid])
            if lo < hi:
                out.extend(self.leaves(Span(kid, lo - offset, hi - lo, span.repeat)))
        return out

    def split(self, gid: int, cuts: Iterable[int]) -> bool:
        """Cut leaf ``gid`` (and its whole class) at local offsets; True if anything was cut."""
        bounds = sorted({0, self.size[gid], *(c for c in cuts if 0 < c < self.size[gid])})
        if len(bounds) == 2:
            return False
        pieces = []
        for member in self.members[self.find(gid)]:
            kids = [(lo, self.new(hi - lo)) for lo, hi in itertools.pairwise(bounds)]
            self.children[member] = kids
            pieces.append(kids)
        for k in range(len(bounds) - 1):
            for kids in pieces[1:]:
                self.union(pieces[0][k][1], kids[k][1])
        return True


class Analysis:
    """The context every rule's ``propagate`` works through (the calls a rule may make are listed in
    ``rules/base.py``)."""

    def __init__(
        self,
        opset: int,
        outputs: Iterable[str],
        first_pass: Analysis | None = None,
        compensate: str = "none",
        disabled: dict[str, np.ndarray] | None = None,
        allow_approximate: bool = True,
        biased: dict[str, np.ndarray] | None = None,
    ) -> None:
        self.opset = opset
        # False for --threshold, a promise about exactness: no estimate that is wrong even for gamma = 0
        # (a padded depthwise Conv's interior value); such channels fall back to 0 and stay where they must.
        self.allow_approximate = allow_approximate
        # "bn": removed channels carry their BN's expected output (first pass only); ``disabled``: cut
        # positions (per tensor) that fall back to 0 because a consumer could not fold their estimate.
        self.compensate = compensate if first_pass is None else "none"
        self.disabled = disabled or {}
        # Compensation: producer outputs (per position) whose removed channels carry the producer's bias.
        self.biased = biased or {}
        self._biases: dict[str, np.ndarray] = {}  # producer output -> its bias per position (masked pass)
        # (tensor, consumer node, how it folds): every reduction over a tracked channel axis
        self.consumers: list[tuple[str, str, str]] = []
        # (node, why, tensor): where a data-free estimate is not exact even for gamma = 0
        self.approximations: list[tuple[str, str, str]] = []
        self._fallback: list[tuple[ChannelMap, np.ndarray]] = []
        self.exactness_known = False  # the original-values pass ran: groups' ``inexact`` is filled in
        self.outputs = frozenset(outputs)  # names of the graph's outputs
        # Second pass (``first_pass`` given): values are what the *original* model carries in a channel
        # that is dead where it is scored (gamma = 0), nan where unknown. A consumer where that differs from
        # the first (masked) pass cannot lose the channel without changing the outputs: it is inexact.
        self.first_pass = first_pass
        self.states: dict[str, TensorState] = {}
        self._groups = _Groups()
        self._notes: list[Note] = []
        self._ties: list[tuple[list[ChannelMap], str]] = []
        self.sources: list[tuple[str, np.ndarray]] = []
        self.groups: list[ChannelGroup] = []
        self.consumer_widths: list[tuple[str, str]] = []  # (node, tensor) of every Conv/Gemm input and output

    @property
    def original_values(self) -> bool:
        """True on the second pass, which follows the original model's values rather than the masked ones."""
        return self.first_pass is not None

    # ---- reading tensors -------------------------------------------------------------------------
    def state(self, tensor: gs.Tensor) -> TensorState | None:
        return self.states.get(tensor.name)

    # ---- creating and recording ------------------------------------------------------------------
    def new_group(self, size: int) -> ChannelMap:
        return (Span(self._groups.new(size), 0, size),)

    def fixed_map(self, size: int, reason: str, node: str = "") -> ChannelMap:
        """Channels onnxprune must not touch (a graph input, an op without a rule)."""
        cmap = self.new_group(size)
        self.decline(cmap, reason, node)
        return cmap

    def set_state(
        self,
        tensor: gs.Tensor,
        cmap: ChannelMap,
        removed_value: np.ndarray | None = None,
        before_first_bn: np.ndarray | None = None,
        spread: np.ndarray | None = None,
        axis: int = 1,
    ) -> None:
        """What a tensor carries: its map, a removed channel's value per position (default nan: unknown),
        whether each position is still before the first BatchNormalization (default False), the spread
        of a compensated value (default 0: a point constant), and the axis its channels are on."""
        n = width(cmap)
        value = np.asarray(np.full(n, np.nan) if removed_value is None else removed_value, dtype=np.float64)
        before = np.zeros(n, dtype=bool) if before_first_bn is None else before_first_bn
        spread = np.zeros(n) if spread is None else np.asarray(spread, dtype=np.float64)
        spread = np.where(np.isfinite(value), spread, 0.0)
        self.states[tensor.name] = TensorState(cmap, value, before, spread, axis)

    @property
    def compensating(self) -> bool:
        """Removed channels carry a data-free estimate (first pass of ``compensate="bn"``)."""
        return self.compensate == "bn" and self.first_pass is None

    def cut_value(
        self, tensor: gs.Tensor, gamma: np.ndarray, beta: np.ndarray, through: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """(value, spread) of channels cut at a scoring BN's output ``tensor``.

        ``through`` is what the BN makes of the incoming value. Masked pass: 0, or with compensation beta
        with spread |gamma| (N(beta, gamma²) when the input matches the running statistics). Original
        pass: beta where gamma is 0 (the channel is dead there), else what flows through.
        """
        zeros = np.zeros_like(beta)
        if self.original_values:
            return np.where(gamma == 0, beta, through), zeros
        if not self.compensating:
            return zeros, zeros
        off = self.disabled.get(tensor.name, np.zeros(len(beta), dtype=bool))
        return np.where(off, 0.0, beta), np.where(off, 0.0, np.abs(gamma))

    def produce(
        self, tensor: gs.Tensor, cmap: ChannelMap, rows: Callable[[], np.ndarray], bias: np.ndarray | None
    ) -> None:
        """A producer's output (Conv, Gemm): new channels, cut right here when removed.

        In the masked pass a removed channel is 0 here, or with compensation its bias where no BN scores it
        (``biased``: what a channel carries when its filter sees nothing, the best a BN folded into the
        producer leaves to go on; the same whether an export writes the bias into the Conv or adds it
        after). In the original it is unknown unless its filter is all zeros (then it is the bias: a dead
        channel of a model whose BN was folded away). ``rows()``: the filters, one per channel, read only
        for the original (the masked pass needs no weight values).
        """
        n = width(cmap)
        value = np.zeros(n)
        b = bias.astype(np.float64).reshape(-1) if bias is not None and bias.size == n else np.zeros(n)
        if self.original_values:
            filters = rows()
            zero_rows = ~filters.reshape(n, -1).any(axis=1)
            value = np.where(zero_rows, b, np.nan)
        elif self.compensating:
            self._biases[tensor.name] = b
            carry = self.biased.get(tensor.name, np.zeros(n, dtype=bool))
            value = np.where(carry & ~self.disabled.get(tensor.name, np.zeros(n, dtype=bool)), b, 0.0)
        self.set_state(tensor, cmap, value, np.ones(n, dtype=bool))
        self.source(tensor, np.ones(n, dtype=bool))

    def consume(self, tensor: gs.Tensor, node: str, foldable: bool, how: str = "bias", why: str = "") -> None:
        """A consumer reduces over the channel axis: removed channels must be 0, or a constant it folds.

        Masked pass: a constant it cannot fold exactly (or an unknown value) forces the channel to stay;
        ``why`` says why it cannot fold a constant. Original pass: where the original carries something
        else than the masked model, the channel is inexact (removing it is not free even when its gamma is
        0).
        """
        state = self.states[tensor.name]
        value = state.removed_value
        if self.first_pass is None:
            self.consumers.append((tensor.name, node, how if foldable else "none"))
            # inf (a Div by a removed 0) folds into nothing finite: keep it like an unknown value.
            unknown = ~np.isfinite(value)
            self.keep_where(state.map, unknown, UNKNOWN_VALUE, node)
            constant = ~unknown & (value != 0) & (not foldable)
            self.keep_where(state.map, constant, f"{UNFOLDABLE}{': ' + why if why else ''}", node)
            unfoldable = unknown | constant
            if self.compensating and unfoldable.any():
                self._fallback.append((state.map, unfoldable))
            return
        reference = self.first_pass.states[tensor.name].removed_value
        differs = ~(np.isfinite(value) & np.isclose(value, reference, rtol=VALUE_RTOL, atol=VALUE_ATOL))
        if differs.any():
            self._notes.append(InexactNote(state.map, differs))

    def source(self, tensor: gs.Tensor, positions: np.ndarray) -> None:
        """Where removed channels are cut: a producer's output, or a scoring BN's (the masked reference
        zeroes them exactly there)."""
        if positions.any():
            self.sources.append((tensor.name, np.asarray(positions, dtype=bool)))

    def decline(self, cmap: ChannelMap | None, reason: str, node: str = "") -> None:
        if cmap:
            self._notes.append(DeclineNote(cmap, Decline(reason, node)))

    def member(self, cmap: ChannelMap | None, node: str, producer: bool = False) -> None:
        if cmap:
            self._notes.append(MemberNote(cmap, node, producer))

    def add_gamma(self, cmap: ChannelMap, gamma: np.ndarray) -> None:
        """|gamma| per position; nan where this BN does not score the channel."""
        self._notes.append(GammaNote(cmap, np.asarray(gamma, dtype=np.float64)))

    def add_filter_norm(self, cmap: ChannelMap, norms: Callable[[], tuple[np.ndarray, np.ndarray]]) -> None:
        """L1 and L2 norm of the filter that produces each position (the weight-norm criteria), from
        ``norms()``: called once, when a group's ranking first needs it (never in the original-values pass,
        whose groups only give ``inexact``, nor for groups ranked by gamma)."""
        if self.first_pass is not None:
            return

        @functools.cache
        def once() -> tuple[np.ndarray, np.ndarray]:
            l1, l2 = norms()
            return np.asarray(l1, np.float64), np.asarray(l2, np.float64)

        self._notes.append(FilterNormNote(cmap, once))

    def keep_where(self, cmap: ChannelMap, mask: np.ndarray, reason: str, node: str) -> None:
        """Channels (per position) that must survive: their constant cannot be folded exactly."""
        if mask.any():
            self._notes.append(MustKeepNote(cmap, np.asarray(mask, dtype=bool), Decline(reason, node)))

    def tie(self, maps: list[ChannelMap], node: str) -> None:
        """Each map is one whole group after analysis; all of them must keep the same count."""
        self._ties.append((maps, node))

    # ---- unifying --------------------------------------------------------------------------------
    def resolve(self, cmap: ChannelMap) -> ChannelMap:
        return tuple(leaf for span in cmap for leaf in self._groups.leaves(span))

    def cut(self, cmap: ChannelMap, bounds: Iterable[int]) -> None:
        """Make channel offsets ``bounds`` (of this map) group boundaries."""
        bounds = set(bounds)
        for _ in range(64):
            changed = False
            offset = 0
            for span in self.resolve(cmap):
                local = {b - offset + span.start for b in bounds if offset < b < offset + span.length}
                changed |= self._groups.split(span.group, local | {span.start, span.start + span.length})
                offset += span.length
            if not changed:
                return

    def unify(self, node: str, maps: list[ChannelMap]) -> bool:
        """Tie the channels of several tensors together, index by index."""
        repeats = {span.repeat for cmap in maps for span in cmap}
        if len(repeats) > 1 or len({channel_count(m) for m in maps}) > 1:
            for cmap in maps:
                self.decline(cmap, "element-wise op joins tensors whose channel layouts differ", node)
            return False
        bounds: set[int] = set()
        for _ in range(64):
            for cmap in maps:
                bounds |= _boundaries(self.resolve(cmap))
            before = len(self._groups.size)
            for cmap in maps:
                self.cut(cmap, bounds)
            if len(self._groups.size) == before:
                break
        resolved = [self.resolve(cmap) for cmap in maps]
        for other in resolved[1:]:
            for a, b in zip(resolved[0], other, strict=True):
                self._groups.union(a.group, b.group)
        return True

    # ---- finishing -------------------------------------------------------------------------------
    def finish(self) -> list[ChannelGroup]:
        """Turn union classes of leaf groups into ChannelGroups with their scores and declines."""
        self._class_of: dict[int, ChannelGroup] = {}
        groups: list[ChannelGroup] = []
        for gid in range(len(self._groups.size)):
            if gid in self._groups.children:
                continue
            root = self._groups.find(gid)
            if root not in self._class_of:
                group = ChannelGroup(id=len(groups), size=self._groups.size[gid])
                self._class_of[root] = group
                groups.append(group)
        for note in self._notes:
            for group, span, offset in self.pieces(note.map):
                channels = slice(span.start, span.start + span.length)
                positions = slice(offset, offset + span.width, span.repeat)
                note.record(Piece(group, channels, positions, span.length))
        self._apply_ties(groups)
        for group in groups:
            group.nodes = sorted(set(group.nodes))
            group.producers = sorted(set(group.producers))
        self.groups = groups
        return groups

    def approximate(self, node: str, why: str, tensor: gs.Tensor) -> None:
        """A data-free estimate that is not exact even for gamma = 0, for what ``tensor``'s removed
        channels carry into ``node`` (the report lists it where some of them carry something)."""
        self.approximations.append((node, why, tensor.name))

    def fallback_cuts(self) -> dict[str, np.ndarray]:
        """Cut positions (per source tensor) whose compensated value some consumer cannot fold, beyond
        those already disabled: they are cut to 0 instead in the next walk (after ``finish``)."""
        unfoldable: dict[int, np.ndarray] = {}  # group id -> per channel
        for cmap, mask in self._fallback:
            for group, span, offset in self.pieces(cmap):
                flags = unfoldable.setdefault(group.id, np.zeros(group.size, dtype=bool))
                hits = mask[offset : offset + span.width : span.repeat]
                flags[span.start : span.start + span.length] |= hits
        out: dict[str, np.ndarray] = {}
        for name, positions in self.sources:
            new = np.zeros(len(positions), dtype=bool)
            for group, span, offset in self.pieces(self.states[name].map):
                if group.id in unfoldable:
                    flags = unfoldable[group.id][span.start : span.start + span.length]
                    new[offset : offset + span.width] = np.repeat(flags, span.repeat)
            new &= positions & ~self.disabled.get(name, np.zeros(len(positions), dtype=bool))
            if new.any():
                out[name] = new
        return out

    def unscored_biases(self) -> dict[str, np.ndarray]:
        """Producer outputs (per position) whose channels no BN scores and whose bias is not 0: what
        compensation lets carry that bias in the next walk (after ``finish``)."""
        out: dict[str, np.ndarray] = {}
        for name, bias in self._biases.items():
            scored = np.zeros(len(bias), dtype=bool)
            for group, span, offset in self.pieces(self.states[name].map):
                if group.gamma is not None:
                    local = np.isfinite(group.gamma[span.start : span.start + span.length])
                    scored[offset : offset + span.width] = np.repeat(local, span.repeat)
            carry = ~scored & (bias != 0)
            if carry.any():
                out[name] = carry
        return out

    def group_of(self, gid: int) -> ChannelGroup:
        return self._class_of[self._groups.find(gid)]

    def pieces(self, cmap: ChannelMap) -> Iterable[tuple[ChannelGroup, Span, int]]:
        """(group, leaf span, position offset) for every leaf span of a map."""
        offset = 0
        for span in self.resolve(cmap):
            yield self.group_of(span.group), span, offset
            offset += span.width

    def _apply_ties(self, groups: list[ChannelGroup]) -> None:
        next_tie = 0
        for maps, node in self._ties:
            members = [list(self.pieces(cmap)) for cmap in maps]
            if any(len(p) != 1 or p[0][1].length != p[0][0].size for p in members):
                for piece in itertools.chain.from_iterable(members):
                    piece[0].declines.append(Decline("grouped Conv whose groups are cut by another op", node))
                continue
            ties = {p[0][0].tie for p in members if p[0][0].tie >= 0}
            tie_id = min(ties) if ties else next_tie
            next_tie = max(next_tie, tie_id + 1)
            for group in groups:
                if group.tie in ties:
                    group.tie = tie_id
            for p in members:
                p[0][0].tie = tie_id

    # ---- with a plan ------------------------------------------------------------------------------
    def kept_positions(self, cmap: ChannelMap, plan: Plan) -> np.ndarray:
        """Positions of a tensor's channel axis that survive the plan, in order."""
        kept: list[np.ndarray] = []
        for group, span, offset in self.pieces(cmap):
            keep = plan.kept.get(group.id)
            keep = keep if keep is not None else np.arange(group.size)
            local = keep[(keep >= span.start) & (keep < span.start + span.length)] - span.start
            pos = offset + local[:, None] * span.repeat + np.arange(span.repeat)[None, :]
            kept.append(pos.reshape(-1))
        return np.concatenate(kept).astype(np.int64) if kept else np.zeros(0, np.int64)

    def removed_mask(self, name: str, plan: Plan) -> np.ndarray:
        """Per position of a tracked tensor's channel axis: whether the plan removes it."""
        state = self.states[name]
        removed = np.ones(len(state.removed_value), dtype=bool)
        removed[self.kept_positions(state.map, plan)] = False
        return removed

    def removed_positions(self, name: str, plan: Plan) -> np.ndarray:
        """Positions of a tracked tensor's channel axis that the plan removes, in order (from the mask, not
        np.setdiff1d, which sorts through a hash table)."""
        return np.flatnonzero(self.removed_mask(name, plan))


def _boundaries(cmap: ChannelMap) -> set[int]:
    offsets = itertools.accumulate(span.length for span in cmap)
    return {0, *offsets}
