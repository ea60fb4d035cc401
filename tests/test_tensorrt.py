"""tensorrt.py on the CPU: capability errors, the trtexec line, the build logic against a stand-in
``tensorrt`` module. Real builds run where TensorRT and a CUDA device exist."""

from __future__ import annotations

import ctypes
import importlib.util
import shlex
import sys
import types

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from onnxprune import tensorrt as trt_build
from onnxprune.errors import CapabilityError, UsageError, VerificationError
from onnxprune.fp16 import convert_to_fp16
from onnxprune.tensorrt import build_engine, compare_runners, has_cuda_device, has_tensorrt, trtexec_command
from onnxprune.verify import Comparison

FLOAT, FLOAT16 = TensorProto.FLOAT, TensorProto.FLOAT16


def has_tensorrt_and_gpu() -> bool:
    return has_tensorrt() and has_cuda_device()


needs_gpu = pytest.mark.skipif(
    not has_tensorrt_and_gpu(),
    reason="needs TensorRT and a CUDA device: pip install 'onnxprune[trt]' on a machine with an NVIDIA GPU",
)


def _classifier(batch: int | str = 1) -> onnx.ModelProto:
    """x[batch,3,16,16] -> Conv -> Relu -> GlobalAveragePool -> Flatten -> Gemm -> y[batch,10]."""
    rng = np.random.default_rng(0)
    weights = [
        numpy_helper.from_array(rng.normal(0, 0.27, (8, 3, 3, 3)).astype(np.float32), "conv.w"),
        numpy_helper.from_array(rng.normal(0, 0.1, 8).astype(np.float32), "conv.b"),
        numpy_helper.from_array(rng.normal(0, 0.5, (10, 8)).astype(np.float32), "fc.w"),
        numpy_helper.from_array(rng.normal(0, 0.1, 10).astype(np.float32), "fc.b"),
    ]
    nodes = [
        helper.make_node("Conv", ["x", "conv.w", "conv.b"], ["c"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["r"]),
        helper.make_node("GlobalAveragePool", ["r"], ["p"]),
        helper.make_node("Flatten", ["p"], ["f"]),
        helper.make_node("Gemm", ["f", "fc.w", "fc.b"], ["y"], transB=1),
    ]
    graph = helper.make_graph(
        nodes,
        "classifier",
        [helper.make_tensor_value_info("x", FLOAT, [batch, 3, 16, 16])],
        [helper.make_tensor_value_info("y", FLOAT, [batch, 10])],
        weights,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


@pytest.fixture
def model_path(tmp_path):
    path = tmp_path / "m.onnx"
    onnx.save(_classifier(), str(path))
    return path


@pytest.fixture
def no_tensorrt(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a, **k: None if name == "tensorrt" else real(name, *a, **k)
    )
    monkeypatch.setattr(trt_build, "has_cuda_device", lambda: True)


@pytest.fixture
def no_gpu(monkeypatch):
    def broken_driver() -> int:
        raise RuntimeError("the driver fell over")

    monkeypatch.setattr(trt_build, "has_tensorrt", lambda: True)
    monkeypatch.setattr(trt_build, "_cuda_device_count", broken_driver)


# ---- the trtexec line --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "options, present, absent",
    [
        ({}, [], ["--fp16", "--sparsity", "--memPoolSize", "--shapes", "--stronglyTyped"]),
        ({"fp16": True}, ["--fp16"], ["--stronglyTyped"]),
        ({"fp16": True, "strongly_typed": True}, ["--stronglyTyped"], ["--fp16"]),
        ({"sparse": True}, ["--sparsity=enable"], ["--fp16"]),
        ({"workspace_mib": 512}, ["--memPoolSize=workspace:512M"], []),
        ({"shapes": {"x": (1, 3, 224, 224), "mask": (1, 10)}}, ["--shapes=x:1x3x224x224,mask:1x10"], []),
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
        build_engine(model_path, plan, fp16=True, save_onnx=save)
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
    assert not has_cuda_device()  # the probe failed: a no, not an exception
    save, plan = tmp_path / "handed.onnx", tmp_path / "m.plan"
    with pytest.raises(CapabilityError) as info:
        build_engine(model_path, plan, save_onnx=save)
    message = str(info.value)
    assert "CUDA device" in message and f"trtexec --onnx={save} --saveEngine={plan}" in message
    assert "onnxprune[trt]" not in message  # TensorRT is there
    assert not plan.exists()
    assert onnx.load(str(save)).graph == onnx.load(str(model_path)).graph


def test_without_save_onnx_nothing_is_written(tmp_path, model_path, no_tensorrt):
    with pytest.raises(CapabilityError) as info:
        build_engine(model_path, tmp_path / "m.plan", fp16=True)
    # TensorRT 11's trtexec has no --fp16: the message says how to get the FP16 ONNX instead.
    assert f"--onnx={model_path}" in str(info.value) and "--fp16" in str(info.value)
    assert "--save-onnx" in str(info.value)
    assert [p.name for p in tmp_path.iterdir()] == ["m.onnx"]


def test_the_error_reflects_sparse_workspace_and_shapes(tmp_path, model_path, no_tensorrt):
    with pytest.raises(CapabilityError) as info:
        build_engine(
            model_path,
            tmp_path / "m.plan",
            sparse_weights=True,
            workspace_mib=256,
            shapes={"x": (1, 3, 16, 16)},
        )
    for flag in ("--sparsity=enable", "--memPoolSize=workspace:256M", "--shapes=x:1x3x16x16"):
        assert flag in str(info.value)


def test_has_tensorrt_answers_no_when_the_lookup_fails(monkeypatch):
    def broken(name, *args, **kwargs):
        raise ValueError("tensorrt.__spec__ is None")

    monkeypatch.setattr(importlib.util, "find_spec", broken)
    assert has_tensorrt() is False


def test_has_cuda_device_asks_the_driver(monkeypatch):
    class Driver:
        def __init__(self, init_status, count):
            self.init_status, self.count = init_status, count

        def cuInit(self, flags):  # noqa: N802 - the CUDA driver's name
            return self.init_status

        def cuDeviceGetCount(self, pointer):  # noqa: N802
            pointer._obj.value = self.count
            return 0

    monkeypatch.setattr(ctypes, "CDLL", lambda name: Driver(0, 2))
    assert has_cuda_device() is True
    monkeypatch.setattr(ctypes, "CDLL", lambda name: Driver(100, 0))  # CUDA_ERROR_NO_DEVICE
    assert has_cuda_device() is False

    def missing(name):
        raise OSError(f"{name}: cannot open shared object file")

    monkeypatch.setattr(ctypes, "CDLL", missing)
    assert has_cuda_device() is False


def test_a_tensorrt_that_does_not_load_is_a_capability_error(tmp_path, model_path, monkeypatch):
    monkeypatch.setattr(trt_build, "has_tensorrt", lambda: True)
    monkeypatch.setattr(trt_build, "has_cuda_device", lambda: True)
    monkeypatch.setitem(sys.modules, "tensorrt", None)  # `import tensorrt` raises ImportError
    with pytest.raises(CapabilityError, match="does not load"):
        build_engine(model_path, tmp_path / "m.plan")
    assert not (tmp_path / "m.plan").exists()


# ---- the build, against a stand-in tensorrt module ---------------------------------------------------------


class FakeTensorRT(types.ModuleType):
    """Just enough of TensorRT's Python API to record what build_engine asks of it."""

    STRONGLY_TYPED = 5

    def __init__(self, version, *, fp16_flag=True, parse_error=None, plan=b"fake plan"):
        super().__init__("tensorrt")
        self.__version__ = version
        self.parse_error, self.plan = parse_error, plan
        self.network_flags = None
        self.parsed = None  # (path, model) TensorRT was handed
        self.config_flags, self.pools, self.profiles = [], {}, []
        flags = {"SPARSE_WEIGHTS": "sparse_weights", **({"FP16": "fp16"} if fp16_flag else {})}
        self.BuilderFlag = types.SimpleNamespace(**flags)
        self.NetworkDefinitionCreationFlag = types.SimpleNamespace(STRONGLY_TYPED=self.STRONGLY_TYPED)
        self.MemoryPoolType = types.SimpleNamespace(WORKSPACE="workspace")
        fake = self

        class Logger:
            WARNING = 2

            def __init__(self, severity):
                pass

        class Builder:
            def __init__(self, logger):
                pass

            def create_network(self, flags):
                fake.network_flags = flags
                return types.SimpleNamespace(num_inputs=0, get_input=None)

            def create_builder_config(self):
                return types.SimpleNamespace(
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
                return fake.plan

        class OnnxParser:
            def __init__(self, network, logger):
                self.network = network

            @property
            def num_errors(self):
                return int(fake.parse_error is not None)

            def get_error(self, index):
                return types.SimpleNamespace(desc=lambda: fake.parse_error)

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

        self.Logger, self.Builder, self.OnnxParser = Logger, Builder, OnnxParser


def _passed(*args):
    return Comparison([], atol=0.0, rtol=0.0, criterion="scale", iterations=1)


@pytest.fixture
def fake_trt(monkeypatch):
    """Installs a FakeTensorRT of the version given; the engine comparison is stubbed to pass."""

    def install(version, **kwargs):
        fake = FakeTensorRT(version, **kwargs)
        monkeypatch.setitem(sys.modules, "tensorrt", fake)
        monkeypatch.setattr(trt_build, "has_tensorrt", lambda: True)
        monkeypatch.setattr(trt_build, "has_cuda_device", lambda: True)
        monkeypatch.setattr(trt_build, "_compare_engine", _passed)
        return fake

    return install


def test_trt10_fp16_builds_a_strongly_typed_network_from_the_fp16_onnx(tmp_path, model_path, fake_trt):
    fake = fake_trt("10.13.0")
    plan = tmp_path / "m.plan"
    result = build_engine(model_path, plan, fp16=True)
    assert fake.network_flags == 1 << FakeTensorRT.STRONGLY_TYPED
    assert "fp16" not in fake.config_flags  # strongly typed: the ONNX's types are the precision
    handed_path, handed = fake.parsed
    assert {t.data_type for t in handed.graph.initializer} == {FLOAT16}
    assert plan.read_bytes() == b"fake plan"
    assert (result.trt_version, result.fp16, result.onnx_path) == ("10.13.0", True, None)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx", "m.plan"]


def test_trt10_fp32_builds_a_weakly_typed_network_from_the_input(tmp_path, model_path, fake_trt):
    fake = fake_trt("10.13.0")
    result = build_engine(model_path, tmp_path / "m.plan")
    assert fake.network_flags == 0 and fake.config_flags == []
    assert fake.parsed[0] == str(model_path) and result.onnx_path == model_path


def test_trt11_is_strongly_typed_and_never_asks_for_the_fp16_flag(tmp_path, model_path, fake_trt):
    fake = fake_trt("11.4.1", fp16_flag=False)
    build_engine(model_path, tmp_path / "a.plan")
    assert fake.network_flags == 1 << FakeTensorRT.STRONGLY_TYPED
    build_engine(model_path, tmp_path / "b.plan", fp16=True)  # would raise AttributeError on BuilderFlag.FP16
    assert fake.config_flags == []


def test_sparse_weights_and_workspace_reach_the_builder_config(tmp_path, model_path, fake_trt):
    fake = fake_trt("10.13.0")
    save = tmp_path / "handed.onnx"
    result = build_engine(
        model_path, tmp_path / "m.plan", sparse_weights=True, workspace_mib=256, save_onnx=save
    )
    assert fake.config_flags == ["sparse_weights"] and fake.pools == {"workspace": 256 << 20}
    assert fake.profiles == []  # static input: no optimization profile
    assert result.sparse and result.onnx_path == save and fake.parsed[0] == str(save)


def test_dynamic_inputs_get_a_profile_from_shapes(tmp_path, fake_trt):
    fake = fake_trt("10.13.0")
    path = tmp_path / "dynamic.onnx"
    onnx.save(_classifier(batch="N"), str(path))
    build_engine(path, tmp_path / "m.plan", shapes={"x": (4, 3, 16, 16)})
    assert [p.shapes for p in fake.profiles] == [{"x": ((4, 3, 16, 16),) * 3}]


def test_a_dynamic_input_without_a_shape_is_refused_before_building(tmp_path, fake_trt):
    fake = fake_trt("10.13.0")
    path = tmp_path / "dynamic.onnx"
    onnx.save(_classifier(batch="N"), str(path))
    with pytest.raises(UsageError, match="--shape x:"):
        build_engine(path, tmp_path / "m.plan")
    assert fake.network_flags is None and not (tmp_path / "m.plan").exists()


def test_parse_and_build_failures_are_capability_errors(tmp_path, model_path, fake_trt):
    fake_trt("10.13.0", parse_error="Unsupported ONNX op: Foo")
    with pytest.raises(CapabilityError, match="cannot parse .*Unsupported ONNX op: Foo"):
        build_engine(model_path, tmp_path / "m.plan")
    fake_trt("10.13.0", plan=None)
    with pytest.raises(CapabilityError, match="could not build"):
        build_engine(model_path, tmp_path / "m.plan")
    assert not (tmp_path / "m.plan").exists()


def test_an_engine_that_disagrees_writes_no_plan(tmp_path, model_path, fake_trt, monkeypatch):
    fake_trt("10.13.0")

    def disagree(*args):
        raise VerificationError("the TensorRT engine disagrees with the ONNX model on output 'y'")

    monkeypatch.setattr(trt_build, "_compare_engine", disagree)
    with pytest.raises(VerificationError):
        build_engine(model_path, tmp_path / "m.plan")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx"]


# ---- comparing runners (the engine check, with ONNX Runtime standing in for TensorRT) ----------------------


def _runner(model, name):
    from polygraphy.backend.onnxrt import OnnxrtRunner, SessionFromOnnx

    return OnnxrtRunner(SessionFromOnnx(model.SerializeToString()), name=name)


def test_compare_runners_scores_each_output():
    original = _classifier()
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
    result = build_engine(model_path, plan, fp16=fp16, workspace_mib=256, save_onnx=tmp_path / "handed.onnx")
    assert result.comparison.passed and result.trt_version == trt.__version__
    engine = trt.Runtime(trt.Logger(trt.Logger.WARNING)).deserialize_cuda_engine(plan.read_bytes())
    assert engine is not None


@pytest.mark.gpu
@needs_gpu
def test_real_build_dynamic_batch_with_sparse_weights(tmp_path):
    path = tmp_path / "dynamic.onnx"
    onnx.save(_classifier(batch="N"), str(path))
    result = build_engine(path, tmp_path / "m.plan", sparse_weights=True, shapes={"x": (2, 3, 16, 16)})
    assert result.comparison.passed and result.comparison.outputs[0].reference_shape == (2, 10)
