"""The command line, through typer's CliRunner: output, report, exit codes, and files left behind."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import tiny
from typer.testing import CliRunner

from onnxprune.cli import app

runner = CliRunner()


def invoke(*args: object):
    return runner.invoke(app, [str(a) for a in args])


def test_inspect_prints_groups_and_explains_declines(sample: Path) -> None:
    result = invoke("inspect", sample)
    assert result.exit_code == 0, result.output
    assert "prunable" in result.output
    explained = invoke("inspect", sample, "--explain")
    assert "reaches graph output" in explained.output


def test_inspect_explain_lists_the_channels_a_compensation_mode_must_keep(tmp_path: Path) -> None:
    """Sigmoid(0) = 0.5 into a padded depthwise Conv: --compensate none must keep those channels (bn folds
    their interior value), and --explain says which, how many and why; prune's summary points there."""
    from rules.test_conv import _depthwise_after_sigmoid

    path = tmp_path / "dw.onnx"
    onnx.save(_depthwise_after_sigmoid(), path)
    explained = invoke("inspect", path, "--explain", "--compensate", "none")
    assert explained.exit_code == 0, explained.output
    assert "channels that must stay with --compensate none" in explained.output
    assert "16 of 16: a zero-padded depthwise Conv" in " ".join(explained.output.split())
    assert "must stay" not in invoke("inspect", path, "--explain").output  # bn, the default: none stays
    pruned = invoke("prune", path, "-o", tmp_path / "p.onnx", "--ratio", "0.5", "--compensate", "none")
    assert "channels must stay (inspect --explain --compensate none says why)" in pruned.output


def test_inspect_json_is_json_only(sample: Path) -> None:
    result = invoke("inspect", sample, "--json")
    payload = json.loads(result.stdout)
    group = next(g for g in payload["groups"] if g["prunable"])
    assert {"nodes", "channels", "gamma", "macs_share", "declines", "criterion"} <= set(group)
    assert group["gamma"]["min"] <= group["gamma"]["median"] <= group["gamma"]["max"]


def test_inspect_json_says_its_warnings_on_stderr(tmp_path: Path) -> None:
    dense = tmp_path / "dense.onnx"
    onnx.save(tiny.chain(dead=0.0), dense)  # not trained for slimming: inspect warns
    result = invoke("inspect", dense, "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["warnings"]
    assert result.stderr.startswith("warning: |gamma| is not bimodal")


def test_prune_writes_model_and_report(sample: Path, tmp_path: Path) -> None:
    out, report = tmp_path / "pruned.onnx", tmp_path / "report.json"
    result = invoke(
        "prune", sample, "-o", out, "--ratio", "0.5", "--round-to", "4", "--min-keep", "4", "--report", report
    )
    assert result.exit_code == 0, result.output
    data = json.loads(report.read_text())
    assert data["macs"]["after"] < data["macs"]["before"]
    assert data["params"]["after"] < data["params"]["before"]
    assert data["verify"]["exact"]["passed"] is True
    assert {"channels_before", "channels_after", "kept", "nodes"} <= set(data["groups"][0])
    assert any(d["reason"].startswith("reaches graph output") for d in data["declined"])
    assert all(g["channels_after"] % 4 == 0 for g in data["groups"])
    original_names = {n.name for n in onnx.load(sample).graph.node}
    assert original_names <= {n.name for n in onnx.load(out).graph.node}, "node names are kept"
    assert "exact" in result.output and "cosine" in result.output


def test_prune_threshold_zero_is_exact_through_the_cli(sample: Path, tmp_path: Path) -> None:
    out = tmp_path / "pruned.onnx"
    result = invoke(
        "prune", sample, "-o", out, "--threshold", "0", "--round-to", "1", "--min-keep", "1", "--json"
    )
    report = json.loads(result.stdout)
    assert report["verify"]["change"]["passed"] is True
    tiny.assert_exact(onnx.load(sample), onnx.load(out))


@pytest.mark.parametrize(
    "args",
    [
        ["--ratio", "1.5"],
        ["--ratio", "0.5", "--threshold", "0.1"],
        [],
        ["--ratio", "0.5", "--scope", "model"],
        ["--ratio", "0.5", "--criterion", "magic"],
    ],
)
def test_bad_usage_exits_2_and_writes_nothing(sample: Path, tmp_path: Path, args: list[str]) -> None:
    out = tmp_path / "pruned.onnx"
    result = invoke("prune", sample, "-o", out, *args)
    assert result.exit_code == 2, result.output
    assert not out.exists()
    assert "Traceback" not in result.output


def test_output_equal_to_input_is_refused(sample: Path) -> None:
    before = sample.read_bytes()
    result = invoke("prune", sample, "-o", sample, "--ratio", "0.5")
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "would overwrite the input model" in lines[0], result.stderr
    assert sample.read_bytes() == before
    assert sorted(p.name for p in sample.parent.iterdir()) == [sample.name], "no temporary left behind"


def test_check_identical_and_tampered(sample: Path, tmp_path: Path) -> None:
    assert invoke("check", sample, sample).exit_code == 0
    tampered = onnx.load(sample)
    weight = next(t for t in tampered.graph.initializer if len(t.dims) == 4)
    values = onnx.numpy_helper.to_array(weight).copy()
    values[0] += 0.5
    weight.CopyFrom(onnx.numpy_helper.from_array(values, weight.name))
    other = tmp_path / "tampered.onnx"
    onnx.save(tampered, other)
    result = invoke("check", sample, other, "--json")
    assert result.exit_code == 1
    payload = json.loads(result.stdout)
    assert payload["passed"] is False and payload["outputs"][0]["max_abs_err"] > 0


def test_check_with_npz_inputs_and_loose_tolerance(sample: Path, tmp_path: Path) -> None:
    data = tmp_path / "inputs.npz"
    np.savez(data, input=np.random.default_rng(0).standard_normal((1, 3, 16, 16)).astype(np.float32))
    pruned = tmp_path / "pruned.onnx"
    invoke(
        "prune", sample, "-o", pruned, "--ratio", "0.3", "--round-to", "1", "--min-keep", "1", "--no-verify"
    )
    assert invoke("check", sample, pruned, "--inputs", data, "--atol", "1e9").exit_code == 0


def test_missing_model_is_one_line(tmp_path: Path) -> None:
    result = invoke("inspect", tmp_path / "nope.onnx")
    assert result.exit_code == 1
    assert "no such file" in result.output and "Traceback" not in result.output


def _no_builder(monkeypatch: pytest.MonkeyPatch) -> None:
    """A machine with neither TensorRT nor TensorRT-RTX, as the backends see it."""
    from onnxprune.engine import backends

    monkeypatch.setattr(backends, "has_module", lambda name: False)
    monkeypatch.setattr(backends, "has_cuda_device", lambda: False)


def test_build_without_any_builder_names_the_extras_and_writes_only_the_onnx(
    sample: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _no_builder(monkeypatch)
    plan, fp16 = tmp_path / "m.plan", tmp_path / "m.fp16.onnx"
    result = invoke("build", sample, "-o", plan, "--fp16", "--save-onnx", fp16)
    assert result.exit_code == 1
    assert "onnxprune[rtx]" in result.output and "onnxprune[trt]" in result.output
    assert "Traceback" not in result.output
    assert fp16.exists() and not plan.exists()


def test_prune_with_plan_and_no_builder_refuses_before_any_work(
    sample: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from onnxprune import api

    _no_builder(monkeypatch)

    def no_work(*args: object, **kwargs: object) -> None:
        raise AssertionError("pruned although no plan can be built")

    monkeypatch.setattr(api, "prune", no_work)
    out, plan, report = tmp_path / "p.onnx", tmp_path / "p.plan", tmp_path / "r.json"
    args = ("--ratio", "0.5", "--round-to", "4", "--plan", plan, "--report", report)
    result = invoke("prune", sample, "-o", out, *args)
    assert result.exit_code == 1, result.output
    line = result.stderr.strip()
    assert len(line.splitlines()) == 1 and "onnxprune[rtx]" in line, line
    assert str(out) not in line and str(plan) not in line  # names no file it did not write
    assert sorted(p.name for p in tmp_path.iterdir()) == [sample.name]


def test_plan_options_without_plan_are_refused(sample: Path, tmp_path: Path) -> None:
    result = invoke("prune", sample, "-o", tmp_path / "p.onnx", "--ratio", "0.5", "--backend", "rtx")
    assert result.exit_code == 2 and "give --plan too" in result.output


def test_inspect_lists_conv_bn_pairs(sample: Path) -> None:
    payload = json.loads(invoke("inspect", sample, "--json").stdout)
    pairs = payload["conv_bn_pairs"]
    assert len(pairs) == 3 and all(p["producer_op"] == "Conv" for p in pairs)
    assert "3 Conv→BatchNormalization pairs" in invoke("inspect", sample).output


def test_a_saved_report_replays_the_same_plan(sample: Path, tmp_path: Path) -> None:
    first, report = tmp_path / "a.onnx", tmp_path / "a.json"
    invoke(
        "prune", sample, "-o", first, "--ratio", "0.5", "--round-to", "4", "--report", report, "--no-verify"
    )
    second = tmp_path / "b.onnx"
    result = invoke("prune", sample, "-o", second, "--replay", report)
    assert result.exit_code == 0, result.output
    tiny.assert_exact(onnx.load(first), onnx.load(second), rtol=0.0)


def test_a_plan_for_another_model_is_refused(sample: Path, tmp_path: Path) -> None:
    report = tmp_path / "a.json"
    invoke("prune", sample, "-o", tmp_path / "a.onnx", "--ratio", "0.5", "--report", report, "--no-verify")
    other = tmp_path / "chain.onnx"
    onnx.save(tiny.chain(), other)
    result = invoke("prune", other, "-o", tmp_path / "b.onnx", "--replay", report)
    assert result.exit_code == 2 and "does not fit this model" in result.output


@pytest.mark.parametrize("args", [["--ratio", "abc"], ["--bogus"], ["--ratio", "1.5"]])
def test_console_script_usage_errors_are_one_line(sample: Path, tmp_path: Path, args: list[str]) -> None:
    import subprocess
    import sys

    script = Path(sys.executable).parent / "onnxprune"
    run = subprocess.run(
        [str(script), "prune", str(sample), "-o", str(tmp_path / "p.onnx"), *args],
        capture_output=True,
        text=True,
    )
    assert run.returncode == 2
    assert len(run.stderr.strip().splitlines()) == 1 and run.stderr.startswith("error:")
    assert not (tmp_path / "p.onnx").exists()


def test_without_onnxruntime_prune_says_what_to_install(
    sample: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import builtins

    real_import = builtins.__import__

    def no_onnxruntime(name, *args, **kwargs):
        if name == "onnxruntime" or name.startswith("onnxruntime."):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_onnxruntime)
    out = tmp_path / "p.onnx"
    result = invoke("prune", sample, "-o", out, "--ratio", "0.5", "--no-verify")
    assert result.exit_code == 1 and "onnxprune[cpu]" in result.output and not out.exists()


def test_prune_compensate_option(sample: Path, tmp_path: Path) -> None:
    out, report = tmp_path / "pruned.onnx", tmp_path / "report.json"
    bad = invoke("prune", sample, "-o", out, "--ratio", "0.5", "--compensate", "mean")
    assert bad.exit_code == 2 and "--compensate must be one of auto, none, bn, calib" in bad.output
    assert not out.exists()
    calib = invoke("prune", sample, "-o", out, "--ratio", "0.5", "--compensate", "calib")
    assert calib.exit_code == 2 and "calibration data" in calib.output and not out.exists()
    for mode in ("none", "bn"):
        args = ("--ratio", "0.5", "--compensate", mode, "--report", report)
        result = invoke("prune", sample, "-o", out, *args)
        assert result.exit_code == 0, result.output
        saved = json.loads(report.read_text())
        assert saved["options"]["compensate"] == mode and saved["compensation"]["mode"] == mode
    assert "compensation (bn)" in result.output


@pytest.mark.parametrize("command", ["prune", "inspect", "sweep", "train"])
def test_the_one_command_parser_says_what_the_full_app_says(command: str, sample: Path) -> None:
    """The console script builds only the command named (typer's parser for all eight costs 50 ms at
    each start): help, usage errors and a run must read the same as through the full app."""
    from onnxprune.cli import COMMANDS, app_for

    one, full = app_for(["onnxprune", command]), app_for(["onnxprune"])
    assert _names(one) == [command] and _names(full) == list(COMMANDS)
    for args in (["--help"], ["--bogus"], [str(sample), "--ratio", "abc"]):
        ours = runner.invoke(one, [command, *args], prog_name="onnxprune")
        theirs = runner.invoke(full, [command, *args], prog_name="onnxprune")
        assert (ours.exit_code, ours.output) == (theirs.exit_code, theirs.output)
    assert "Usage: onnxprune" in runner.invoke(one, [command, "--help"], prog_name="onnxprune").output


def test_a_bare_or_unknown_command_gets_the_full_app() -> None:
    from onnxprune.cli import COMMANDS, app_for

    for argv in (["onnxprune"], ["onnxprune", "--help"], ["onnxprune", "prunee"]):
        assert _names(app_for(argv)) == list(COMMANDS)
    listed = runner.invoke(app_for(["onnxprune", "--help"]), ["--help"], prog_name="onnxprune").output
    assert all(name in listed for name in COMMANDS)


def _names(app) -> list[str]:
    import typer

    return list(typer.main.get_command(app).commands)


def test_check_says_what_it_compares_with() -> None:
    shown = invoke("check", "--help").output
    assert "in ONNX Runtime" in shown and "with Polygraphy" not in shown


def test_inspect_offers_only_the_criteria_it_can_rank_by(sample: Path) -> None:
    shown = invoke("inspect", "--help").output
    assert "[auto|gamma|l1|l2]" in shown and "l2|activation" not in shown
    refused = invoke("inspect", sample, "--criterion", "activation")
    assert refused.exit_code == 2 and "prune with --calib" in refused.output


def _default_sigint() -> None:
    import signal

    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_ctrl_c_at_any_moment_of_start_up_prints_no_traceback(tmp_path: Path) -> None:
    """SIGINT at several moments of a console-script start (imports, parser, reading the model): one line
    and exit 130 each time, never a traceback."""
    import signal
    import subprocess
    import sys
    import time

    script = Path(sys.executable).parent / "onnxprune"
    if not script.exists():
        pytest.skip("the onnxprune console script is not installed beside this Python")
    model = Path(__file__).parents[1] / "data" / "resnet50.graph.onnx"
    args = [str(script), "inspect", str(model)]
    interrupted, codes = 0, []
    # Later and later moments, 0.1 s apart, until a run ends on its own before its signal (inspect's exit
    # code, 1 on this weight-free file): the early ones may land in
    # Python's own start-up (before onnxprune's first line runs, a signal just ends the process), the
    # later ones must find the handler. Fixed delays, or shares of a timed run, missed that window on a
    # busy machine.
    began = time.perf_counter()
    subprocess.run(args, capture_output=True, timeout=120)
    longest = 2 * (time.perf_counter() - began) + 1.0  # past any run's end, should none end with 0
    delay = 0.0
    while delay < longest and not (codes and codes[-1][1] not in (130, -signal.SIGINT)):
        delay += 0.1
        # As from a shell: SIGINT at its default, whatever this test process inherited or set.
        started = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                   preexec_fn=_default_sigint)  # fmt: skip
        time.sleep(delay)
        started.send_signal(signal.SIGINT)
        _, err = started.communicate(timeout=60)
        codes.append((round(delay, 2), started.returncode))
        assert "Traceback" not in err, f"after {delay} s:\n{err}"
        if started.returncode == 130:
            assert err.strip().endswith("interrupted"), f"after {delay:.1f} s: {err!r}; so far {codes}"
            interrupted += 1
    assert interrupted >= 2, f"the signals landed during start-up and were handled: {codes}"


def test_inputs_take_the_labelled_x_y_layout(sample: Path, tmp_path: Path) -> None:
    """An .npz of x (samples) and y (labels), as sweep --labels and train take it, feeds a single-input
    model named otherwise; y feeds nothing."""
    labelled = tmp_path / "labelled.npz"
    rng = np.random.default_rng(0)
    np.savez(labelled, x=rng.standard_normal((4, 3, 16, 16)).astype(np.float32), y=np.arange(4))
    out = tmp_path / "pruned.onnx"
    result = invoke("prune", sample, "-o", out, "--ratio", "0.5", "--inputs", labelled, "--iterations", "2")
    assert result.exit_code == 0, result.output
    assert "2 feed(s) from labelled.npz" in result.output
    checked = invoke("check", sample, out, "--inputs", labelled, "--iterations", "4", "--atol", "10")
    assert checked.exit_code == 0, checked.output
