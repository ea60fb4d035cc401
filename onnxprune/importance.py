"""Importance: one score per channel of every group.

- ``gamma`` (Network Slimming): |gamma| of the BatchNormalization that normalises the channel. Where several
  BNs score one group (the BNs of all branches of a residual Add), a channel counts as much as its most
  important BN: it is removed only if every branch rates it low (max over BNs).
- ``l1`` / ``l2``: the norm of each producer's filter, bias included, for groups without BatchNormalization
  (BN folded by an exporter). Several producers: max, as above.
- ``auto`` (default): gamma where every channel of the group has a BN score, the L1 norm otherwise.

A score of exactly 0 means removing the channel changes nothing. A channel with gamma 0 whose removal still
would (a squeeze-excite gate scales the constant it becomes downstream) scores the smallest positive float
instead: ``--threshold 0`` keeps it, a ratio still ranks it first.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from onnxprune.channels.group import ChannelGroup, Decline
from onnxprune.errors import UsageError
from onnxprune.options import ON_DATA, Criterion, choice


@dataclass(frozen=True)
class Scorer:
    """One way to rank a group's channels: ``score(group)`` is one number per channel (higher is more
    important), or None where the group has nothing to rank it by (``missing`` says what)."""

    name: str
    score: Callable[[ChannelGroup], np.ndarray | None]
    missing: str


# Every criterion, by name: adding one is a function and a decorator. ``auto`` and ``activation`` are not
# here: auto tries gamma then l1; activation ranks on calibration data (activation.py).
SCORERS: dict[str, Scorer] = {}
AUTO_ORDER = ("gamma", "l1")


def scorer(name: str, missing: str) -> Callable[[Callable], Callable]:
    def register(score: Callable[[ChannelGroup], np.ndarray | None]) -> Callable:
        SCORERS[name] = Scorer(name, score, missing)
        return score

    return register


@scorer("gamma", "no BatchNormalization scores it")
def _gamma(group: ChannelGroup) -> np.ndarray | None:
    return _complete(group.gamma)


@scorer("l1", "no producer filters to rank")
def _l1(group: ChannelGroup) -> np.ndarray | None:
    return _complete(group.filter_norm)


@scorer("l2", "no producer filters to rank")
def _l2(group: ChannelGroup) -> np.ndarray | None:
    return _complete(group.filter_norm_l2)


def _complete(values: np.ndarray | None) -> np.ndarray | None:
    """Scores only where every channel has one: a group half scored cannot be ranked."""
    return None if values is None or np.isnan(values).any() else values


def score_groups(groups: list[ChannelGroup], criterion: Criterion | str = Criterion.AUTO) -> None:
    """Fill ``group.score`` and ``group.criterion`` (once, while the model is prepared); a group with no
    usable score is declined."""
    criterion = choice(Criterion, criterion, "--criterion")
    if criterion in ON_DATA:
        # Scored on data (activation.py, redundancy.py); without data there is nothing to rank with.
        raise UsageError(f"--criterion {criterion} ranks channels on calibration data: prune with --calib")
    order = AUTO_ORDER if criterion == Criterion.AUTO else (str(criterion),)
    for group in groups:
        chosen, score = _first_score(group, order)
        if score is not None and group.inexact is not None:
            # Scoring exactly 0 is a promise that removing the channel changes nothing (--threshold 0).
            score = np.where((score == 0) & group.inexact, np.nextafter(0.0, 1.0), score)
        group.criterion, group.score = chosen, score
        if score is None and group.prunable:
            why = SCORERS[chosen].missing
            group.declines.append(Decline(f"cannot rank its channels: {why}", ""))


def _first_score(group: ChannelGroup, order: tuple[str, ...]) -> tuple[str, np.ndarray | None]:
    """The first criterion of ``order`` that scores every channel of the group (the last one tried, and
    None, where none does)."""
    for name in order:
        score = SCORERS[name].score(group)
        if score is not None:
            return name, score
    return order[-1], None


# Network Slimming's L1 penalty drives most unneeded gammas to ~0; a model trained without it keeps them
# all of one size. Below this share of near-zero gammas, pruning by |gamma| removes channels that matter.
SLIM_SHARE = 0.05
SLIM_LOW = 1e-2  # "near zero": below this fraction of the 95th percentile of |gamma|


def near_zero_share(groups: list[ChannelGroup]) -> tuple[float, int] | None:
    """(share of |gamma| near zero, channels) over the prunable groups; None with too few gammas."""
    gammas = [g.gamma[~np.isnan(g.gamma)] for g in groups if g.prunable and g.gamma is not None]
    values = np.abs(np.concatenate(gammas)) if gammas else np.zeros(0)
    if values.size < 16:
        return None
    return float(np.mean(values < SLIM_LOW * np.percentile(values, 95))), int(values.size)


def trained_for_slimming(groups: list[ChannelGroup]) -> bool:
    """|gamma| is bimodal: an L1 penalty drove the unneeded channels to zero, so gammas compare across
    layers (Network Slimming's global threshold means something)."""
    found = near_zero_share(groups)
    return found is not None and found[0] >= SLIM_SHARE


def slimming_warning(groups: list[ChannelGroup]) -> str | None:
    """A warning when |gamma| over the prunable groups is not bimodal (no mass near zero)."""
    found = near_zero_share(groups)
    if found is None or found[0] >= SLIM_SHARE:
        return None
    share, channels = found
    return (
        f"|gamma| is not bimodal ({100 * share:.1f}% of {channels} channels near zero): the model was not "
        "trained for slimming, so pruning will lose accuracy; pass --calib to recalibrate and refit"
    )
