"""The channel model: spans, groups, plans, and the contexts rules work through (``Analysis`` while
channels are followed, ``Rewrite`` while a plan is applied). Nothing here imports the rules; the drivers
that run them are ``onnxprune.analyse`` and ``onnxprune.rewrite``."""

from onnxprune.channels.analysis import Analysis, TensorState
from onnxprune.channels.group import ChannelGroup, Decline
from onnxprune.channels.plan import Plan
from onnxprune.channels.span import ChannelMap, Span

__all__ = ["Analysis", "ChannelGroup", "ChannelMap", "Decline", "Plan", "Span", "TensorState"]
