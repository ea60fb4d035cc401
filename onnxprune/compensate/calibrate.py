"""Calibrate: fit the pruned model back to the original on unlabeled samples (``--compensate calib``).

Steps (each usable alone, in this order):
- ``bias``: each consumer of a pruned tensor that is not refitted moves its bias by the mean difference
  between the original layer's output and its own (the empirical mean of what the removed channels carried);
- ``refit``: each consumer Conv/Gemm/MatMul is refitted by ridge least squares (refit.py) to reproduce the
  original layer's output from the pruned model's actual inputs; a layer it declines (too few sampled
  rows for its unknowns, a weight computed at run time) gets the ``bias`` step instead;
- ``bn``: running statistics of the BNs downstream of a change are re-estimated (bnstats.py).

Consumers are fitted in waves by depth (number of consumers on the longest path before them): one ONNX
Runtime pass per wave, cut down to what that wave needs, so later waves see (and absorb) the errors left by
earlier ones. By default every depth is its own wave, so no layer is fitted on inputs that a refit before it
has since changed: banding depths into fewer waves (``waves``) saves passes, but a layer downstream of
another in its band is then fitted to inputs that no longer exist once that one is refitted, and on models
whose refits move their outputs far (PP-LCNet: hard-swish and squeeze-excite blocks) the stale fits undo
the gains (docs/real_models.md). The targets come from one pass of the original, at
sampled positions. The last ``holdout`` of the samples is never fitted on: it measures the end-to-end
fidelity before and after.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx
from onnx import helper, numpy_helper

from onnxprune import fidelity
from onnxprune.capture import Runner, for_each_batch
from onnxprune.compensate import bnstats
from onnxprune.compensate.blas import one_blas_thread
from onnxprune.compensate.layers import Layer, find_layers
from onnxprune.compensate.refit import LayerFit, gather_target, output_positions
from onnxprune.data import Samples, count, split_holdout
from onnxprune.errors import UsageError

# Bytes of original outputs kept at sampled positions, all layers together.
TARGET_BYTES = 256 * 2**20
# A refit needs at least this many sampled rows per unknown (weights and bias of one output); with fewer the
# ridge fit interpolates the fit data (a classifier after a global pool: one row per sample) and moves
# held-out outputs further than it corrects them. Such a layer gets the bias step instead.
ROWS_PER_UNKNOWN = 2


@dataclass
class CalibOptions:
    # Measured on the MNIST models (README): refit alone is best or level; adding bn lost 16 pp on one.
    steps: tuple[str, ...] = ("rebuild", "refit")
    holdout: float = 0.1
    positions: int = 32  # output positions sampled per sample and Conv layer
    ridge: float = 1e-3  # relative to the mean diagonal of the Gram matrix
    waves: int | None = None  # None: one wave per depth; N: depths banded into at most N waves
    seed: int = 0

    def check(self) -> None:
        unknown = [s for s in self.steps if s not in STEPS]
        if unknown or not self.steps:
            raise UsageError(
                f"--calib-steps takes a comma list of {', '.join(STEPS)}; got {','.join(self.steps)}"
            )
        if self.positions < 1 or (self.waves is not None and self.waves < 1) or self.ridge < 0:
            raise UsageError("calibration positions and waves must be at least 1, ridge at least 0")
        if not 0 < self.holdout < 1:
            raise UsageError(f"held-out fraction must be in (0, 1), got {self.holdout}")


@dataclass
class Calibration:
    model: onnx.ModelProto
    report: dict[str, Any] = field(default_factory=dict)


@one_blas_thread
def calibrate(
    original: onnx.ModelProto,
    pruned: onnx.ModelProto,
    kept: dict[str, np.ndarray],
    samples: Samples,
    options: CalibOptions | None = None,
    *,
    static_batch: int | None = None,
) -> Calibration:
    """The pruned model fitted back to the original on ``samples`` (which hold the calibration data only).

    Args:
        original: the unpruned model; pruned: its pruned form (same node names), modified in place.
        kept: tensor name -> kept positions of its channel axis, for every tensor that lost channels.
        samples: by input name, batch axis 0 (data.load_calibration).
        static_batch: the model's fixed batch, if any (data.static_batch); calibration tries larger ones.
    """
    options = options or CalibOptions()
    options.check()
    began = time.perf_counter()
    fit, held = split_holdout(samples, options.holdout)
    used_before = _used(pruned)
    uncalibrated = onnx.ModelProto()
    uncalibrated.CopyFrom(pruned)  # what a fit that does worse on the held-out samples falls back to
    layers = find_layers(original, pruned, kept)
    state = _Targets(layers, count(fit), options)
    held_reference = state.capture(
        original, samples, count(fit), static_batch, [o.name for o in original.graph.output]
    )
    before = _fidelity(pruned, held, held_reference, static_batch)
    work = _Work(pruned, [la for la in layers if la.name not in state.unmatched], state, fit, static_batch)
    report: dict[str, Any] = {"layers": _unmatched(layers, state)}
    for step in dict.fromkeys(STEP_RUNS[name] for name in STEPS if name in options.steps):
        step(work, options, report)
    _drop_orphans(pruned, used_before)
    after = _fidelity(pruned, held, held_reference, static_batch)
    report.update(
        steps=list(options.steps),
        samples={"fit": count(fit), "held_out": count(held)},
        positions=state.positions,
        ridge=options.ridge,
        fidelity={"before": before, "after": after},
        seconds=round(time.perf_counter() - began, 2),
    )
    if _damage(after) > _damage(before):
        # The fit moved the held-out outputs further from the original than it found them: keep the model
        # as it was. A refit can only be trusted as far as samples it never saw agree.
        report["reverted"] = (
            f"the held-out damage rose from {_damage(before):.4g} to {_damage(after):.4g}: "
            "the calibrated weights were dropped"
        )
        return Calibration(uncalibrated, report)
    return Calibration(pruned, report)


@dataclass
class _Work:
    """What every calibration step works on: the pruned model (changed in place), its layers that can be
    fitted, the original's targets at sampled positions, the fit samples."""

    pruned: onnx.ModelProto
    layers: list[Layer]
    targets: _Targets
    fit: Samples
    static_batch: int | None


def _unmatched(layers: list[Layer], state: _Targets) -> list[dict[str, Any]]:
    return [
        {"node": la.name, "op": la.op, "applied": "none", "refit_declined": state.unmatched[la.name]}
        for la in layers
        if la.name in state.unmatched
    ]


def _rebuilt(work: _Work, options: CalibOptions, report: dict[str, Any]) -> None:
    """The rebuild happens where the model is rewritten (compensate/rebuild.py): nothing left to do."""


def _fit_layers(work: _Work, options: CalibOptions, report: dict[str, Any]) -> None:
    """Each consumer refitted (or its bias moved), one wave of depths at a time."""
    waves = _waves(work.pruned, work.layers, options.waves)
    for wave in waves:
        # One wave's normal equations at a time: memory is the largest wave's, not all layers'.
        fits = {layer.name: LayerFit(layer) for layer in wave}
        _accumulate(work.pruned, wave, fits, work.targets, work.fit, work.static_batch)
        for layer_fit in fits.values():
            layer_fit.release()
        report["layers"].extend(_apply(work.pruned, fits[layer.name], options) for layer in wave)
        del fits
    report["waves"] = len(waves)


def _bn_step(work: _Work, options: CalibOptions, report: dict[str, Any]) -> None:
    report["bn"] = _batchnorms(work.pruned, work.layers, work.fit, work.static_batch)


# Every step by name, in the order they run (each usable alone): rebuild (at the rewrite: removed channels
# rebuilt from the kept ones, compensate/rebuild.py), then per consumer bias or refit, then bn. A new step
# is a function of (work, options, report) and its name here.
STEP_RUNS = {"rebuild": _rebuilt, "bias": _fit_layers, "refit": _fit_layers, "bn": _bn_step}
STEPS = tuple(STEP_RUNS)


class _Targets:
    """The original's outputs at sampled positions per layer, for the fit samples."""

    def __init__(self, layers: Sequence[Layer], total: int, options: CalibOptions) -> None:
        self.layers = [layer for layer in layers]
        self.total = total
        self.options = options
        self.positions = options.positions
        self.index: dict[str, np.ndarray] = {}  # layer -> [N, P] flat positions
        self.values: dict[str, np.ndarray] = {}  # layer -> [N, P, K]
        self.unmatched: dict[str, str] = {}  # layer -> why its output cannot be matched to the original's

    def capture(
        self,
        original: onnx.ModelProto,
        samples: Samples,
        fit_count: int,
        static_batch: int | None,
        outputs: list[str],
    ) -> dict[str, np.ndarray]:
        """One pass of the original: targets for the fit samples, graph outputs for the held-out ones."""
        names = sorted({layer.target for layer in self.layers})
        held: dict[str, list[np.ndarray]] = {name: [] for name in outputs}
        for start, stop, values in Runner(original, list(dict.fromkeys(names + outputs)), static_batch).run(
            samples
        ):
            if start < fit_count:
                self._store(values, start, min(stop, fit_count) - start)
            if stop > fit_count:
                for name in outputs:
                    held[name].append(values[name][max(fit_count - start, 0) :])
        return {name: np.concatenate(parts) for name, parts in held.items()}

    def _store(self, values: dict[str, np.ndarray], start: int, size: int) -> None:
        for layer in self.layers:
            y = values[layer.target][:size]
            if layer.name in self.unmatched:
                continue
            if layer.name not in self.index:
                self._allocate(layer, y.shape)
            if layer.name in self.unmatched:
                continue
            rows = self.index[layer.name][start : start + size]
            self.values[layer.name][start : start + size] = gather_target(layer, y, rows)

    def _allocate(self, layer: Layer, shape: tuple[int, ...]) -> None:
        spots = output_positions(layer, shape)
        width = (
            len(layer.kept_out)
            if layer.kept_out is not None
            else (shape[1] if layer.op == "Conv" else shape[-1])
        )
        if width != layer.weight.shape[0]:
            self.unmatched[layer.name] = f"{width} target channels for {layer.weight.shape[0]} outputs"
            return
        # Enough rows for the refit where the layer has the positions, whatever the shared budget says.
        needed = -(-ROWS_PER_UNKNOWN * (int(np.prod(layer.weight.shape[1:])) + 1) // max(self.total, 1))
        per = min(spots, max(self._budget_positions(), min(needed, self.options.positions)))
        rng = np.random.default_rng([self.options.seed, len(self.index)])
        if per == spots:
            index = np.broadcast_to(np.arange(spots), (self.total, spots)).copy()
        else:
            index = np.argsort(rng.random((self.total, spots)), axis=1)[:, :per]
        self.index[layer.name] = index
        self.values[layer.name] = np.zeros((self.total, per, width), np.float32)

    def _budget_positions(self) -> int:
        channels = sum(
            max(len(la.kept_out) if la.kept_out is not None else la.weight.shape[0], 1) for la in self.layers
        )
        affordable = TARGET_BYTES // max(4 * self.total * channels, 1)
        self.positions = int(max(1, min(self.options.positions, affordable)))
        return self.positions


def _waves(model: onnx.ModelProto, layers: list[Layer], waves: int | None) -> list[list[Layer]]:
    """Layers by depth (consumers before them on the longest path), one wave per depth, or the depths cut
    into ``waves`` bands."""
    by_name = {layer.name: layer for layer in layers}
    depth: dict[str, int] = {}
    layer_depth: dict[str, int] = {}
    for node in model.graph.node:
        d = max((depth.get(name, 0) for name in node.input), default=0)
        if node.name in by_name:
            layer_depth[node.name] = d
            d += 1
        for name in node.output:
            depth[name] = d
    levels = sorted(set(layer_depth.values()))
    bands = np.array_split(np.array(levels), min(waves or len(levels), len(levels))) if levels else []
    return [[la for la in layers if layer_depth[la.name] in set(band.tolist())] for band in bands]


def _accumulate(
    model: onnx.ModelProto,
    wave: list[Layer],
    fits: dict[str, LayerFit],
    targets: _Targets,
    samples: Samples,
    static_batch: int | None,
) -> None:
    def visit(start: int, stop: int, values: dict[str, np.ndarray]) -> None:
        for layer in wave:
            index = targets.index[layer.name][start:stop]
            target = targets.values[layer.name][start:stop]
            fits[layer.name].add(values[layer.input], index, target)

    for_each_batch(model, sorted({layer.input for layer in wave}), samples, static_batch, visit)


def _apply(model: onnx.ModelProto, fit: LayerFit, options: CalibOptions) -> dict[str, Any]:
    layer = fit.layer
    record: dict[str, Any] = {"node": layer.name, "op": layer.op, "rows": fit.rows()}
    current = fit.current()
    before = fit.error(current)  # each error costs a [D, D] x [D, K] product: computed once
    record["rel_mse_before"] = _round(before)
    if layer.decline is None and fit.rows() < ROWS_PER_UNKNOWN * fit.unknowns():
        layer.decline = (
            f"{fit.rows()} sampled rows for {fit.unknowns()} unknowns per output "
            f"(a refit needs {ROWS_PER_UNKNOWN}x as many)"
        )
    if layer.decline is not None:
        record["refit_declined"] = layer.decline
    mode = _mode(layer, options.steps)
    if mode is None:
        record.update(applied="none", rel_mse_after=record["rel_mse_before"])
        return record
    with_bias = layer.op != "MatMul" or layer.bias_name is not None
    new = fit.fit(mode, options.ridge, with_bias)
    after = fit.error(new)
    if after >= before:
        record.update(applied="none", rel_mse_after=record["rel_mse_before"], note="no gain on the fit data")
        return record
    weight, bias = fit.unpack(new)
    _write_layer(model, layer, weight, bias)
    layer.weight, layer.bias = weight, bias
    record.update(applied=mode, rel_mse_after=_round(after))
    return record


def _mode(layer: Layer, steps: Sequence[str]) -> str | None:
    if "refit" in steps and layer.decline is None:
        return "refit"
    # A layer the refit declines gets the bias step instead (its mean error is still worth removing). A
    # MatMul has no bias of its own to move (without the Add after it that serves as one).
    if (
        ("bias" in steps or "refit" in steps)
        and (layer.op != "MatMul" or layer.bias_name is not None)
        and layer.weight.size
    ):
        return "bias"
    return None


def _round(value: float) -> float:
    return float(f"{value:.4g}")


def _write_layer(model: onnx.ModelProto, layer: Layer, weight: np.ndarray, bias: np.ndarray) -> None:
    node = next(n for n in model.graph.node if n.name == layer.name)
    dtype = _dtype(model, node.input[1])
    if layer.op == "Conv":
        stored = weight
    elif layer.op == "Gemm":
        transposed = any(a.name == "transB" and a.i for a in node.attribute)
        stored = weight if transposed else weight.T
        kept = [a for a in node.attribute if a.name not in ("alpha", "beta")]
        del node.attribute[:]
        node.attribute.extend(kept)
    else:
        stored = weight.T
    node.input[1] = _add_init(model, f"{layer.name}__calib_w", stored.astype(dtype))
    if layer.op == "MatMul":
        if layer.bias_name is not None:
            add = next(
                n for n in model.graph.node if layer.bias_name in n.input and n.output[0] == layer.output
            )
            shape = numpy_helper.to_array(
                next(t for t in model.graph.initializer if t.name == layer.bias_name)
            ).shape
            add.input[list(add.input).index(layer.bias_name)] = _add_init(
                model, f"{layer.name}__calib_b", bias.reshape(shape).astype(dtype)
            )
        return
    name = _add_init(model, f"{layer.name}__calib_b", bias.astype(dtype))
    if len(node.input) > 2:
        node.input[2] = name
    else:
        node.input.append(name)


def _dtype(model: onnx.ModelProto, name: str) -> np.dtype:
    tensor = next(t for t in model.graph.initializer if t.name == name)
    return np.dtype(helper.tensor_dtype_to_np_dtype(tensor.data_type))


def _add_init(model: onnx.ModelProto, hint: str, value: np.ndarray) -> str:
    taken = {t.name for t in model.graph.initializer}
    name, k = hint, 0
    while name in taken:
        k += 1
        name = f"{hint}_{k}"
    model.graph.initializer.append(numpy_helper.from_array(np.ascontiguousarray(value), name))
    return name


def _batchnorms(
    model: onnx.ModelProto,
    layers: list[Layer],
    samples: Samples,
    static_batch: int | None,
) -> dict[str, Any]:
    if bnstats.opset(model) < bnstats.MIN_OPSET:
        found = bnstats.opset(model)
        return {"declined": f"opset {found} < {bnstats.MIN_OPSET}: no training-mode BatchNormalization"}
    changed = {layer.name for layer in layers}
    nodes = bnstats.targets(model, changed)
    updates = bnstats.reestimate(model, nodes, samples, static_batch)
    return {"count": len(updates), "nodes": [u.__dict__ for u in updates]}


def _fidelity(
    model: onnx.ModelProto, held: Samples, reference: dict[str, np.ndarray], static_batch: int | None
) -> dict[str, Any]:
    """Per graph output on the held-out samples: mean cosine per sample, and top-1 agreement for [N, C]."""
    names = list(reference)
    parts: dict[str, list[np.ndarray]] = {name: [] for name in names}
    for _, _, values in Runner(model, names, static_batch).run(held):
        for name in names:
            parts[name].append(values[name])
    out: dict[str, Any] = {}
    for name in names:
        found = np.concatenate(parts[name])
        ref = reference[name].reshape(len(reference[name]), -1).astype(np.float64)
        got = found.reshape(len(ref), -1).astype(np.float64)
        norms = np.linalg.norm(ref, axis=1) * np.linalg.norm(got, axis=1)
        cosine = float(np.mean((ref * got).sum(axis=1) / np.maximum(norms, 1e-30)))
        entry: dict[str, Any] = {"cosine": _round(cosine)}
        if reference[name].ndim == 2 and ref.shape[1] > 1:
            entry["top1_agreement"] = _round(float(np.mean(ref.argmax(1) == got.argmax(1))))
        measured = fidelity.measure(name, reference[name], found)
        entry.update(fidelity=measured.to_dict()["fidelity"], damage=measured.to_dict()["damage"])
        out[name] = entry
    return out


def _damage(found: dict[str, Any]) -> float:
    return float(sum(entry["damage"] for entry in found.values()))


def _used(model: onnx.ModelProto) -> set[str]:
    return {name for node in model.graph.node for name in node.input}


def _drop_orphans(model: onnx.ModelProto, used_before: set[str]) -> None:
    """Initializers that calibration replaced (used before, unused now); nothing else is touched."""
    used = _used(model)
    keep = [t for t in model.graph.initializer if t.name in used or t.name not in used_before]
    if len(keep) != len(model.graph.initializer):
        del model.graph.initializer[:]
        model.graph.initializer.extend(keep)
