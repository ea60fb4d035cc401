"""Property tests on random CNN graphs (tests/fuzz_graphs.py): pruning never produces a wrong model.

- ``threshold=0`` (round_to 1, min_keep 1) removes only dead channels and is exact against the original;
- any ratio plan gives a model that passes onnx.checker, runs in ONNX Runtime with the original's output
  shapes, matches its masked reference, and keeps round_to / min_keep in every group;
- ``api.inspect`` never crashes and scores or declines every group.

CI runs ``ONNXPRUNE_FUZZ_EXAMPLES`` examples per property (default 40) with a derandomized, database-free
profile, so a run is the same every time; ``make fuzz`` runs 2000. ``ONNXPRUNE_FUZZ_RANDOM=1`` draws fresh
examples instead. A failure prints the generated graph as the Python that rebuilds it (``note``).
"""

from __future__ import annotations

import os

import fuzz_graphs
import numpy as np
import onnx
import pytest
import tiny
from hypothesis import HealthCheck, given, note, settings

from onnxprune import api
from onnxprune.errors import NothingToPruneError
from onnxprune.options import PlanOptions

EXAMPLES = int(os.environ.get("ONNXPRUNE_FUZZ_EXAMPLES", "40"))
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=os.environ.get("ONNXPRUNE_FUZZ_RANDOM", "") in ("", "0"),
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    print_blob=True,
)


def prune(model: onnx.ModelProto, options: PlanOptions) -> api.PruneResult | None:
    """The pruned result, or None where the model has nothing to prune: then the refusal must be true
    (every group declined, as inspect sees it)."""
    try:
        return api.prune_model(model, options)
    except NothingToPruneError:
        found = api.inspect(model, options.criterion, options.compensate)
        assert not any(g.prunable and g.score is not None for g in found.groups), "refused a prunable model"
        return None


def _run(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    return tiny.outputs(model, seed=0)


@FUZZ
@given(graph=fuzz_graphs.graphs())
def test_threshold_zero_is_exact(graph: fuzz_graphs.FuzzGraph) -> None:
    note(graph.describe())
    result = prune(graph.model, PlanOptions(threshold=0.0, round_to=1, min_keep=1))
    if result is None:
        return
    tiny.assert_exact(graph.model, result.pruned)
    tiny.assert_exact(result.masked, result.pruned)
    for group in result.groups:
        keep = result.plan.keep(group)
        if result.plan.prunable(group) and keep is not None and group.score is not None:
            alive = np.flatnonzero(np.asarray(group.score) > 0)
            assert np.isin(alive, keep).all(), f"group {group.id} lost a live channel"


@FUZZ
@given(graph=fuzz_graphs.graphs(exact=False), kwargs=fuzz_graphs.plan_options())
def test_any_plan_is_valid_and_matches_its_masked_reference(graph: fuzz_graphs.FuzzGraph, kwargs) -> None:
    note(graph.describe())
    note(f"PlanOptions(**{kwargs!r})")
    options = PlanOptions(**kwargs)
    result = prune(graph.model, options)
    if result is None:
        return
    onnx.checker.check_model(result.pruned, full_check=True)
    before, after = _run(graph.model), _run(result.pruned)
    assert {k: v.shape for k, v in after.items()} == {k: v.shape for k, v in before.items()}
    assert result.masked is not None
    tiny.assert_exact(result.masked, result.pruned)
    check_counts(result.groups, result.plan, options)


def check_counts(groups, plan, options: PlanOptions) -> None:
    """Kept counts: never zero, the channels the analysis must keep are kept, and a multiple of round_to
    (or the whole group) that is at least min(min_keep, size). The chunks of a grouped Conv (a tie) keep
    one count, and round_to and min_keep hold for their total, which is what the kernel sees."""
    ties: dict[int, list] = {}
    for g in groups:
        keep = plan.keep(g)
        if keep is None:
            continue
        kept = len(keep)
        assert 1 <= kept <= g.size, (g.id, kept, g.size)
        assert len(np.unique(keep)) == kept and (np.diff(keep) > 0).all()
        if g.must_keep is not None:
            assert np.isin(np.flatnonzero(g.must_keep), keep).all(), f"group {g.id} lost a must-keep"
        if g.tie >= 0:
            ties.setdefault(g.tie, []).append(g)
        else:
            assert kept % options.round_to == 0 or kept == g.size, (g.id, kept, g.size)
            assert kept >= min(options.min_keep, g.size), (g.id, kept, g.size)
    for members in ties.values():
        counts = {plan.kept_count(g) for g in members}
        assert len(counts) == 1, f"tied groups keep different counts {counts}"
        kept, size = counts.pop(), sum(g.size for g in members)
        total = kept * len(members)
        assert total % options.round_to == 0 or all(kept == g.size for g in members), (total, kept)
        assert total >= min(options.min_keep, size), (total, size)


@FUZZ
@given(graph=fuzz_graphs.graphs(exact=False))
def test_inspect_never_crashes(graph: fuzz_graphs.FuzzGraph) -> None:
    from onnxprune.report import group_summary

    note(graph.describe())
    found = api.inspect(graph.model)
    for group in found.groups:
        assert group.prunable == (not group.declines)
        if group.prunable:
            assert group.score is not None and len(group.score) == group.size
        group_summary(group, found.macs, found.group_macs.get(group.id, 0))


def test_generator_replays_and_describes() -> None:
    """The note a failure prints is enough to rebuild the graph, and every block kind builds."""
    b = fuzz_graphs.GraphBuilder(seed=7, opset=18)
    x = b.cbr(0, 12, act="Sigmoid", dead=0.5)
    last = b.split(x, [4, 4, 4], even=True)
    y = b.se(b.add(last, last - 1), 3, dead_filters=0.5)
    z = b.grouped(b.depthwise(y, stride=2), 2, 5)
    r = b.maxpool(b.concat([b.residual(x, 6, act="HardSigmoid", post="Relu"), x]))
    model = b.finish([(z, "flatten_gemm"), (last - 2, "gap_gemm"), (y, "raw"), (r, "gap_gemm")])
    onnx.checker.check_model(model, full_check=True)
    text = b.describe()
    assert text.startswith("b = GraphBuilder(seed=7") and "b.se(" in text
    _, again = fuzz_graphs.replay(b.seed, b.in_channels, b.hw, b.opset, b.calls)
    assert again.SerializeToString() == model.SerializeToString()
    result = tiny.prune_dead(model)
    assert tiny.removed_channels(result) > 0
    tiny.assert_exact(model, result.pruned)


# ---- bugs the fuzzer found, minimised --------------------------------------------------------------------
@pytest.mark.parametrize("cut", ["split", "slice"])
def test_split_piece_is_never_pruned_to_zero_channels(cut: str) -> None:
    """Conv(3→2) → BN (channel 1 dead) → Relu → Split [1, 1] (or Slice [1:2]) → GAP heads: the piece holding
    channel 1 once lost every channel (a 0-channel tensor ORT cannot pool); now each piece is a group."""
    b = fuzz_graphs.GraphBuilder(seed=0)
    x = b.cbr(0, 2, dead=0.0)
    if cut == "split":
        last = b.split(x, [1, 1])
        heads = [(last - 1, "gap_gemm"), (last, "gap_gemm")]
    else:
        heads = [(b.slice(x, 1, 2), "gap_gemm"), (x, "gap_gemm")]
    model = b.finish(heads)
    bn = next(n for n in model.graph.node if n.op_type == "BatchNormalization")
    for name in bn.input[1:3]:  # gamma and beta of channel 1 -> 0: exactly dead
        init = next(t for t in model.graph.initializer if t.name == name)
        values = onnx.numpy_helper.to_array(init).copy()
        values[1] = 0.0
        init.CopyFrom(onnx.numpy_helper.from_array(values, name))
    result = tiny.prune_dead(model)
    tiny.assert_exact(model, result.pruned)
    # Not vacuous: the Split/Slice is followed (its group prunable and planned), and the dead channel is
    # kept only because it is the last one of its piece.
    op = "Split" if cut == "split" else "Slice"
    node = next(n.name for n in model.graph.node if n.op_type == op)
    group = next(g for g in result.groups if node in g.nodes)
    assert group.prunable, f"the {op} was declined: {[str(d) for d in group.declines]}"
    keep = result.plan.keep(group)
    assert keep is not None and list(keep) == [0, 1]
    assert any(n.op_type == op for n in result.pruned.graph.node)
