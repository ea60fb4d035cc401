"""Drivers that search over plans, above the pipeline: targets (a MACs, params or latency budget), sweep (a
ladder of targets, one analysis). Each evaluation is a pure function of (prepared model, plan, samples)."""
