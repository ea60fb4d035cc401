"""What more than one command prints: the verification of a prune, the fed inputs, a 2:4 report, a build."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.markup import escape

from onnxprune.biasmaps import MapsRecord
from onnxprune.cli.shared import console
from onnxprune.engine.report import engine_table
from onnxprune.report import change_table
from onnxprune.sparsity.tables import fidelity_table, sparsify_table
from onnxprune.verify import NOISE_FACTOR, render_comparison


def print_verification(verification: dict[str, Any]) -> None:
    exact, change = verification["exact"], verification["change"]
    console.print(f"inputs fed: {fed_line(verification['inputs'])}", highlight=False, markup=False)
    console.print(_exact_line(exact), highlight=False)
    sensitivity = _sensitivity_line(exact)
    if sensitivity:
        console.print(sensitivity, highlight=False, markup=False)
    what = "pruning and 2:4" if "change_before_sparsity" in verification else "pruning"
    console.print(
        change_table(change["outputs"], f"change from the original (what {what} did to the outputs)")
    )


def fed_line(inputs: dict[str, Any]) -> str:
    shapes = ", ".join(
        f"{name} [{inputs['dtypes'][name]}, {'x'.join(map(str, dims))}]"
        for name, dims in inputs["shapes"].items()
    )
    return f"{shapes} ({inputs['description']})"


def _exact_line(exact: dict[str, Any]) -> str:
    """The statistic actually tested, for the output closest to its bound."""
    worst = max(exact["outputs"], key=lambda o: (o["max_abs_err"] or 0.0) / max(o["allowed"] or 0.0, 1e-300))
    return (
        f"[green]exact[/]: matches its masked reference; worst output {escape(worst['name'])!r}: "
        f"max|a-b| {_num(worst['max_abs_err'], '.2g')} <= {_num(worst['allowed'], '.2g')}, the larger of "
        f"{exact['atol']:g} + {exact['rtol']:g} * max|a| and {NOISE_FACTOR:g} x the float32 noise floor "
        f"({_num(worst['noise'], '.2g')}); relative error {_num(worst['max_rel_err'], '.2g')}"
    )


def _sensitivity_line(exact: dict[str, Any]) -> str:
    measured = [o for o in exact["outputs"] if o.get("sensitivity") is not None]
    if not measured:
        return ""
    least = min(measured, key=lambda o: o["sensitivity"])
    ratio = max((o["error_per_change"] or 0.0) for o in measured)
    return (
        f"input sensitivity: outputs move {least['sensitivity']:.2g} (relative, least: {least['name']!r}) "
        f"between two different inputs; the surgery error is {ratio:.2g} of that movement"
    )


def _num(value: float | None, spec: str = ".3g") -> str:
    return "-" if value is None else format(value, spec)


def print_sparsity(report: dict[str, Any], output: Path) -> None:
    method = "SparseGPT, calibrated" if report["method"] == "sparsegpt" else "magnitude"
    if not report["sparsified"]:
        console.print("no layer eligible for 2:4; `onnxprune inspect --sparsity` lists the reasons")
        return
    title = f"{output.name}: {report['sparsified']} of {report['candidates']} layers 2:4 ({method})"
    console.print(sparsify_table(report, title))
    console.print(
        f"{report['macs_share']:.1%} of MACs in 2:4 layers; every one checked to hold the pattern "
        "(build with TensorRT's sparse weights: onnxprune build turns them on by itself)"
    )
    if "fidelity" in report:
        console.print(fidelity_table(report["fidelity"]))


def print_sparsity_line(report: dict[str, Any], output: Path) -> None:
    """The 2:4 step in one line (``print_sparsity`` has its tables)."""
    if not report["sparsified"]:
        console.print("no layer eligible for 2:4; `onnxprune inspect --sparsity` lists the reasons")
        return
    method = "SparseGPT, calibrated" if report["method"] == "sparsegpt" else "magnitude"
    console.print(
        f"2:4: {report['sparsified']} of {report['candidates']} layers of {output.name} ({method}), "
        f"{report['macs_share']:.1%} of MACs; every one checked to hold the pattern",
        highlight=False,
        markup=False,
    )


def _source(size: int) -> str:
    return f" ({size / 2**20:.2f} MB of it kernel source, compiled on the GPU at load)" if size else ""


def print_build(result: Any, original: tuple[Path, int | None, dict[str, Any]] | None = None,
                pruned_params: int | None = None) -> None:  # fmt: skip
    """A built plan: what it is and where its layers went, how its bias maps were handed over, and the
    comparison with ONNX Runtime or why none was made; with ``original`` (its ONNX, parameters and
    EngineReport dict) a table of both builds."""
    engine = result.engine
    sparse = "on" if engine.sparse_weights else "off"
    console.print(
        f"[green]built[/] {escape(str(result.plan_path))} with {engine.backend}: "
        f"{engine.size_bytes / 2**20:.2f} MB{_source(engine.source_bytes)} in {engine.build_seconds:.2f} s, "
        f"{engine.layers if engine.layers is not None else 'unlisted'} layers "
        f"(fp16 {'on' if engine.fp16 else 'off'}, sparse weights {sparse}); "
        f"per-layer record ({engine.layers_source}): {escape(str(engine.layers_json))}",
        highlight=False,
    )
    console.print(MapsRecord(**_maps_fields(engine.bias_maps)).line(), highlight=False, markup=False)
    if engine.sparse_note:
        console.print(f"sparse weights not used: {engine.sparse_note}", highlight=False, markup=False)
    if result.comparison is not None:
        console.print(render_comparison(result.comparison, f"{engine.backend} engine vs ONNX Runtime"))
    else:
        console.print(
            f"[yellow]not compared with ONNX Runtime[/]: {escape(str(engine.not_compared))}", highlight=False
        )
    if original is not None:
        name, params, report = original
        rows = [("original", params, report), ("pruned", pruned_params, engine.to_dict())]
        console.print(engine_table(rows, f"{engine.backend}: {name.name} original vs pruned"))


def _maps_fields(record: dict[str, Any]) -> dict[str, Any]:
    keys = ("form", "maps", "converted", "left", "border_max_abs", "border_fraction")
    return {key: record[key] for key in keys if key in record}
