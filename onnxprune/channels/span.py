"""Span: a stretch of a tensor's channel axis that belongs to one channel group.

A tensor's channel axis is a tuple of spans laid end to end (a ``ChannelMap``). A plain Conv output is one
span over its own group; a Concat output is its inputs' spans in order; a Split output cuts spans; a Flatten
before a Gemm repeats every channel ``repeat`` times (each channel owns H*W consecutive columns).
"""

from __future__ import annotations

from dataclasses import dataclass, replace


@dataclass(frozen=True)
class Span:
    group: int
    start: int
    length: int
    repeat: int = 1

    @property
    def width(self) -> int:
        """Positions this span occupies on the tensor's axis."""
        return self.length * self.repeat

    def cut(self, lo: int, hi: int) -> Span:
        """The sub-span covering channels [lo, hi) of this span (in channel units)."""
        return replace(self, start=self.start + lo, length=hi - lo)


ChannelMap = tuple[Span, ...]


def width(channel_map: ChannelMap) -> int:
    return sum(span.width for span in channel_map)


def channel_count(channel_map: ChannelMap) -> int:
    return sum(span.length for span in channel_map)


def slice_map(channel_map: ChannelMap, lo: int, hi: int) -> ChannelMap:
    """Positions [lo, hi) of a map whose spans all have repeat 1 (Split and Slice outputs)."""
    out: list[Span] = []
    offset = 0
    for span in channel_map:
        a, b = max(lo, offset), min(hi, offset + span.length)
        if a < b:
            out.append(span.cut(a - offset, b - offset))
        offset += span.length
    return tuple(out)


def repeat_map(channel_map: ChannelMap, times: int) -> ChannelMap:
    """Each channel repeated ``times`` times in place (Flatten of a [C, H, W] map: times = H*W)."""
    return tuple(replace(span, repeat=span.repeat * times) for span in channel_map)
