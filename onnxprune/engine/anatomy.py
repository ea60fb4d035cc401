"""What a plan's bytes are: the weights, and the kernel source a TensorRT-RTX plan carries.

TensorRT-RTX compiles its fused kernels on the GPU when it loads a plan, so the plan holds their CUDA C++
source (each kernel with its own copy of a common prelude): about 3.4 MB for EfficientNet-B0, the same
pruned or not, since pruning changes widths, not kernels. That part does not shrink with the weights, and on
a small model it alone keeps the plan's size ratio well above the parameter ratio; the rest does shrink with
them (docs/tensorrt.md). Source text is found as long runs of printable ASCII: float32 weights, being
binary, practically never form one (the chance of a run of 256 printable bytes is about 0.37^256).
"""

from __future__ import annotations

import re

SOURCE_RUN = 256  # shortest run of printable bytes counted as source text
_TEXT = re.compile(rb"[\x20-\x7e\t\n\r]{%d,}" % SOURCE_RUN)


def source_bytes(plan: bytes) -> int:
    """Bytes of ``plan`` in runs of printable text at least ``SOURCE_RUN`` long (kernel source)."""
    return sum(match.end() - match.start() for match in _TEXT.finditer(plan))
