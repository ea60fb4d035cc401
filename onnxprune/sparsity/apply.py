"""sparsify: make every eligible layer's weight 2:4 in place, check it, and measure what it cost.

Selection is by magnitude (the two smallest |w| of each group of four) unless calibration data is given:
then each layer's weight is chosen and updated by SparseGPT from the Gram matrix of its inputs on the fit
part of the data (``sparsegpt.py``), inputs as the earlier layers, already 2:4, produce them (``waves.py``),
and the held-out part measures each layer's output error and the whole model's fidelity. The weights are
overwritten in their constants (through Cast / Transpose / DequantizeLinear, see ``weights.py``): the
output holds one copy of each, and its size is the input's.
After writing, every claimed layer is read back and must satisfy the pattern.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from onnxprune import files
from onnxprune import graph as graphs
from onnxprune.errors import OnnxPruneError, VerificationError
from onnxprune.measure.counter import count
from onnxprune.sparsity import measure, pattern
from onnxprune.sparsity.layers import SparseLayer, find_layers, layout_of
from onnxprune.sparsity.options import SparsifyOptions
from onnxprune.sparsity.sparsegpt import aimed_at_original, output_error, sparsegpt
from onnxprune.sparsity.waves import waves
from onnxprune.sparsity.weights import Declined, resolve


class NothingToSparsify(OnnxPruneError):
    """No layer of the model is eligible; the message summarises why."""


@dataclass
class SparsifyResult:
    original: onnx.ModelProto
    model: onnx.ModelProto
    layers: list[SparseLayer]
    report: dict[str, Any]
    output: Path | None = None


def survey(model: onnx.ModelProto, options: SparsifyOptions | None = None) -> tuple[list[SparseLayer], int]:
    """Every candidate layer with its eligibility, and the model's total MACs (for shares)."""
    options = options or SparsifyOptions()
    options.check()
    _, layers, total = _survey(model, options)
    return layers, total


def _survey(model: onnx.ModelProto, options: SparsifyOptions) -> tuple[gs.Graph, list[SparseLayer], int]:
    graph = gs.import_onnx(graphs.infer_shapes(model))
    counts = count(model, options.shapes)  # the one counter, at the shapes given (else the defaults)
    found = find_layers(graph, min_channels=options.min_channels, layers=options.layers,
                        exclude=options.exclude, macs=counts.nodes)  # fmt: skip
    return graph, found, counts.macs


def sparsify_model(model: onnx.ModelProto, options: SparsifyOptions | None = None) -> SparsifyResult:
    """2:4 on every eligible layer of an in-memory model. With nothing eligible the model is returned
    unchanged and the report says why (``report["sparsified"] == 0``)."""
    options = options or SparsifyOptions()
    options.check()
    samples = measure.calibration(model, options)  # bad data fails before any work
    graph, layers, total = _survey(model, options)
    chosen = [layer for layer in layers if layer.eligible]
    fit, held = samples if samples is not None else (None, None)
    records = _select(model, graph, chosen, fit, held, options)
    # The constants were overwritten in place: the export holds one copy of each weight.
    sparse = graphs.to_model(graph, model) if chosen else model
    post_check(sparse, [layer.name for layer in chosen])
    report = _report(layers, records, total, options)
    if chosen:
        report["fidelity"] = measure.fidelity(model, sparse, held, options.batch, options.shapes)
    return SparsifyResult(model, sparse, layers, report)


def _select(
    model: onnx.ModelProto,
    graph: gs.Graph,
    chosen: list[SparseLayer],
    fit: measure.Samples | None,
    held: measure.Samples | None,
    options: SparsifyOptions,
) -> dict[str, dict[str, Any]]:
    """Makes every chosen layer 2:4 in ``graph``; what each measured, by node name.

    Calibrated SparseGPT goes wave by wave (``waves.py``): each wave's Grams, on the fit and the held-out
    samples, come from the model as sparsified so far, so a layer is fitted to, and measured on, the inputs
    it will see, and aimed at its output in the original model (absorbing the earlier layers' error).
    Otherwise (magnitude, or ``sequential=False``) every Gram comes from ``model`` in one pass.
    """
    if not (options.sequential and fit is not None and options.method == "sparsegpt"):
        grams = measure.layer_grams(model, chosen, fit, held, options.batch)
        return {layer.name: _sparsify_layer(layer, grams, options) for layer in chosen}
    records: dict[str, dict[str, Any]] = {}
    for wave in waves(graph, chosen):
        # The graph's constants hold every earlier wave's 2:4 weights by now.
        current = graphs.to_model(graph, model) if records else model
        # Behind 2:4 layers, each is aimed at its output in the original (sparsegpt.aimed_at_original).
        grams = measure.layer_grams(current, wave, fit, held, options.batch, model if records else None)
        records.update({layer.name: _sparsify_layer(layer, grams, options) for layer in wave})
        del current, grams  # one exported copy of the weights at a time
    return records


def _sparsify_layer(layer: SparseLayer, grams: dict, options: SparsifyOptions) -> dict[str, Any]:
    """Overwrites the layer's stored weight with its 2:4 version; returns what it measured."""
    assert layer.weight is not None and layer.layout is not None
    value = layer.weight.values()
    rows = layer.layout.to_rows(value).astype(np.float64)
    magnitude = np.where(pattern.magnitude_mask(rows), 0.0, rows)
    fit, held = grams.get(layer.name, (None, None))
    calibrated = fit is not None and options.method == "sparsegpt"
    if calibrated:
        new = sparsegpt(aimed_at_original(rows, fit, options.damp), fit.ss, damp=options.damp)
    else:
        new = magnitude
    layer.weight.store(layer.layout.from_rows(new).astype(value.dtype))
    # Measured on what was stored: FP16 and int8 weights round on the way back.
    new = layer.layout.to_rows(layer.weight.values()).astype(np.float64)
    record: dict[str, Any] = {
        "sparsified": True,
        "weight_error": float(np.linalg.norm(rows - new)) / max(float(np.linalg.norm(rows)), 1e-30),
    }
    if held is not None:
        # Against the layer's output in the original model, on the inputs it sees here.
        record["output_error"] = output_error(rows, new, held.ss, held.cross, held.oo)
        record["magnitude_output_error"] = output_error(rows, magnitude, held.ss, held.cross, held.oo)
    return record


def post_check(model: onnx.ModelProto, names: list[str]) -> None:
    """Every layer in ``names`` reads back, from ``model`` itself, as 2:4 (else VerificationError)."""
    if not names:
        return
    graph = gs.import_onnx(model)
    nodes = {node.name: node for node in graph.nodes}
    for name in names:
        node = nodes.get(name)
        if node is None:
            raise VerificationError(f"sparsified layer {name!r} is missing from the written model")
        try:
            weight = resolve(node)
            value = weight.values()
        except Declined as why:
            raise VerificationError(f"sparsified layer {name!r} does not read back: {why}") from None
        layout = layout_of(node, value)
        if not pattern.is_24(value, layout):
            bad = pattern.violations(value, layout)
            raise VerificationError(f"layer {name!r} claimed 2:4 has {bad} groups of four with < 2 zeros")


def _report(
    layers: list[SparseLayer], records: dict[str, dict], total: int, options: SparsifyOptions
) -> dict[str, Any]:
    rows = []
    for layer in layers:
        row = layer.to_dict(total)
        row.update(records.get(layer.name, {"sparsified": False}))
        rows.append(row)
    done = [row for row in rows if row["sparsified"]]
    return {
        "method": options.method,
        "options": {"min_channels": options.min_channels, "layers": list(options.layers),
                    "exclude": list(options.exclude), "damp": options.damp, "holdout": options.holdout,
                    "selection": options.selection, "sequential": options.sequential,
                    "shapes": {name: list(dims) for name, dims in options.shapes.items()}},
        "grams": _grams_from(options) if any(row.get("output_error") is not None for row in done) else None,
        "candidates": len(rows),
        "sparsified": len(done),
        "macs_share": float(sum(row["macs_share"] for row in done)),
        "layers": rows,
    }  # fmt: skip


def _grams_from(options: SparsifyOptions) -> str:
    """Which activations the per-layer Grams (and held-out output errors) were taken from."""
    if options.sequential and options.method == "sparsegpt":
        return "sequential: each layer's inputs with earlier layers 2:4, aimed at the original's output"
    return "one pass: each layer's inputs in the original model"


def nothing_eligible(layers: list[SparseLayer], where: str) -> str:
    """One line: no eligible layer in ``where``, and the commonest reasons."""
    if not layers:
        return f"{where}: no Conv, Gemm or MatMul layer to make 2:4"
    reasons: dict[str, int] = {}
    for layer in layers:
        key = (layer.reason or "").split(":")[0].split(" (")[0]
        reasons[key] = reasons.get(key, 0) + 1
    top = "; ".join(f"{n} {why}" for why, n in sorted(reasons.items(), key=lambda kv: -kv[1])[:3])
    return (
        f"{where}: none of its {len(layers)} Conv/Gemm/MatMul layers is eligible for 2:4 ({top}); "
        "`onnxprune inspect --sparsity` lists each with its reason"
    )


def sparsify(
    source: str | Path,
    output: str | Path,
    options: SparsifyOptions | None = None,
    *,
    external_data: bool | None = None,
    before_save: Callable[[SparsifyResult], object] | None = None,
) -> SparsifyResult:
    """Sparsify a file into another. Nothing is written when no layer is eligible (NothingToSparsify).
    ``before_save(result)`` runs before the model is written (the CLI writes the report then): if it
    raises, the model is not written."""
    options = options or SparsifyOptions()
    options.check()
    output = files.check_output_path(output, [source])
    result = sparsify_model(files.read_model(source), options)
    if result.report["sparsified"] == 0:
        raise NothingToSparsify(nothing_eligible(result.layers, str(source)) + "; nothing written")
    if external_data is None and files.uses_external_data(source):
        external_data = True
    if before_save is not None:
        before_save(result)
    files.save_model(result.model, output, external_data=external_data)
    result.output = output
    return result


def holds_24(model: onnx.ModelProto) -> bool:
    """Whether any Conv/Gemm/MatMul weight of the model already satisfies 2:4 (and is not all zero)."""
    layers, _ = survey(model, SparsifyOptions(min_channels=1))
    return any(layer.already for layer in layers)
