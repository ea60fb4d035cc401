"""What a deployment engineer reads off a build: the plan's size, the build's seconds, the engine's layer
count, the builder's per-layer record (saved beside the plan as JSON), how the bias maps were handed over
and whether the engine was checked against ONNX Runtime; and a table of builds side by side."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from rich.table import Table

from onnxprune import files
from onnxprune.text import count


@dataclass(frozen=True)
class EngineReport:
    backend: str  # builder and version, "TensorRT-RTX 1.7.1.116"
    size_bytes: int
    build_seconds: float
    layers: int | None  # layers that compute, as the builder lists them; None where it lists none
    layers_source: str
    bias_maps: dict[str, Any]
    fp16: bool
    sparse_weights: bool
    sparse_note: str | None = None  # why sparse weights were asked for and not used
    not_compared: str | None = None  # why the engine was not run against ONNX Runtime
    plan: str | None = None
    layers_json: str | None = None
    # Bytes of kernel source text in the plan (TensorRT-RTX's fused kernels, compiled on the GPU at load):
    # a part that pruning does not shrink (anatomy.py).
    source_bytes: int = 0

    @property
    def rest_bytes(self) -> int:
        """The plan without its kernel source: the weights and the engine's records."""
        return self.size_bytes - self.source_bytes

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def layers_path(plan: Path) -> Path:
    """Where a plan's per-layer JSON goes: beside it, ``m.plan`` → ``m.layers.json``."""
    return plan.with_suffix(".layers.json") if plan.suffix else plan.with_name(plan.name + ".layers.json")


def write_layers(path: Path, report: EngineReport, layers: list[dict[str, Any]]) -> Path:
    payload = {"backend": report.backend, "source": report.layers_source, "layers": layers}
    return files.save_json(payload, path)


def engine_table(rows: list[tuple[str, int | None, dict[str, Any]]], title: str) -> Table:
    """One row per build: ``(label, parameters of its ONNX, EngineReport.to_dict())``; sizes and build
    times also as ratios to the first row, and the plan without its kernel source (``src MB``) as its
    own ratio: the part that shrinks with the weights."""
    table = Table(title=title)
    table.add_column("model", overflow="fold")
    columns = ("params", "MB", "src MB", "MB ratio", "rest ratio", "params ratio", "build s", "s ratio")
    for column in (*columns, "layers"):
        table.add_column(column, justify="right")
    base, base_params = rows[0][2], rows[0][1]
    base_time = base["build_seconds"]
    for label, params, engine in rows:
        params_ratio = f"{params / base_params:.3f}" if params and base_params else "-"
        source = engine.get("source_bytes", 0)
        rest, base_rest = engine["size_bytes"] - source, base["size_bytes"] - base.get("source_bytes", 0)
        table.add_row(
            label,
            count(params) if params is not None else "-",
            f"{engine['size_bytes'] / 2**20:.2f}",
            f"{source / 2**20:.2f}",
            f"{engine['size_bytes'] / base['size_bytes']:.3f}",
            f"{rest / base_rest:.3f}" if base_rest > 0 else "-",
            params_ratio,
            f"{engine['build_seconds']:.2f}",
            f"{engine['build_seconds'] / base_time:.2f}" if base_time > 0 else "-",
            str(engine["layers"]) if engine["layers"] is not None else "-",
        )
    return table
