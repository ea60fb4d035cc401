"""Measure, beside the pipeline stages: MAC and parameter counts, latency, sweeps over targets, plots."""

from onnxprune.measure.counter import Counts, count

__all__ = ["Counts", "count"]
