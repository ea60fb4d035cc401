"""Per-layer error of data-free compensation: each consumer's output in the pruned model without and with
the folded constants, against the original's, on the inputs verification feeds (or calibration samples).

The two pruned forms are the compensated reference and its copy with 0 for every constant (rewrite.py):
the original in which every consumer sees its removed channels replaced by the folded constant (what the
pruned model computes, verification has just shown that) or by 0 (what removing them computes). Their
consumer nodes keep the original's names and shapes, so one ONNX Runtime pass of each of the three models,
with the consumers' outputs exposed, gives every layer's error at once; the errors accumulate along the
graph, as in the pruned models themselves. The statistic is the calibration table's: relative MSE, the
squared error over the target's variance per channel, on the layer's kept output channels.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import onnx

from onnxprune.capture import Runner
from onnxprune.data import Samples

CHANNEL_LAST = ("Gemm", "MatMul")


@dataclass
class _Sums:
    """Per output channel: sums of the target, its square, and both squared errors, in float64."""

    t_sum: np.ndarray | float = 0.0
    t_sq: np.ndarray | float = 0.0
    sse: dict[str, np.ndarray | float] = field(default_factory=lambda: {"before": 0.0, "after": 0.0})
    rows: int = 0

    def add(self, target: np.ndarray, got: dict[str, np.ndarray]) -> None:
        self.t_sum = self.t_sum + target.sum(axis=0)
        self.t_sq = self.t_sq + (target**2).sum(axis=0)
        for key, value in got.items():
            self.sse[key] = self.sse[key] + ((value - target) ** 2).sum(axis=0)
        self.rows += target.shape[0]

    def rel_mse(self, key: str) -> float | None:
        """None where the target has no variance to compare with (fewer than two rows)."""
        sst = float(np.sum(self.t_sq - np.asarray(self.t_sum) ** 2 / max(self.rows, 1)))
        if self.rows < 2 or sst <= 1e-30:
            return None
        return float(f"{float(np.sum(self.sse[key])) / sst:.4g}")


class LayerErrors:
    """The three models' consumer outputs, accumulated batch by batch into each layer's errors.

    Roles: ``target`` (the original), ``after`` (the compensated reference), ``before`` (the
    uncompensated one). :meth:`wanted` says which tensors to expose in each; verification exposes them in
    the runs it makes anyway (api.verify_pruning), :func:`layer_errors` in runs of its own.
    """

    def __init__(
        self,
        original: onnx.ModelProto,
        compensated: onnx.ModelProto,
        uncompensated: onnx.ModelProto,
        nodes: Sequence[str],
        kept: dict[str, np.ndarray],
    ) -> None:
        models = {"target": original, "after": compensated, "before": uncompensated}
        self.outputs = {key: _outputs(m, nodes) for key, m in models.items()}
        self.found = [n for n in nodes if all(n in o for o in self.outputs.values())]
        self.ops = {n.name: n.op_type for n in original.graph.node if n.name in set(self.found)}
        self.kept = kept
        self.sums = {name: _Sums() for name in self.found}

    def wanted(self, role: str) -> list[str]:
        """The tensors to expose in the model of ``role``."""
        return [self.outputs[role][n] for n in self.found]

    def add(self, tensors: dict[str, dict[str, np.ndarray]]) -> None:
        """One batch: role -> {tensor name: value}, the same samples in all three."""
        for name in self.found:
            keep = self.kept.get(self.outputs["target"][name])
            rows = {
                role: _rows(tensors[role][self.outputs[role][name]], self.ops[name], keep)
                for role in ("target", "after", "before")
            }
            self.sums[name].add(rows.pop("target"), rows)

    def measure(
        self, models: dict[str, onnx.ModelProto], feeds: Sequence[Samples], static_batch: int | None
    ) -> None:
        """Runs of their own: each role's model cut to its wanted tensors, over ``feeds``."""
        if not self.found:
            return
        runners = {role: Runner(m, self.wanted(role), static_batch) for role, m in models.items()}
        for feed in feeds:
            # Same tensors, same shapes: the three runners cut the feed into the same batches.
            passes = zip(*(runner.run(feed) for runner in runners.values()), strict=True)
            for batch in passes:
                self.add({role: outputs for role, (_, _, outputs) in zip(runners, batch, strict=True)})

    def result(self) -> dict[str, dict[str, float | None]]:
        return {
            name: {"rel_mse_before": s.rel_mse("before"), "rel_mse_after": s.rel_mse("after")}
            for name, s in self.sums.items()
        }


def layer_errors(
    original: onnx.ModelProto,
    compensated: onnx.ModelProto,
    uncompensated: onnx.ModelProto,
    nodes: Sequence[str],
    kept: dict[str, np.ndarray],
    feeds: Sequence[Samples],
    static_batch: int | None,
) -> dict[str, dict[str, float | None]]:
    """Node name -> ``rel_mse_before`` (no compensation), ``rel_mse_after`` (with it), for the consumer
    ``nodes`` found in all three models; ``kept``: tensor name -> kept channel positions (cut tensors)."""
    errors = LayerErrors(original, compensated, uncompensated, nodes, kept)
    errors.measure({"target": original, "after": compensated, "before": uncompensated}, feeds, static_batch)
    return errors.result()


def _outputs(model: onnx.ModelProto, nodes: Sequence[str]) -> dict[str, str]:
    wanted = set(nodes)
    return {n.name: n.output[0] for n in model.graph.node if n.name in wanted and n.output}


def _rows(value: np.ndarray, op: str, keep: np.ndarray | None) -> np.ndarray:
    """[rows, channels] in float64, the kept channels only (a removed output channel is nobody's)."""
    if op in CHANNEL_LAST or value.ndim < 2:
        flat = value.reshape(-1, value.shape[-1])
    else:
        flat = np.moveaxis(value, 1, -1).reshape(-1, value.shape[1])
    flat = flat.astype(np.float64)
    return flat if keep is None else flat[:, keep]
