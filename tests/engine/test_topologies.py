"""Real TensorRT-RTX plans, built on the CPU, of the demo model and of every ``tests/data`` topology pruned at
``--target-macs 0.5`` (seeded weights, ``tests/weights.py``). Skipped, saying why, where the wheel does not
load. A topology the target cannot be reached on (every group declined) builds its original instead, and the
test says which."""

from __future__ import annotations

from pathlib import Path

import onnx
import pytest
import weights
from build_samples import resnet_slim

from engine._rtx import needs_rtx
from onnxprune import api
from onnxprune.devices import has_cuda_device
from onnxprune.engine import BuildOptions, build_engine
from onnxprune.search.targets import Target, TargetError

pytestmark = needs_rtx
# Every group of these is declined (inspect --explain says why): nothing to prune to the target.
UNPRUNABLE = {"convnext_tiny"}
# Over 5 s each here (prune, then build): marked slow, and run by `make test` all the same.
HEAVY = {"convnext_tiny", "densenet121", "regnet_y_400mf", "resnet50", "resnext50_32x4d",
         "shufflenet_v2_x1_0", "vgg11_bn_fc256", "yolov8n"}  # fmt: skip


def _check_plan(path: Path, plan: Path) -> None:
    result = build_engine(path, plan, BuildOptions(backend="rtx"))
    engine = result.engine
    assert plan.stat().st_size == engine.size_bytes > 0
    assert engine.layers is not None and engine.layers > 0 and plan.with_suffix(".layers.json").exists()
    maps = engine.bias_maps
    assert maps["exact"] and maps["converted"] + len(maps["left"]) == maps["maps"]
    if not has_cuda_device():
        assert result.comparison is None and engine.not_compared


@pytest.mark.parametrize(
    "name", [pytest.param(n, marks=[pytest.mark.slow] if n in HEAVY else []) for n in weights.topologies()]
)
def test_the_pruned_topology_builds(tmp_path, name):
    original = weights.load(name)
    options = api.PlanOptions(ratio=0.0)
    source, path = tmp_path / f"{name}.onnx", tmp_path / f"{name}.pruned.onnx"
    onnx.save(original, str(source))
    if name in UNPRUNABLE:
        with pytest.raises(TargetError, match="cannot reach macs 0.5"):
            api.prune(
                source, path, options, verify=api.VerifyOptions(enabled=False), target=Target("macs", 0.5)
            )
        _check_plan(source, tmp_path / f"{name}.plan")
        return
    result = api.prune(
        source, path, options, verify=api.VerifyOptions(enabled=False), target=Target("macs", 0.5)
    )
    assert result.report["macs"]["after"] < 0.55 * result.report["macs"]["before"]
    _check_plan(path, tmp_path / f"{name}.pruned.plan")


def test_the_demo_model_builds_pruned(tmp_path):
    source, path = tmp_path / "resnet_slim.onnx", tmp_path / "resnet_slim.pruned.onnx"
    onnx.save(resnet_slim(), str(source))
    api.prune(source, path, api.PlanOptions(ratio=0.5), verify=api.VerifyOptions(enabled=False))
    _check_plan(path, tmp_path / "resnet_slim.pruned.plan")
