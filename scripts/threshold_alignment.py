"""Widths left unaligned under ``--threshold 0`` over the zoo's dead-channel variants (docs/coverage.md).

Every topology in tests/data is loaded with seeded weights and 30% of every BN's channels dead (the project's
test loader, tests/weights.py), pruned with ``--threshold 0`` at the default widths (multiples of 8 for
TensorRT), and every width a Conv/Gemm sees that lost channels and is not a multiple of 8 is listed.

    python scripts/threshold_alignment.py            # a table: model, groups pruned, unaligned widths
    python scripts/threshold_alignment.py --list     # and every unaligned width with its consumer
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1] / "tests"
sys.path.insert(0, str(TESTS))

import weights  # noqa: E402

from onnxprune import api  # noqa: E402
from onnxprune.errors import NothingToPruneError  # noqa: E402
from onnxprune.options import PlanOptions  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--list", action="store_true", help="print every unaligned width")
    parser.add_argument("--dead", type=float, default=0.3, help="share of every BN's channels made dead")
    parser.add_argument("models", nargs="*", help="topologies (default: all of tests/data)")
    args = parser.parse_args()
    total = 0
    print(f"{'model':<22} {'pruned groups':>13} {'unaligned':>9}")
    for name in args.models or weights.topologies():
        model = weights.load(name, dead=args.dead)
        try:
            result = api.prune_model(model, PlanOptions(threshold=0.0), api.VerifyOptions(enabled=False))
        except NothingToPruneError:
            print(f"{name:<22} {0:>13} {'-':>9}")
            continue
        groups = result.report["groups"]
        pruned = sum(g["channels_after"] < g["channels_before"] for g in groups)
        left = result.report["unaligned"]
        total += len(left)
        print(f"{name:<22} {pruned:>13} {len(left):>9}")
        if args.list:
            for width in left:
                print(f"    {width['node']}: {width['width']} of {width['of']} (groups {width['groups']})")
    print(f"{'total':<22} {'':>13} {total:>9}")


if __name__ == "__main__":
    main()
