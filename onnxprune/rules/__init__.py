"""One rule per ONNX op type. Importing this package registers them all."""

from onnxprune.rules import (  # noqa: F401  (imported for their @rule registrations)
    batchnorm,
    concat,
    conv,
    conv_transpose,
    elementwise,
    gemm,
    misc,
    pool,
    reshape,
    resize,
    split,
)
from onnxprune.rules.base import NO_RULE, RULES, Rule, rule, rule_for

__all__ = ["NO_RULE", "RULES", "Rule", "rule", "rule_for"]
