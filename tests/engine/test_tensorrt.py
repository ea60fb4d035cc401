"""The TensorRT backend on the CPU: capability errors, the trtexec line, and the build logic against a
stand-in ``tensorrt`` module (TensorRT needs a GPU to build; real builds run where one is)."""

from __future__ import annotations

import json
import shlex
import sys
import types

import numpy as np
import onnx
import pytest
from onnx import TensorProto, numpy_helper

from engine._models import classifier
from onnxprune.devices import has_cuda_device, has_module
from onnxprune.engine import BuildOptions, Profile, backends, build_engine
from onnxprune.engine import build as build_stage
from onnxprune.engine.compare import compare_runners
from onnxprune.engine.tensorrt import trtexec_command
from onnxprune.errors import BuildError, CapabilityError, UsageError, VerificationError
from onnxprune.fp16 import convert_to_fp16
from onnxprune.verify import Comparison

FLOAT, FLOAT16 = TensorProto.FLOAT, TensorProto.FLOAT16


def has_tensorrt_and_gpu() -> bool:
    return has_module("tensorrt") and has_cuda_device()


needs_gpu = pytest.mark.skipif(
    not has_tensorrt_and_gpu(),
    reason="needs TensorRT and a CUDA device: pip install 'onnxprune[trt]' on a machine with an NVIDIA GPU",
)


@pytest.fixture
def model_path(tmp_path):
    path = tmp_path / "m.onnx"
    onnx.save(classifier(), str(path))
    return path


def _available(monkeypatch, modules=(), device=True):
    """What this machine has, as the backends see it: the packages in ``modules``, and a device or not."""
    monkeypatch.setattr(backends, "has_module", lambda name: name in modules)
    monkeypatch.setattr(backends, "has_cuda_device", lambda: device)


@pytest.fixture
def no_tensorrt(monkeypatch):
    _available(monkeypatch, modules=(), device=True)


@pytest.fixture
def no_gpu(monkeypatch):
    _available(monkeypatch, modules=("tensorrt",), device=False)


TRT = BuildOptions(backend="tensorrt")


# ---- the trtexec line --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "options, present, absent",
    [
        ({}, [], ["--fp16", "--sparsity", "--memPoolSize", "--shapes", "--stronglyTyped"]),
        ({"fp16": True}, ["--fp16"], ["--stronglyTyped"]),
        ({"fp16": True, "strongly_typed": True}, ["--stronglyTyped"], ["--fp16"]),
        ({"sparse": True}, ["--sparsity=enable"], ["--fp16"]),
        ({"workspace_mib": 512}, ["--memPoolSize=workspace:512M"], []),
        (
            {"profiles": {"x": Profile(*[(1, 3, 224, 224)] * 3), "mask": Profile(*[(1, 10)] * 3)}},
            ["--shapes=x:1x3x224x224,mask:1x10"],
            ["--minShapes"],
        ),
        (
            {"profiles": {"x": Profile((1, 3, 8, 8), (4, 3, 8, 8), (8, 3, 8, 8))}},
            ["--minShapes=x:1x3x8x8", "--optShapes=x:4x3x8x8", "--maxShapes=x:8x3x8x8"],
            ["--shapes="],
        ),
    ],
)
def test_trtexec_command_reflects_the_options(options, present, absent):
    args = shlex.split(trtexec_command("m.onnx", "m.plan", **options))
    assert args[:3] == ["trtexec", "--onnx=m.onnx", "--saveEngine=m.plan"]
    assert all(flag in args for flag in present)
    assert not any(arg.startswith(flag) for arg in args for flag in absent)


def test_trtexec_command_quotes_paths():
    line = trtexec_command("my models/m.onnx", "out/m 1.plan")
    assert shlex.split(line)[1:] == ["--onnx=my models/m.onnx", "--saveEngine=out/m 1.plan"]


# ---- capability checks -------------------------------------------------------------------------------------


def test_without_tensorrt_the_error_says_how_and_the_fp16_onnx_is_still_written(
    tmp_path, model_path, no_tensorrt
):
    save, plan = tmp_path / "m.fp16.onnx", tmp_path / "m.plan"
    with pytest.raises(CapabilityError) as info:
        build_engine(model_path, plan, BuildOptions(backend="tensorrt", fp16=True), save_onnx=save)
    message = str(info.value)
    for needle in (
        "onnxprune[trt]",
        "pypi.nvidia.com",
        "trtexec --onnx=",
        f"--onnx={save}",
        "--stronglyTyped",
    ):
        assert needle in message, needle
    assert "\n" not in message and "--fp16" not in message
    assert not plan.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.fp16.onnx", "m.onnx"]  # no temporary left over
    saved = onnx.load(str(save))
    assert {t.data_type for t in saved.graph.initializer} == {FLOAT16}
    assert saved.graph.input[0].type.tensor_type.elem_type == FLOAT


def test_without_a_gpu_the_error_names_it_and_the_onnx_is_still_written(tmp_path, model_path, no_gpu):
    save, plan = tmp_path / "handed.onnx", tmp_path / "m.plan"
    with pytest.raises(CapabilityError) as info:
        build_engine(model_path, plan, TRT, save_onnx=save)
    message = str(info.value)
    assert "CUDA device" in message and f"trtexec --onnx={save} --saveEngine={plan}" in message
    assert "onnxprune[trt]" not in message  # TensorRT is there
    assert not plan.exists()
    assert onnx.load(str(save)).graph == onnx.load(str(model_path)).graph


def test_without_save_onnx_nothing_is_written(tmp_path, model_path, no_tensorrt):
    with pytest.raises(CapabilityError) as info:
        build_engine(model_path, tmp_path / "m.plan", BuildOptions(backend="tensorrt", fp16=True))
    # TensorRT 11's trtexec has no --fp16: the message says how to get the FP16 ONNX instead.
    assert f"--onnx={model_path}" in str(info.value) and "--fp16" in str(info.value)
    assert "--save-onnx" in str(info.value)
    assert [p.name for p in tmp_path.iterdir()] == ["m.onnx"]


def test_the_error_reflects_sparse_workspace_and_shapes(tmp_path, model_path, no_tensorrt):
    with pytest.raises(CapabilityError) as info:
        build_engine(
            model_path,
            tmp_path / "m.plan",
            BuildOptions(
                backend="tensorrt",
                sparse_weights=True,
                workspace_mib=256,
                profiles={"x": Profile(*[(1, 3, 16, 16)] * 3)},
            ),
        )
    for flag in ("--sparsity=enable", "--memPoolSize=workspace:256M", "--shapes=x:1x3x16x16"):
        assert flag in str(info.value)


# ---- the build, against a stand-in tensorrt module ---------------------------------------------------------


class FakeTensorRT(types.ModuleType):
    """Just enough of TensorRT's Python API to record what build_engine asks of it."""

    STRONGLY_TYPED = 5

    def __init__(self, version, *, fp16_flag=True, parse_error=None, plan=b"fake plan", build_log=()):
        super().__init__("tensorrt")
        self.__version__ = version
        self.parse_error, self.plan, self.build_log = parse_error, plan, list(build_log)
        self.network_flags = None
        self.parsed = None  # (path, model) TensorRT was handed
        self.config_flags, self.pools, self.profiles, self.verbosity = [], {}, [], None
        self.deserialized = []  # plans the engine inspector was asked about
        flags = {"SPARSE_WEIGHTS": "sparse_weights", **({"FP16": "fp16"} if fp16_flag else {})}
        self.BuilderFlag = types.SimpleNamespace(**flags)
        self.NetworkDefinitionCreationFlag = types.SimpleNamespace(STRONGLY_TYPED=self.STRONGLY_TYPED)
        self.MemoryPoolType = types.SimpleNamespace(WORKSPACE="workspace")
        self.ProfilingVerbosity = types.SimpleNamespace(DETAILED="detailed")
        self.LayerInformationFormat = types.SimpleNamespace(JSON="json")
        fake = self

        class ILogger:
            Severity = types.SimpleNamespace(INTERNAL_ERROR=0, ERROR=1, WARNING=2, INFO=3, VERBOSE=4)

            def __init__(self):
                pass

        class Config(types.SimpleNamespace):
            def __setattr__(self, name, value):
                if name == "profiling_verbosity":
                    fake.verbosity = value
                super().__setattr__(name, value)

        class Builder:
            def __init__(self, logger):
                self.logger = logger

            def create_network(self, flags):
                fake.network_flags = flags
                return types.SimpleNamespace(num_inputs=0, get_input=None)

            def create_builder_config(self):
                return Config(
                    set_flag=fake.config_flags.append,
                    set_memory_pool_limit=fake.pools.__setitem__,
                    add_optimization_profile=fake.profiles.append,
                )

            def create_optimization_profile(self):
                shapes = {}
                return types.SimpleNamespace(
                    set_shape=lambda name, *mom: shapes.update({name: mom}), shapes=shapes
                )

            def build_serialized_network(self, network, config):
                for severity, message in fake.build_log:
                    self.logger.log(severity, message)
                return fake.plan

        class OnnxParser:
            def __init__(self, network, logger):
                self.network = network

            @property
            def num_errors(self):
                return int(fake.parse_error is not None)

            def get_error(self, index):
                return types.SimpleNamespace(
                    desc=lambda: fake.parse_error, node_name=lambda: "fc", node_operator=lambda: "Gemm"
                )

            def parse_from_file(self, path):
                model = onnx.load(path)
                fake.parsed = (path, model)
                inputs = [
                    types.SimpleNamespace(
                        name=v.name, shape=tuple(d.dim_value or -1 for d in v.type.tensor_type.shape.dim)
                    )
                    for v in model.graph.input
                ]
                self.network.num_inputs, self.network.get_input = len(inputs), inputs.__getitem__
                return fake.parse_error is None

        class Runtime:
            def __init__(self, logger):
                pass

            def deserialize_cuda_engine(self, plan):
                fake.deserialized.append(plan)
                info = {"Layers": [{"Name": "conv+relu", "LayerType": "CaskConvolution",
                                    "Metadata": "[ONNX Layer: conv][ONNX Layer: relu]"}]}  # fmt: skip
                inspector = types.SimpleNamespace(get_engine_information=lambda fmt: json.dumps(info))
                return types.SimpleNamespace(create_engine_inspector=lambda: inspector)

        self.ILogger, self.Builder, self.OnnxParser, self.Runtime = ILogger, Builder, OnnxParser, Runtime


def _passed(*args, **kwargs):
    return Comparison([], atol=0.0, rtol=0.0, criterion="scale", iterations=1)


@pytest.fixture
def fake_trt(monkeypatch):
    """Installs a FakeTensorRT of the version given; the engine comparison is stubbed to pass."""

    def install(version, **kwargs):
        fake = FakeTensorRT(version, **kwargs)
        monkeypatch.setitem(sys.modules, "tensorrt", fake)
        _available(monkeypatch, modules=("tensorrt",), device=True)
        monkeypatch.setattr(build_stage, "compare_engine", _passed)
        return fake

    return install


def test_trt10_fp16_builds_a_strongly_typed_network_from_the_fp16_onnx(tmp_path, model_path, fake_trt):
    fake = fake_trt("10.13.0")
    plan = tmp_path / "m.plan"
    result = build_engine(model_path, plan, BuildOptions(backend="tensorrt", fp16=True))
    assert fake.network_flags == 1 << FakeTensorRT.STRONGLY_TYPED
    assert "fp16" not in fake.config_flags  # strongly typed: the ONNX's types are the precision
    handed_path, handed = fake.parsed
    assert {t.data_type for t in handed.graph.initializer} == {FLOAT16}
    assert plan.read_bytes() == b"fake plan"
    assert (result.backend, result.engine.fp16, result.onnx_path) == ("TensorRT 10.13.0", True, None)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.layers.json", "m.onnx", "m.plan"]


def test_trt10_fp32_builds_a_weakly_typed_network_from_the_input(tmp_path, model_path, fake_trt):
    fake = fake_trt("10.13.0")
    result = build_engine(model_path, tmp_path / "m.plan", TRT)
    assert fake.network_flags == 0 and fake.config_flags == []
    assert fake.parsed[0] == str(model_path) and result.onnx_path == model_path
    assert result.comparison is not None and result.engine.not_compared is None


def test_the_layers_come_from_the_engine_inspector_with_detailed_verbosity(tmp_path, model_path, fake_trt):
    fake = fake_trt("10.13.0")
    result = build_engine(model_path, tmp_path / "m.plan", TRT)
    assert fake.verbosity == "detailed" and fake.deserialized == [b"fake plan"]
    record = json.loads((tmp_path / "m.layers.json").read_text())
    assert record["source"] == "engine inspector" and record["backend"] == "TensorRT 10.13.0"
    [layer] = record["layers"]
    assert layer["name"] == "conv+relu" and layer["onnx_nodes"] == ["conv", "relu"]
    assert result.engine.layers == 1 and result.engine.size_bytes == len(b"fake plan")


def test_trt11_is_strongly_typed_and_never_asks_for_the_fp16_flag(tmp_path, model_path, fake_trt):
    fake = fake_trt("11.4.1", fp16_flag=False)
    build_engine(model_path, tmp_path / "a.plan", TRT)
    assert fake.network_flags == 1 << FakeTensorRT.STRONGLY_TYPED
    build_engine(model_path, tmp_path / "b.plan", BuildOptions(backend="tensorrt", fp16=True))
    assert fake.config_flags == []  # would raise AttributeError on BuilderFlag.FP16


def test_sparse_weights_and_workspace_reach_the_builder_config(tmp_path, model_path, fake_trt):
    fake = fake_trt("10.13.0")
    save = tmp_path / "handed.onnx"
    options = BuildOptions(backend="tensorrt", sparse_weights=True, workspace_mib=256)
    result = build_engine(model_path, tmp_path / "m.plan", options, save_onnx=save)
    assert fake.config_flags == ["sparse_weights"] and fake.pools == {"workspace": 256 << 20}
    assert fake.profiles == []  # static input: no optimization profile
    assert result.engine.sparse_weights and result.engine.sparse_note is None
    assert result.onnx_path == save and fake.parsed[0] == str(save)


def test_dynamic_inputs_get_a_profile_with_min_opt_max(tmp_path, fake_trt):
    fake = fake_trt("10.13.0")
    path = tmp_path / "dynamic.onnx"
    onnx.save(classifier(batch="N"), str(path))
    profile = Profile((1, 3, 16, 16), (4, 3, 16, 16), (8, 3, 16, 16))
    build_engine(path, tmp_path / "m.plan", BuildOptions(backend="tensorrt", profiles={"x": profile}))
    assert [p.shapes for p in fake.profiles] == [{"x": ((1, 3, 16, 16), (4, 3, 16, 16), (8, 3, 16, 16))}]


def test_a_dynamic_input_without_a_shape_is_refused_before_building(tmp_path, fake_trt):
    fake = fake_trt("10.13.0")
    path = tmp_path / "dynamic.onnx"
    onnx.save(classifier(batch="N"), str(path))
    with pytest.raises(UsageError, match="--shape x:"):
        build_engine(path, tmp_path / "m.plan", TRT)
    assert fake.network_flags is None and not (tmp_path / "m.plan").exists()


def test_a_parse_failure_names_the_node_and_writes_nothing(tmp_path, model_path, fake_trt):
    fake_trt("10.13.0", parse_error="Unsupported ONNX op: Foo")
    with pytest.raises(
        BuildError, match="cannot parse the model: node 'fc' .Gemm.: Unsupported ONNX op: Foo"
    ):
        build_engine(model_path, tmp_path / "m.plan", TRT)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx"]


def test_a_build_failure_gives_the_first_error_and_the_node_it_names(tmp_path, model_path, fake_trt):
    log = [(2, "a warning first"), (1, "Error Code 1: Cannot compile operation 'fc' here"), (1, "second")]
    fake_trt("10.13.0", plan=None, build_log=log)
    with pytest.raises(BuildError) as info:
        build_engine(model_path, tmp_path / "m.plan", TRT)
    message = str(info.value)
    assert "could not build the engine: Error Code 1: Cannot compile operation 'fc' here" in message
    assert "(node 'fc', Gemm)" in message and "second" not in message and "\n" not in message
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx"]


def test_an_engine_that_disagrees_writes_no_plan(tmp_path, model_path, fake_trt, monkeypatch):
    fake_trt("10.13.0")

    def disagree(*args, **kwargs):
        raise VerificationError("the TensorRT engine disagrees with the ONNX model on output 'y'")

    monkeypatch.setattr(build_stage, "compare_engine", disagree)
    with pytest.raises(VerificationError):
        build_engine(model_path, tmp_path / "m.plan", TRT)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx"]


def test_a_tensorrt_that_does_not_load_is_a_capability_error(tmp_path, model_path, monkeypatch):
    _available(monkeypatch, modules=("tensorrt",), device=True)
    monkeypatch.setitem(sys.modules, "tensorrt", None)  # `import tensorrt` raises ImportError
    with pytest.raises(CapabilityError, match="does not load"):
        build_engine(model_path, tmp_path / "m.plan", TRT)
    assert not (tmp_path / "m.plan").exists()


# ---- comparing runners (the engine check, with ONNX Runtime standing in for TensorRT) ----------------------


def _runner(model, name):
    from polygraphy.backend.onnxrt import OnnxrtRunner, SessionFromOnnx

    return OnnxrtRunner(SessionFromOnnx(model.SerializeToString()), name=name)


def test_compare_runners_scores_each_output():
    original = classifier()
    half = convert_to_fp16(original)
    feeds = [{"x": np.random.default_rng(1).standard_normal((1, 3, 16, 16)).astype(np.float32)}]
    good = compare_runners(_runner(original, "a"), _runner(half, "b"), feeds)
    [out] = good.outputs
    assert good.passed and out.name == "y" and 0 < out.max_abs_err < 0.05 and out.cosine > 0.999
    assert out.top1_agreement == 1.0
    fc = next(t for t in half.graph.initializer if t.name == "fc.w")
    fc.CopyFrom(numpy_helper.from_array(-numpy_helper.to_array(fc), "fc.w"))
    bad = compare_runners(_runner(original, "a"), _runner(half, "b"), feeds)
    assert not bad.passed and "max|a-b|" in bad.outputs[0].reason


# ---- real builds -------------------------------------------------------------------------------------------


@pytest.mark.gpu
@needs_gpu
@pytest.mark.parametrize("fp16", [False, True], ids=["fp32", "fp16"])
def test_real_build(tmp_path, model_path, fp16):
    import tensorrt as trt

    plan = tmp_path / "m.plan"
    options = BuildOptions(backend="tensorrt", fp16=fp16, workspace_mib=256)
    result = build_engine(model_path, plan, options, save_onnx=tmp_path / "handed.onnx")
    assert result.comparison.passed and result.backend == f"TensorRT {trt.__version__}"
    engine = trt.Runtime(trt.Logger(trt.Logger.WARNING)).deserialize_cuda_engine(plan.read_bytes())
    assert engine is not None


@pytest.mark.gpu
@needs_gpu
def test_real_build_dynamic_batch_with_sparse_weights(tmp_path):
    path = tmp_path / "dynamic.onnx"
    onnx.save(classifier(batch="N"), str(path))
    options = BuildOptions(
        backend="tensorrt",
        sparse_weights=True,
        profiles={"x": Profile((1, 3, 16, 16), (2, 3, 16, 16), (4, 3, 16, 16))},
    )
    result = build_engine(path, tmp_path / "m.plan", options)
    assert result.comparison.passed and result.comparison.outputs[0].reference_shape == (2, 10)


def test_compute_capabilities_are_refused_where_auto_takes_tensorrt(tmp_path, model_path, fake_trt):
    fake = fake_trt("10.13.0")
    with pytest.raises(UsageError, match="--compute-capability is for TensorRT-RTX"):
        build_engine(model_path, tmp_path / "m.plan", BuildOptions(compute_capabilities=("8.6",)))
    assert fake.parsed is None and not (tmp_path / "m.plan").exists()
