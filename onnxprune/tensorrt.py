"""build: a TensorRT plan from an ONNX model, compared with ONNX Runtime before it is written.

TensorRT is imported lazily, and only after two checks that need neither it nor a GPU: is the ``tensorrt``
package there, and is a CUDA device visible (asked of the CUDA driver through ctypes; a TensorRT builder
created without a device can take the process down). When either is missing, :func:`build_engine` still
writes ``save_onnx``, then raises ``CapabilityError`` with the equivalent ``trtexec`` command.

FP16: TensorRT 11 builds strongly typed networks only and has no FP16 builder flag; a tensor's ONNX type is
its precision. So ``fp16=True`` converts the model (``fp16.convert_to_fp16``), checks it against the float32
model (``fp16.verify_fp16``), and builds a strongly typed network from it, on TensorRT 10 as well. Without
``fp16``, TensorRT 10 builds a weakly typed float32 network and TensorRT 11 a strongly typed one.

The engine is then run once through Polygraphy (``TrtRunner``) against the float32 ONNX on ONNX Runtime's CPU
provider, and the plan is written (atomically) only if every output agrees.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import importlib.util
import shlex
import sys
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from onnxprune import files, verify
from onnxprune.errors import CapabilityError, UsageError, VerificationError, first_line
from onnxprune.fp16 import convert_to_fp16, verify_fp16
from onnxprune.inputs import make_inputs
from onnxprune.runtime import quiet_onnxruntime
from onnxprune.sparsity import holds_24
from onnxprune.tolerances import REDUCED_PRECISION
from onnxprune.verify import Comparison, cosine_floor
from onnxprune.verify import compare_runners as compare

Shapes = Mapping[str, tuple[int, ...]]

_NO_TENSORRT = (
    "TensorRT is not installed (pip install 'onnxprune[trt]'; its wheels come from NVIDIA's package index, "
    "pypi.nvidia.com, not PyPI)"
)
_NO_DEVICE = "no CUDA device is visible (TensorRT needs an NVIDIA GPU and its driver)"


@dataclass(frozen=True)
class BuildResult:
    """What :func:`build_engine` built, and how the engine compared with the float32 ONNX."""

    plan_path: Path
    onnx_path: Path | None  # the ONNX TensorRT parsed, where it was kept (the input, or save_onnx)
    trt_version: str
    fp16: bool
    sparse: bool
    comparison: Comparison


# ---- capabilities ------------------------------------------------------------------------------------------


def has_tensorrt() -> bool:
    """Whether the ``tensorrt`` package can be found (it is not imported)."""
    try:
        return importlib.util.find_spec("tensorrt") is not None
    except (ImportError, ValueError):
        return False


def has_cuda_device() -> bool:
    """Whether the CUDA driver reports at least one device. Never raises; never touches TensorRT."""
    try:
        return _cuda_device_count() > 0
    except Exception:  # a probe answers yes or no, whatever the driver does
        return False


def _cuda_device_count() -> int:
    names = ["nvcuda.dll"] if sys.platform == "win32" else ["libcuda.so.1", "libcuda.so"]
    names.append(ctypes.util.find_library("cuda") or "")
    for name in filter(None, names):
        try:
            driver = ctypes.CDLL(name)
        except OSError:
            continue
        count = ctypes.c_int(0)
        # CUDA_SUCCESS is 0; cuInit fails with CUDA_ERROR_NO_DEVICE when CUDA_VISIBLE_DEVICES hides them all.
        if driver.cuInit(0) != 0 or driver.cuDeviceGetCount(ctypes.byref(count)) != 0:
            return 0
        return count.value
    return 0


def trtexec_command(
    onnx_path: str | Path,
    plan_path: str | Path,
    fp16: bool = False,
    sparse: bool = False,
    workspace_mib: int | None = None,
    shapes: Shapes | None = None,
    *,
    strongly_typed: bool = False,
) -> str:
    """The ``trtexec`` line that builds the same plan, for machines where onnxprune cannot.

    ``strongly_typed`` is for an ONNX that is already FP16: ``--stronglyTyped`` instead of ``--fp16`` (which
    TensorRT 11's trtexec no longer has).
    """
    args = ["trtexec", f"--onnx={onnx_path}", f"--saveEngine={plan_path}"]
    if strongly_typed:
        args.append("--stronglyTyped")
    elif fp16:
        args.append("--fp16")
    if sparse:
        args.append("--sparsity=enable")
    if workspace_mib is not None:
        args.append(f"--memPoolSize=workspace:{workspace_mib}M")
    if shapes:
        args.append("--shapes=" + ",".join(f"{name}:{_dims(dims)}" for name, dims in shapes.items()))
    return " ".join(shlex.quote(arg) for arg in args)


def _dims(dims: tuple[int, ...]) -> str:
    return "x".join(str(d) for d in dims)


# ---- the build ---------------------------------------------------------------------------------------------


def build_engine(
    onnx_path: str | Path,
    plan_path: str | Path,
    *,
    fp16: bool = False,
    sparse_weights: bool | None = None,
    workspace_mib: int | None = None,
    shapes: Shapes | None = None,
    save_onnx: str | Path | None = None,
) -> BuildResult:
    """Builds a TensorRT plan from ``onnx_path``, checks it against ONNX Runtime, and writes it.

    Args:
        fp16: build from an FP16 ONNX (strongly typed; see the module docstring).
        sparse_weights: let TensorRT use 2:4 structured-sparse kernels where weights allow
            (``BuilderFlag.SPARSE_WEIGHTS``); ``None``: exactly when the model holds 2:4 layers
            (``onnxprune sparsify``).
        workspace_mib: cap on TensorRT's workspace memory pool, in MiB.
        shapes: the build shape of each dynamic input (``{"input": (1, 3, 224, 224)}``); one profile,
            min = opt = max.
        save_onnx: also write the ONNX handed to TensorRT here (the FP16 one with ``fp16``), even when the
            plan cannot be built on this machine.

    Raises:
        CapabilityError: no TensorRT or no CUDA device (after writing ``save_onnx``), or TensorRT cannot
            parse or build the model.
        VerificationError: the FP16 ONNX or the engine disagrees with the float32 model; no plan is written.
    """
    onnx_path, plan_path = Path(onnx_path), Path(plan_path)
    save = None if save_onnx is None else Path(save_onnx)
    if sparse_weights is None:
        sparse_weights = _holds_24(onnx_path)
    missing = [why for ok, why in ((has_tensorrt(), _NO_TENSORRT), (has_cuda_device(), _NO_DEVICE)) if not ok]
    if missing:
        _raise_missing(missing, onnx_path, plan_path, fp16, sparse_weights, workspace_mib, shapes, save)

    if workspace_mib is not None and workspace_mib <= 0:
        raise UsageError(f"the workspace must be a positive number of MiB, got {workspace_mib}")
    files.check_output_path(plan_path, [onnx_path])
    feeds = _engine_feeds(onnx_path, shapes)
    with tempfile.TemporaryDirectory(prefix="onnxprune-") as tmp:
        target = save or (Path(tmp) / "fp16.onnx" if fp16 else None)
        handed = onnx_path if target is None else _prepare_onnx(onnx_path, fp16, shapes, target)
        plan, version = _build(handed, fp16, sparse_weights, workspace_mib, shapes or {})
    comparison = _compare_engine(plan, onnx_path, feeds)
    files.write_bytes(plan_path, plan)
    kept = handed if save is not None or not fp16 else None
    return BuildResult(plan_path, kept, version, fp16, sparse_weights, comparison)


def _holds_24(onnx_path: Path) -> bool:
    return holds_24(files.read_model(onnx_path))


def _raise_missing(
    missing: list[str],
    onnx_path: Path,
    plan_path: Path,
    fp16: bool,
    sparse: bool,
    workspace_mib: int | None,
    shapes: Shapes | None,
    save: Path | None,
) -> None:
    """Writes ``save`` if asked, then raises the one-line CapabilityError with the trtexec equivalent."""
    if save is not None:
        _prepare_onnx(onnx_path, fp16, shapes, save)
        command = trtexec_command(save, plan_path, False, sparse, workspace_mib, shapes, strongly_typed=fp16)
        where = f" (wrote the ONNX for it to {save})"
    else:
        command = trtexec_command(onnx_path, plan_path, fp16, sparse, workspace_mib, shapes)
        # TensorRT 11's trtexec has no --fp16: it needs the FP16 ONNX itself.
        where = "; for TensorRT 11 write the FP16 ONNX with --save-onnx and build that" if fp16 else ""
    raise CapabilityError(
        f"cannot build a TensorRT plan here: {' and '.join(missing)}. "
        f"On a machine with both, run: {command}{where}"
    )


def _prepare_onnx(onnx_path: Path, fp16: bool, shapes: Shapes | None, target: Path) -> Path:
    """Writes the ONNX to hand to TensorRT at ``target``: a copy of the input, or its verified FP16."""
    files.check_output_path(target, [onnx_path])
    model = files.read_model(onnx_path)
    if fp16:
        half = convert_to_fp16(model)
        verify_fp16(model, half, shapes=shapes)
        model = half
    files.save_model(model, target)
    return target


def _engine_feeds(onnx_path: Path, shapes: Shapes | None) -> list[dict[str, np.ndarray]]:
    """One seeded feed for the engine comparison; also checks ``shapes`` before anything is built."""
    header = verify.load_model_header(onnx_path)
    for name in _dynamic_inputs(header):
        if name not in (shapes or {}):
            raise UsageError(
                f"input {name!r} has dynamic dimensions; give its build shape: --shape {name}:1x3x224x224"
            )
    return make_inputs(header, shapes=shapes)


def _dynamic_inputs(model: onnx.ModelProto) -> list[str]:
    weights = {init.name for init in model.graph.initializer}
    return [
        value.name
        for value in model.graph.input
        if value.name not in weights and any(not d.dim_value > 0 for d in value.type.tensor_type.shape.dim)
    ]


def _build(
    onnx_file: Path, fp16: bool, sparse: bool, workspace_mib: int | None, shapes: Shapes
) -> tuple[bytes, str]:
    """Parses and builds with TensorRT; returns the serialized plan and TensorRT's version."""
    try:
        import tensorrt as trt
    except (ImportError, OSError) as err:  # the wheel is there but its libraries are not
        raise CapabilityError(f"TensorRT is installed but does not load: {first_line(err)}") from err
    version = str(trt.__version__)
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    # Strongly typed: required for an FP16 ONNX, the only mode TensorRT 11 has (where the flag is ignored).
    strong = getattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED", None)
    strongly_typed = strong is not None and (fp16 or _major(version) >= 11)
    network = builder.create_network(1 << int(strong) if strong is not None and strongly_typed else 0)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_file)):
        errors = [parser.get_error(i).desc() for i in range(parser.num_errors)]
        first = errors[0] if errors else "no error reported"
        raise CapabilityError(f"TensorRT {version} cannot parse {onnx_file}: {first}")
    config = builder.create_builder_config()
    _configure(trt, config, fp16 and not strongly_typed, sparse, workspace_mib)
    _add_profile(builder, network, config, shapes)
    plan = builder.build_serialized_network(network, config)
    if plan is None:
        raise CapabilityError(f"TensorRT {version} could not build an engine from {onnx_file} (see its log)")
    return bytes(plan), version


def _configure(trt: Any, config: Any, fp16_flag: bool, sparse: bool, workspace_mib: int | None) -> None:
    if workspace_mib is not None:
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_mib << 20)
    if sparse:
        flag = getattr(trt.BuilderFlag, "SPARSE_WEIGHTS", None)
        if flag is None:
            raise CapabilityError(f"TensorRT {trt.__version__} has no SPARSE_WEIGHTS builder flag")
        config.set_flag(flag)
    # Only a TensorRT without strong typing gets here with fp16: its weakly typed FP16 mode.
    if fp16_flag:
        config.set_flag(trt.BuilderFlag.FP16)


def _add_profile(builder: Any, network: Any, config: Any, shapes: Shapes) -> None:
    """One optimization profile, min = opt = max, for the inputs with dynamic dimensions."""
    inputs = [network.get_input(i) for i in range(network.num_inputs)]
    dynamic = [tensor for tensor in inputs if any(d < 0 for d in tensor.shape)]
    if not dynamic:
        return
    profile = builder.create_optimization_profile()
    for tensor in dynamic:
        if tensor.name not in shapes:
            raise UsageError(
                f"input {tensor.name!r} has dynamic dimensions; give its build shape with --shape"
            )
        shape = tuple(shapes[tensor.name])
        profile.set_shape(tensor.name, shape, shape, shape)
    config.add_optimization_profile(profile)


def _major(version: str) -> int:
    head = version.split(".")[0]
    return int(head) if head.isdigit() else 0


# ---- checking and writing ----------------------------------------------------------------------------------


def _compare_engine(plan: bytes, reference: Path, feeds: list[dict[str, np.ndarray]]) -> Comparison:
    from polygraphy.backend.onnxrt import OnnxrtRunner, SessionFromOnnx
    from polygraphy.backend.trt import EngineFromBytes, TrtRunner
    from polygraphy.exception import PolygraphyException

    quiet_onnxruntime()  # Polygraphy's session logs to ONNX Runtime's process-wide logger
    reference_runner = OnnxrtRunner(SessionFromOnnx(str(reference), providers=["cpu"]), name="onnxruntime")
    engine_runner = TrtRunner(EngineFromBytes(plan), name="tensorrt")
    try:
        comparison = compare_runners(reference_runner, engine_runner, feeds)
    except PolygraphyException as err:  # e.g. Polygraphy finds no CUDA runtime library to run the engine with
        raise CapabilityError(
            f"cannot run the engine to check it: {first_line(err)}; no plan written"
        ) from err
    failed = next((output for output in comparison.outputs if not output.passed), None)
    if failed is not None:
        raise VerificationError(
            f"the TensorRT engine disagrees with the ONNX model on output {failed.name!r}: {failed.reason}; "
            "no plan written"
        )
    return comparison


def compare_runners(
    reference: Any,
    candidate: Any,
    feeds: list[dict[str, np.ndarray]],
    *,
    min_cosine: float | None = REDUCED_PRECISION.min_cosine,
    rtol: float = REDUCED_PRECISION.rtol,
    atol: float = REDUCED_PRECISION.atol,
) -> Comparison:
    """Runs two Polygraphy runners on ``feeds`` and scores each output, with the criteria of
    ``fp16.verify_fp16``: ``max|a - b| <= atol + rtol * max|a|`` (``a``: the reference) and a cosine
    similarity of at least ``min_cosine``.
    """
    comparison = compare(reference, candidate, feeds, atol=atol, rtol=rtol, criterion="scale")
    comparison.outputs = [cosine_floor(output, min_cosine) for output in comparison.outputs]
    return comparison
