"""The rewrite stage of the pipeline: (prepared, plan) -> the pruned model, validated and run once by ONNX
Runtime; a group whose pruning breaks that is found and declined (isolate.py), the rest is pruned.

Every rewrite works on a copy of the prepared graph (weights are shared, not copied), so one prepared
model serves any number of plans.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from typing import Any

import onnx

from onnxprune import files
from onnxprune.channels import Plan
from onnxprune.channels.rebuild import Rebuilt
from onnxprune.errors import OriginalRunError, ValidationError
from onnxprune.graph import to_model
from onnxprune.pipeline.isolate import Trial, decline_breaking_groups
from onnxprune.pipeline.prepare import Prepared
from onnxprune.rewrite import apply_plan, validate
from onnxprune.runtime import PendingCheck, check_runs

# Per plan, how its removed channels are rebuilt (compensate/rebuild.py); None: the analysis' constants.
Rebuild = Callable[[Plan], Mapping[str, Rebuilt]] | None


def rewritten(prepared: Prepared, plan: Plan, rebuild: Rebuild = None) -> onnx.ModelProto:
    """The model pruned by ``plan``, validated (checker and strict shape inference), not run."""
    rebuilt = rebuild(plan) if rebuild is not None else None
    graph = apply_plan(prepared.graph.copy(), prepared.analysis, plan, rebuilt)
    return validate(to_model(graph, prepared.model))


def attempt(
    prepared: Prepared, plan: Plan, feeds: Any, defer: bool = False, rebuild: Rebuild = None
) -> Trial:
    """Rewrite, validate, run: the pruned model, or the ValidationError the plan caused. ``defer``: the
    run goes on in a thread (``Trial.pending``)."""
    try:
        pruned = rewritten(prepared, plan, rebuild)
        # Serialised once: ONNX Runtime checks these bytes, and they are what is saved.
        data = None if files.needs_external_data(pruned) else pruned.SerializeToString()
        if defer:
            pending = PendingCheck(prepared.model, pruned, feeds=feeds, serialized=data)
            return Trial(plan, pruned, None, data, pending)
        check_runs(prepared.model, pruned, feeds=feeds, serialized=data)
    except OriginalRunError:
        raise  # the original fails on these inputs: no group is to blame
    except ValidationError as err:
        return Trial(plan, None, err)
    return Trial(plan, pruned, None, data)


def rewrite(
    prepared: Prepared, plan: Plan, feeds: Any, defer: bool = False, rebuild: Rebuild = None
) -> Trial:
    """``attempt``, and where it fails, the plan without the groups that break the model (declined)."""
    trial = attempt(prepared, plan, feeds, defer=defer, rebuild=rebuild)
    if trial.error is None:
        return trial
    retry = functools.partial(attempt, prepared, feeds=feeds, rebuild=rebuild)
    return decline_breaking_groups(prepared.groups, plan, retry)
