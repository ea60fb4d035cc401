"""build: an engine plan from an ONNX model, with TensorRT or TensorRT-RTX (``backends.py``).

Capabilities are checked before anything else, from ``devices.py`` (no import, no GPU touched). Then the
ONNX handed to the builder is prepared: its bias maps in the form the backend builds best (``biasmaps.py``)
and, with ``fp16``, converted to FP16 and checked against the float32 model. The builder's log is kept: a
refused model is one line with the builder's first error and the node it names (``BuildError``), and
nothing is written. Where the plan can run here, one inference is compared with ONNX Runtime
(``compare.py``) before the plan is written; where it cannot (no GPU, or none the plan was compiled for),
the result says the comparison was not made and why. The plan is written atomically, and beside it the
builder's per-layer record (``report.layers_path``).
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from onnxprune import files, verify
from onnxprune.biasmaps import MapsRecord, convert_maps
from onnxprune.engine import rtx, tensorrt
from onnxprune.engine.anatomy import source_bytes
from onnxprune.engine.backends import Backend, resolve, unavailable
from onnxprune.engine.builder import Built, build
from onnxprune.engine.compare import compare_engine
from onnxprune.engine.layers import compute_layers
from onnxprune.engine.options import BiasMapForm, BuildOptions, EngineBackend, Profile
from onnxprune.engine.report import EngineReport, layers_path, write_layers
from onnxprune.errors import CapabilityError, UsageError
from onnxprune.fp16 import convert_to_fp16, verify_fp16
from onnxprune.inputs import make_inputs
from onnxprune.sparsity import holds_24
from onnxprune.verify import Comparison


@dataclass(frozen=True)
class BuildResult:
    """What :func:`build_engine` built, and how the engine compared with the float32 ONNX."""

    plan_path: Path
    onnx_path: Path | None  # the ONNX the builder parsed, where it was kept (the input, or save_onnx)
    engine: EngineReport
    comparison: Comparison | None  # None: not run here, ``engine.not_compared`` says why

    @property
    def backend(self) -> str:
        return self.engine.backend


@dataclass(frozen=True)
class _Handed:
    path: Path
    maps: MapsRecord
    changed: bool  # another file than the input


def build_engine(
    onnx_path: str | Path,
    plan_path: str | Path,
    options: BuildOptions | None = None,
    *,
    save_onnx: str | Path | None = None,
) -> BuildResult:
    """Builds a plan from ``onnx_path``, checks it against ONNX Runtime where it can run here, and writes
    it with its per-layer JSON beside it. ``save_onnx``: also write the ONNX handed to the builder, even
    where no plan can be built here.

    Raises:
        CapabilityError: no backend can build here (after writing ``save_onnx``), or the engine cannot be
            run although the device is there.
        BuildError: the builder refused the model (its first error, and the node it names).
        VerificationError: the FP16 ONNX or the engine disagrees with the float32 model.
    """
    options = options or BuildOptions()
    onnx_path, plan_path = Path(onnx_path), Path(plan_path)
    save = None if save_onnx is None else Path(save_onnx)
    backend = resolve(options.backend)
    sparse = options.sparse_weights if options.sparse_weights is not None else _holds_24(onnx_path)
    why = unavailable(options.backend)
    if why is not None:
        _refuse(why, onnx_path, plan_path, options, backend, sparse, save)
    files.check_output_path(plan_path, [onnx_path])
    files.check_output_path(layers_path(plan_path), [onnx_path])
    feeds = _engine_feeds(onnx_path, options)
    trt = backend.load()
    with tempfile.TemporaryDirectory(prefix="onnxprune-") as tmp:
        handed = prepare_onnx(onnx_path, options, backend, save or Path(tmp) / "handed.onnx", keep=save)
        built = _build(trt, backend, handed.path, options, sparse)
        layers, source = _layers(trt, backend, built)
    not_compared = backend.not_runnable(options.compute_capabilities)
    comparison = None
    if not_compared is None:
        rtx_plan = backend.name == EngineBackend.RTX
        comparison = compare_engine(built.plan, onnx_path, feeds, rtx=rtx_plan, title=built.version)
    report = _report(built, layers, source, handed.maps, options, backend, sparse)
    report = replace(
        report, not_compared=not_compared, plan=str(plan_path), layers_json=str(layers_path(plan_path))
    )
    files.write_bytes(plan_path, built.plan)
    write_layers(layers_path(plan_path), report, layers)
    kept = handed.path if save is not None or not handed.changed else None
    return BuildResult(plan_path, kept, report, comparison)


def measure_engine(onnx_path: str | Path, options: BuildOptions | None = None) -> EngineReport:
    """Builds a plan only to measure it (size, build seconds, layers): nothing is written, nothing run."""
    options = options or BuildOptions()
    onnx_path = Path(onnx_path)
    backend = resolve(options.backend)
    why = unavailable(options.backend)
    if why is not None:
        raise CapabilityError(why)
    sparse = options.sparse_weights if options.sparse_weights is not None else _holds_24(onnx_path)
    trt = backend.load()
    with tempfile.TemporaryDirectory(prefix="onnxprune-") as tmp:
        handed = prepare_onnx(onnx_path, options, backend, Path(tmp) / "handed.onnx", keep=None)
        built = _build(trt, backend, handed.path, options, sparse)
        layers, source = _layers(trt, backend, built)
    return _report(built, layers, source, handed.maps, options, backend, sparse)


def _report(
    built: Built,
    layers: list[dict[str, Any]],
    source: str,
    maps: MapsRecord,
    options: BuildOptions,
    backend: Backend,
    sparse: bool,
) -> EngineReport:
    used_sparse = sparse and backend.sparse_note is None
    return EngineReport(
        backend=built.version,
        size_bytes=len(built.plan),
        source_bytes=source_bytes(built.plan),
        build_seconds=built.seconds,
        layers=compute_layers(layers) if layers else None,
        layers_source=source,
        bias_maps=maps.to_dict(),
        fp16=options.fp16,
        sparse_weights=used_sparse,
        sparse_note=backend.sparse_note if sparse and not used_sparse else None,
    )


def _holds_24(onnx_path: Path) -> bool:
    return holds_24(files.read_model(onnx_path))


def bias_map_form(options: BuildOptions, backend: Backend) -> str:
    form = options.bias_maps if options.bias_maps != BiasMapForm.AUTO else backend.bias_maps
    return str(form)


def prepare_onnx(
    onnx_path: Path, options: BuildOptions, backend: Backend, target: Path, *, keep: Path | None
) -> _Handed:
    """The ONNX to hand to the builder: its bias maps in the backend's form and, with ``fp16``, converted and
    checked against the float32 model. Written to ``target``; the input itself is handed where nothing
    changes and the ONNX is not to be ``keep``-t."""
    model = files.read_model(onnx_path)
    converted, maps = convert_maps(model, bias_map_form(options, backend))
    if converted is model and not options.fp16 and keep is None:
        return _Handed(onnx_path, maps, changed=False)
    files.check_output_path(target, [onnx_path])
    if options.fp16:
        half = convert_to_fp16(converted)
        verify_fp16(converted, half, shapes=options.opt_shapes or None)
        converted = half
    files.save_model(converted, target)
    return _Handed(target, maps, changed=True)


def _build(trt: Any, backend: Backend, handed: Path, options: BuildOptions, sparse: bool) -> Built:
    if backend.name == EngineBackend.RTX:
        settings = rtx.settings(options)
    elif options.compute_capabilities:
        raise UsageError(
            "--compute-capability is for TensorRT-RTX, and TensorRT builds here: give --backend rtx"
        )
    else:
        settings = tensorrt.settings(trt, options, sparse)
    return build(trt, backend.title, handed, settings, _node_ops(handed))


def _layers(trt: Any, backend: Backend, built: Built) -> tuple[list[dict[str, Any]], str]:
    return rtx.layers(built) if backend.name == EngineBackend.RTX else tensorrt.layers(trt, built)


def _node_ops(path: Path) -> dict[str, str]:
    header = onnx.load(str(path), load_external_data=False)
    return {node.name: node.op_type for node in header.graph.node if node.name}


def _refuse(
    why: str,
    onnx_path: Path,
    plan_path: Path,
    options: BuildOptions,
    backend: Backend,
    sparse: bool,
    save: Path | None,
) -> None:
    """Writes ``save`` if asked, then raises the one-line CapabilityError; for TensorRT with the trtexec
    line that builds the same plan on a machine that has it."""
    if save is not None:
        prepare_onnx(onnx_path, options, backend, save, keep=save)
    if backend.name == EngineBackend.RTX:
        where = f" (wrote the ONNX for it to {save})" if save is not None else ""
        raise CapabilityError(f"{why}{where}")
    if save is not None:
        command = tensorrt.trtexec_command(
            save,
            plan_path,
            False,
            sparse,
            options.workspace_mib,
            options.profiles,
            strongly_typed=options.fp16,
        )
        where = f" (wrote the ONNX for it to {save})"
    else:
        command = tensorrt.trtexec_command(
            onnx_path, plan_path, options.fp16, sparse, options.workspace_mib, options.profiles
        )
        # TensorRT 11's trtexec has no --fp16: it needs the FP16 ONNX itself.
        where = (
            "; for TensorRT 11 write the FP16 ONNX with --save-onnx and build that" if options.fp16 else ""
        )
    raise CapabilityError(f"{why}. On a machine with TensorRT and a GPU, run: {command}{where}")


def _engine_feeds(onnx_path: Path, options: BuildOptions) -> list[dict[str, np.ndarray]]:
    """One seeded feed for the engine comparison; also checks the shapes before anything is built."""
    header = check_shapes(onnx_path, options)
    return make_inputs(header, shapes=options.opt_shapes or None)


def with_batch_one(onnx_path: str | Path, options: BuildOptions) -> tuple[BuildOptions, list[str]]:
    """Where an input's only dynamic dimension is its batch and no build shape is given, build for batch 1
    (what a deployment without batching runs); the notes say which inputs, for the user to hear."""
    header = verify.load_model_header(Path(onnx_path))
    added: dict[str, Profile] = {}
    for value in header.graph.input:
        dims = value.type.tensor_type.shape.dim
        if value.name in options.profiles or value.name not in _dynamic_inputs(header) or not dims:
            continue
        if all(d.dim_value > 0 for d in dims[1:]):
            shape = (1, *(int(d.dim_value) for d in dims[1:]))
            added[value.name] = Profile(shape, shape, shape)
    if not added:
        return options, []
    notes = [f"{name}:{'x'.join(map(str, p.opt))}" for name, p in added.items()]
    return replace(options, profiles={**options.profiles, **added}), notes


def check_shapes(onnx_path: str | Path, options: BuildOptions) -> onnx.ModelProto:
    """UsageError where an input with dynamic dimensions has no build shape; returns the model's header."""
    header = verify.load_model_header(Path(onnx_path))
    for name in _dynamic_inputs(header):
        if name not in options.profiles:
            raise UsageError(
                f"input {name!r} has dynamic dimensions; give its build shape: --shape {name}:1x3x224x224"
            )
    return header


def _dynamic_inputs(model: onnx.ModelProto) -> list[str]:
    weights = {init.name for init in model.graph.initializer}
    return [
        value.name
        for value in model.graph.input
        if value.name not in weights and any(not d.dim_value > 0 for d in value.type.tensor_type.shape.dim)
    ]
