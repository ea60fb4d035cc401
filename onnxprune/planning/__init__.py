"""The plan stage: scores → a ``Plan`` (kept channel indices per group), by ratio, threshold or replay
(``make``), every width a consumer sees aligned (``align``), a saved plan read back (``replay``). Drivers
that search over plans (targets, sweep, sensitivity) sit above this and call it many times."""

from onnxprune.channels.plan import Plan
from onnxprune.options import PlanOptions
from onnxprune.planning.draft import Draft
from onnxprune.planning.make import exclude_declines, make_plan, unmatched_excludes
from onnxprune.planning.replay import load_plan, replay_plan

__all__ = [
    "Draft",
    "Plan",
    "PlanOptions",
    "exclude_declines",
    "load_plan",
    "make_plan",
    "replay_plan",
    "unmatched_excludes",
]
