"""Notes: what rules record about a channel map during the walk, applied to the groups once they are known.

While the walk runs, groups are still being cut and unified, so a rule cannot write into a ChannelGroup.
It records a note against a tensor's map instead; ``Analysis.finish`` resolves each map into leaf pieces
and lets every note record itself into the group of each piece. Arrays in a note are per position of the
tensor's channel axis; a piece says which of those positions and which of the group's channels it covers.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from onnxprune.channels.group import ChannelGroup, Decline, fmax_into
from onnxprune.channels.span import ChannelMap


@dataclass(frozen=True)
class Piece:
    """One leaf span of a noted map: ``channels`` of ``group``, at ``positions`` of the note's arrays."""

    group: ChannelGroup
    channels: slice
    positions: slice
    length: int


@dataclass(frozen=True)
class Note:
    map: ChannelMap

    def record(self, piece: Piece) -> None:
        raise NotImplementedError


@dataclass(frozen=True)
class DeclineNote(Note):
    decline: Decline

    def record(self, piece: Piece) -> None:
        piece.group.declines.append(self.decline)


@dataclass(frozen=True)
class MemberNote(Note):
    node: str
    producer: bool = False

    def record(self, piece: Piece) -> None:
        piece.group.nodes.append(self.node)
        if self.producer:
            piece.group.producers.append(self.node)


@dataclass(frozen=True)
class GammaNote(Note):
    gamma: np.ndarray  # |gamma| per position; nan where this BN does not score the channel

    def record(self, piece: Piece) -> None:
        group = piece.group
        group.gamma = fmax_into(group.gamma, group.size, piece.channels, self.gamma[piece.positions])


@dataclass(frozen=True)
class FilterNormNote(Note):
    norms: Callable[[], tuple[np.ndarray, np.ndarray]]  # (L1, L2) per position, computed once when asked

    def record(self, piece: Piece) -> None:
        piece.group.norm_sources.append((self.norms, piece.channels, piece.positions))


@dataclass(frozen=True)
class InexactNote(Note):
    flags: np.ndarray  # per position: the original carries something else than the masked model

    def record(self, piece: Piece) -> None:
        group = piece.group
        flags = group.inexact if group.inexact is not None else np.zeros(group.size, bool)
        flags[piece.channels] |= self.flags[piece.positions]
        group.inexact = flags


@dataclass(frozen=True)
class MustKeepNote(Note):
    mask: np.ndarray  # per position: the channel must survive
    decline: Decline

    def record(self, piece: Piece) -> None:
        group = piece.group
        keep = group.must_keep if group.must_keep is not None else np.zeros(group.size, bool)
        held = self.mask[piece.positions]
        keep[piece.channels] |= held
        group.must_keep = keep
        if held.any():
            why = group.must_keep_why.setdefault(self.decline, np.zeros(group.size, bool))
            why[piece.channels] |= held
