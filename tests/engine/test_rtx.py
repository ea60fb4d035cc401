"""The TensorRT-RTX backend, for real: it builds ahead of time on the CPU, so these build plans on any machine
where its wheel loads (and skip elsewhere, saying why). Running a plan needs an RTX-class GPU: without one
the result must say that it was not compared, and no runtime is ever created."""

from __future__ import annotations

import json
from pathlib import Path

import onnx
import pytest
from build_samples import resnet_slim
from onnx import TensorProto

from engine._models import classifier
from engine._rtx import needs_rtx
from onnxprune import api
from onnxprune.devices import has_cuda_device
from onnxprune.engine import BuildOptions, Profile, build_engine, measure_engine
from onnxprune.engine.backends import RTX
from onnxprune.engine.builder import build
from onnxprune.engine.rtx import settings
from onnxprune.errors import BuildError, UsageError
from onnxprune.sparsity import SparsifyOptions, sparsify_model

pytestmark = needs_rtx
RTX_OPTIONS = BuildOptions(backend="rtx")


@pytest.fixture
def net(tmp_path: Path) -> Path:
    path = tmp_path / "net.onnx"
    onnx.save(classifier(), str(path))
    return path


def test_a_plan_is_built_on_the_cpu_with_its_layers_beside_it(tmp_path, net):
    plan = tmp_path / "net.plan"
    result = build_engine(net, plan, RTX_OPTIONS)
    engine = result.engine
    assert plan.stat().st_size == engine.size_bytes > 0 and engine.backend.startswith("TensorRT-RTX ")
    assert engine.build_seconds > 0 and engine.layers is not None and engine.layers >= 1
    record = json.loads((tmp_path / "net.layers.json").read_text())
    assert record["source"] == "builder log" and len(record["layers"]) >= engine.layers
    fused = {node for layer in record["layers"] for node in layer["onnx_nodes"]}
    assert {"conv", "fc"} <= fused  # each layer names the ONNX nodes it came from
    assert result.onnx_path == net  # nothing to change: the input itself was handed over


@pytest.mark.skipif(has_cuda_device(), reason="a CUDA device is here: the engine may be compared")
def test_without_a_gpu_the_result_says_it_was_not_compared(tmp_path, net):
    result = build_engine(net, tmp_path / "net.plan", RTX_OPTIONS)
    assert result.comparison is None
    assert result.engine.not_compared is not None and "no CUDA device" in result.engine.not_compared


def test_fp16_builds_a_smaller_plan_from_the_fp16_onnx(tmp_path):
    path = tmp_path / "slim.onnx"
    onnx.save(resnet_slim(), str(path))
    fp32 = build_engine(path, tmp_path / "a.plan", RTX_OPTIONS).engine
    save = tmp_path / "half.onnx"
    fp16 = build_engine(path, tmp_path / "b.plan", BuildOptions(backend="rtx", fp16=True), save_onnx=save)
    assert fp16.engine.fp16 and fp16.engine.size_bytes < 0.75 * fp32.size_bytes
    assert {t.data_type for t in onnx.load(str(save)).graph.initializer} == {TensorProto.FLOAT16}


def test_a_dynamic_batch_gets_its_min_opt_max_profile(tmp_path):
    path = tmp_path / "dynamic.onnx"
    onnx.save(classifier(batch="N"), str(path))
    profile = Profile((1, 3, 16, 16), (4, 3, 16, 16), (8, 3, 16, 16))
    options = BuildOptions(backend="rtx", profiles={"x": profile})
    built = build(RTX.load(), "TensorRT-RTX", path, settings(options), {})
    assert any("MinShape: [1,3,16,16], OptShape: [4,3,16,16], MaxShape: [8,3,16,16]" in m for m in built.log)
    with pytest.raises(UsageError, match="--shape x:"):
        build_engine(path, tmp_path / "m.plan", RTX_OPTIONS)


def test_a_model_the_parser_refuses_names_the_node_and_writes_nothing(tmp_path):
    path = tmp_path / "custom.onnx"
    onnx.save(classifier(op="Foo", domain="custom.ops"), str(path))
    with pytest.raises(BuildError, match=r"cannot parse the model: node 'act' \(Foo\)"):
        build_engine(path, tmp_path / "m.plan", RTX_OPTIONS)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["custom.onnx"]


def test_a_plan_that_fails_to_build_gets_the_first_error_and_its_node(tmp_path, net):
    """Turing (7.5) has no FP32 GEMM in TensorRT-RTX: the builder refuses the Gemm, and says which."""
    options = BuildOptions(backend="rtx", compute_capabilities=("7.5",))
    with pytest.raises(BuildError) as info:
        build_engine(net, tmp_path / "net.plan", options)
    message = str(info.value)
    assert "could not build the engine" in message and "(node 'fc', Gemm)" in message
    assert "\n" not in message and "no plan written" in message
    assert sorted(p.name for p in tmp_path.iterdir()) == ["net.onnx"]


def test_compute_capabilities_reach_the_builder_and_unknown_ones_are_refused(tmp_path, net):
    default = build_engine(net, tmp_path / "a.plan", RTX_OPTIONS).engine.size_bytes
    one = build_engine(net, tmp_path / "b.plan", BuildOptions(backend="rtx", compute_capabilities=("8.6",)))
    assert one.engine.size_bytes != default
    with pytest.raises(UsageError, match="9.0 is not one tensorrt_rtx builds for"):
        build_engine(net, tmp_path / "c.plan", BuildOptions(backend="rtx", compute_capabilities=("9.0",)))
    assert not (tmp_path / "c.plan").exists()


def test_sparse_weights_are_said_not_to_be_used(tmp_path):
    path, sparse = tmp_path / "slim.onnx", tmp_path / "slim.24.onnx"
    onnx.save(resnet_slim(), str(path))
    result = sparsify_model(onnx.load(str(path)), SparsifyOptions(min_channels=16))
    assert result.report["sparsified"] > 0
    onnx.save(result.model, str(sparse))
    engine = build_engine(sparse, tmp_path / "s.plan", RTX_OPTIONS).engine
    assert not engine.sparse_weights and engine.sparse_note is not None and "2:4" in engine.sparse_note


def _pruned_with_maps(tmp_path: Path) -> Path:
    source, pruned = tmp_path / "slim.onnx", tmp_path / "slim.pruned.onnx"
    onnx.save(resnet_slim(), str(source))
    api.prune(source, pruned, api.PlanOptions(ratio=0.5), verify=api.VerifyOptions(enabled=False))
    return pruned


def test_bias_maps_are_handed_over_in_the_backends_form_and_reported(tmp_path):
    pruned = _pruned_with_maps(tmp_path)
    auto = measure_engine(pruned, RTX_OPTIONS)
    assert auto.bias_maps["form"] == RTX.bias_maps and auto.bias_maps["maps"] > 0
    assert auto.bias_maps["converted"] == auto.bias_maps["maps"] and auto.bias_maps["exact"]
    interior = measure_engine(pruned, BuildOptions(backend="rtx", bias_maps="interior"))
    assert not interior.bias_maps["exact"] and interior.bias_maps["border_max_abs"] > 0
    assert interior.size_bytes < auto.size_bytes  # no map left to store or compute
    assert sorted(p.name for p in tmp_path.iterdir()) == ["slim.onnx", "slim.pruned.onnx"]  # measured only
