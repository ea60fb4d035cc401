"""The one pipeline every driver runs: prepare (load, normalise, analyse, score, count) -> a plan (chosen
by the driver) -> execute (rewrite, report, verify, compensate with data, 2:4).

Stage products: ``Prepared`` (prepare.py), a ``Plan`` value (channels/plan.py, made by planning/ or a
search driver), the ``PruneResult`` (run.py). A stage never mutates what an earlier one returned; the
one late step of prepare, ``rank_on_statistics``, completes its scores once calibration's channel
statistics are measured, before any plan is made.
"""

from onnxprune.pipeline.prepare import Prepared, prepare, rank_on_statistics
from onnxprune.pipeline.run import Execution, PruneResult, execute

__all__ = ["Execution", "Prepared", "PruneResult", "execute", "prepare", "rank_on_statistics"]
