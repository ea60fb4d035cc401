"""BatchNormalization and InstanceNormalization: per-channel vectors, sliced with the kept channels.

Scoring (Network Slimming): the first BatchNormalization after a producer scores the channels it normalises
by |gamma|, wherever it stands: right after a Conv, after an activation, or after a Concat (DenseNet). A BN
further downstream (after a depthwise Conv) sees channels already normalised and does not score them.
Value of a removed channel: 0 at the output of a scoring BN (the channel is cut there), elsewhere the BN
maps the incoming constant c to ``beta + gamma * (c - mean) / sqrt(var + eps)``. In the original model
(the analysis' second pass) a scored channel with gamma 0 carries beta, whatever comes in. With data-free
compensation a scored channel is cut to beta with spread |gamma| instead of 0 (``Analysis.cut_value``).

An identity branch (RepVGG, MobileOne before reparameterisation: ``BN(x)`` summed with ``BN(Conv(x))``
branches that read the same ``x``) scores and cuts its channels too, although ``x`` is normalised already: a
channel of the sum is dead exactly where every branch's BN is (gamma = beta = 0 in all of them), the
identity's included. Followed as an affine of ``x`` instead, a removed channel would leave the sum as that
BN's constant, which the next block's zero-padded Conv cannot fold.
"""

from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from onnxprune.channels.analysis import Analysis, TensorState
from onnxprune.channels.edit import Rewrite
from onnxprune.rules.base import ChannelwiseRule, Rule, const, decline_node, rule


@rule("BatchNormalization")
class BatchNormRule(Rule):
    def propagate(self, node: gs.Node, ctx: Analysis) -> None:
        state = ctx.state(node.inputs[0])
        if state is None:
            return
        params = [const(t) for t in node.inputs[1:5]]
        if (
            any(p is None for p in params)
            or len(node.outputs) > 1
            and any(o.outputs for o in node.outputs[1:])
        ):
            decline_node(node, ctx, "BatchNormalization with run-time or training-mode statistics")
            return
        gamma, beta, mean, var = (np.asarray(p, dtype=np.float64).reshape(-1) for p in params)  # type: ignore[arg-type]
        if gamma.size != state.removed_value.size:
            decline_node(node, ctx, "BatchNormalization whose vectors do not match its channels")
            return
        eps = float(node.attrs.get("epsilon", 1e-5))
        scale = gamma / np.sqrt(var + eps)
        value = beta + scale * (state.removed_value - mean)
        # Scored channels are cut here: 0 in the masked model (beta with spread |gamma| when compensating);
        # in the original, beta where gamma is 0.
        cut, cut_spread = ctx.cut_value(node.outputs[0], gamma, beta, value)
        fresh = state.before_first_bn | identity_branch(node)
        value = np.where(fresh, cut, value)
        spread = np.where(fresh, cut_spread, np.abs(scale) * state.spread)
        ctx.member(state.map, node.name)
        ctx.add_gamma(state.map, np.where(fresh, np.abs(gamma), np.nan))
        ctx.set_state(node.outputs[0], state.map, value, np.zeros_like(fresh), spread)
        ctx.source(node.outputs[0], fresh)

    def apply(self, node: gs.Node, rw: Rewrite) -> None:
        keep = rw.kept(node.outputs[0])
        if keep is None:
            return
        for i in range(1, 5):
            rw.set_param(node, i, np.asarray(const(node.inputs[i])).reshape(-1)[keep])


def identity_branch(node: gs.Node) -> bool:
    """``node`` is the identity branch of a multi-branch block: its output is only summed (Add, Sum), and
    its input is also read by a Conv (the block's other branches)."""
    readers = node.outputs[0].outputs
    if not readers or any(r.op not in ("Add", "Sum") for r in readers):
        return False
    return any(r.op == "Conv" and r.inputs[0] is node.inputs[0] for r in node.inputs[0].outputs)


@rule("InstanceNormalization")
class InstanceNormRule(ChannelwiseRule):
    """A constant channel normalises to 0 over its spatial extent, so its output is just the bias."""

    def removed_value(self, node: gs.Node, ctx: Analysis, state: TensorState) -> np.ndarray | None:
        scale, bias = const(node.inputs[1]), const(node.inputs[2])
        if scale is None or bias is None or scale.size != state.removed_value.size:
            decline_node(node, ctx, "InstanceNormalization with run-time or mismatched vectors")
            return None
        return np.where(np.isnan(state.removed_value), np.nan, bias.astype(np.float64))

    def apply(self, node: gs.Node, rw: Rewrite) -> None:
        keep = rw.kept(node.outputs[0])
        if keep is not None:
            for i in (1, 2):
                rw.set_param(node, i, np.asarray(const(node.inputs[i]))[keep])
