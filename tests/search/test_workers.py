"""Where a search's evaluations run: one process, a local pool, a Ray cluster. Each must give the same
curves, in the same order; a killed worker's tasks run again; a cluster that cannot be reached is one line
before any work."""

from __future__ import annotations

import json
import os
import signal
import socket
import sys
from dataclasses import replace
from pathlib import Path

import onnx
import pytest
from typer.testing import CliRunner

import onnxprune.files
import onnxprune.search.workers as workers_module
from onnxprune import api
from onnxprune.cli import app
from onnxprune.data import load_calibration
from onnxprune.errors import CapabilityError, UsageError, WorkerError
from onnxprune.options import PlanOptions
from onnxprune.pipeline import prepare
from onnxprune.search.budget import SearchData, measure
from onnxprune.search.ray_cluster import endpoint
from onnxprune.search.sensitivity import SensitivityOptions
from onnxprune.search.workers import WorkerOptions, Workers

MNIST = Path(__file__).parents[2] / "models" / "mnist"
RESNET, VGG = MNIST / "mnist_resnet.plain.onnx", MNIST / "mnist_vgg.plain.onnx"
CALIB = MNIST / "mnist5k_calib.npz"
FEW = SensitivityOptions(samples=16)
runner = CliRunner()


def _curves(found: api.Sensitivity) -> dict:
    """The sensitivity's JSON without its wall time (the one field that may differ between runs)."""
    record = found.to_dict()
    assert record.pop("seconds") >= 0
    return record


@pytest.fixture(scope="module")
def scan() -> tuple:
    """MNIST ResNet (residual Adds, calibration's linear rebuild) prepared, with the curves one process
    measures: what every other placement must reproduce exactly."""
    model = onnx.load(RESNET)
    samples = {k: v[:96] for k, v in load_calibration(CALIB, model).items()}
    options = PlanOptions(ratio=0.0, compensate="calib")
    prepared = prepare(model, options)
    data = SearchData(samples, 0.1, sensitivity=FEW)
    with Workers(WorkerOptions(workers=1)) as one:
        found, _ = measure(prepared, options, SearchData(samples, 0.1, sensitivity=FEW, workers=one))
    return prepared, options, data, _curves(found)


def _measured_on(workers: Workers, scan: tuple) -> dict:
    prepared, options, data, _ = scan
    with workers:
        found, _ = measure(prepared, options, replace(data, workers=workers))
    return _curves(found)


def test_a_local_pool_gives_what_one_process_gives(scan) -> None:
    pids: set[int] = set()
    workers = Workers(WorkerOptions(workers=2), on_result=pids.add)
    found = _measured_on(workers, scan)
    assert found == scan[3]
    assert found["evaluations"] > 10 and len(pids) == 2 and os.getpid() not in pids
    assert workers.restarts == 0


def test_a_killed_worker_has_its_tasks_run_again_with_the_same_result(scan) -> None:
    killed: list[int] = []

    def kill_the_first(pid: int) -> None:
        if not killed:
            killed.append(pid)
            os.kill(pid, signal.SIGKILL)

    workers = Workers(WorkerOptions(workers=2), on_result=kill_the_first)
    assert _measured_on(workers, scan) == scan[3]
    assert killed and workers.restarts >= 1


def test_workers_that_keep_dying_give_up_with_one_line(scan, monkeypatch) -> None:
    monkeypatch.setattr(workers_module, "MAX_RESTARTS", 1)
    workers = Workers(WorkerOptions(workers=2), on_result=lambda pid: os.kill(pid, signal.SIGKILL))
    with pytest.raises(WorkerError, match="workers died 2 times"):
        _measured_on(workers, scan)


def test_default_workers_start_a_pool_only_where_the_tasks_pay_for_it(scan, monkeypatch) -> None:
    """Left at one per core, short tasks stay in this process; long ones (here: any, with the bar
    lowered) go to the pool after the first, timed one. Either way the same curves."""
    pids: set[int] = set()
    workers = Workers(WorkerOptions(workers=None), on_result=pids.add)
    if not workers.adaptive:
        pytest.skip("one core here: the default is this process")
    assert _measured_on(workers, scan) == scan[3] and not pids
    monkeypatch.setattr(workers_module, "POOL_PAYS_SECONDS", 0.0)
    workers = Workers(WorkerOptions(workers=None), on_result=pids.add)
    assert _measured_on(workers, scan) == scan[3]
    assert pids and os.getpid() not in pids


def test_ray_local_gives_what_one_process_gives(scan) -> None:
    ray = pytest.importorskip("ray", reason="Ray is not installed (the [ray] extra)")
    workers = Workers(WorkerOptions(workers=2, ray="local"))
    try:
        workers.open()
    except WorkerError as err:
        pytest.skip(f"Ray cannot start a local cluster here: {err}")
    assert "2 Ray CPUs" in workers.describe()
    assert _measured_on(workers, scan) == scan[3]
    assert not ray.is_initialized(), "the cluster started for the search is stopped with it"


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_an_unreachable_cluster_is_one_line_and_exit_1_before_any_work(tmp_path: Path, monkeypatch) -> None:
    pytest.importorskip("ray", reason="Ray is not installed (the [ray] extra)")

    def no_work(*_args, **_kwargs):
        raise AssertionError("the model was read before the cluster was reached")

    monkeypatch.setattr(onnxprune.files, "read_model", no_work)
    address = f"127.0.0.1:{_closed_port()}"
    data = ["--calib", str(CALIB), "--calib-samples", "64", "--ray", address]
    out = tmp_path / "out.onnx"
    for args in (
        ["sensitivity", str(VGG), *data],
        ["prune", str(VGG), "-o", str(out), "--target-macs", "0.5", *data],
        ["sweep", str(VGG), "--targets", "0.5", "--no-bench", *data],
    ):
        result = runner.invoke(app, args)
        assert result.exit_code == 1, result.output
        assert f"error: cannot reach the Ray cluster at {address}" in result.output
        assert len(result.output.strip().splitlines()) == 1 and "Traceback" not in result.output
    assert not out.exists()


def test_without_ray_the_error_names_the_extra(monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray raises ImportError
    with pytest.raises(CapabilityError, match=r"pip install 'onnxprune\[ray\]'"):
        Workers(WorkerOptions(ray="local")).open()


def test_bad_worker_options_are_usage_errors() -> None:
    with pytest.raises(UsageError, match="--workers must be at least 1"):
        WorkerOptions(workers=0)
    with pytest.raises(UsageError, match="the port must be a number"):
        endpoint("head:port")
    assert endpoint("ray://head") == ("head", 10001) and endpoint("10.0.0.1:6380") == ("10.0.0.1", 6380)
    assert endpoint("local") is None and endpoint("auto") is None
    result = runner.invoke(app, ["sensitivity", str(VGG), "--calib", str(CALIB), "--workers", "0"])
    assert result.exit_code == 2 and "--workers must be at least 1" in result.output


def test_the_sensitivity_command_writes_the_same_json_on_two_workers(tmp_path: Path) -> None:
    found = {}
    for workers in ("1", "2"):
        path = tmp_path / f"w{workers}.json"
        args = ["sensitivity", str(VGG), "--calib", str(CALIB), "--calib-samples", "96",
                "--sensitivity-samples", "16", "--workers", workers, "--json", str(path)]  # fmt: skip
        result = runner.invoke(app, args)
        assert result.exit_code == 0, result.output
        found[workers] = json.loads(path.read_text())
        found[workers].pop("seconds")
    assert found["1"] == found["2"]


@pytest.mark.slow
def test_a_sweep_gives_the_same_points_on_two_workers() -> None:
    """Plans allocated by sensitivity (scanned on the workers), then each point pruned, calibrated and
    measured on a worker: every field but the wall times equal one process's."""
    found = {}
    for workers in ("1", "2"):
        args = ["sweep", str(VGG), "--targets", "0.7,0.4", "--calib", str(CALIB), "--calib-samples", "96",
                "--no-bench", "--json", "--workers", workers]  # fmt: skip
        result = runner.invoke(app, args)
        assert result.exit_code == 0, result.output
        record = json.loads(result.stdout)
        record.pop("analysis_seconds")
        for point in record["points"]:
            point.pop("seconds")
        found[workers] = record
    # Equal to the last bit, calibrated points too: calibration's linear algebra runs on one BLAS thread
    # everywhere (this process's BLAS has two threads here, the spawned workers' one: OMP_NUM_THREADS=1
    # is set after numpy loaded).
    one, two = found["1"].pop("points"), found["2"].pop("points")
    assert found["1"] == found["2"]
    assert one == two
    assert [p["compensate"] for p in two[1:]] == ["bn", "calib", "bn", "calib"]
    assert {p["allocation"] for p in two[1:]} == {"sensitivity"}
