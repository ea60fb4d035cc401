"""Hostile and unusual input, through the CLI: every error is one line on stderr with exit 1 (model, files,
verification) or 2 (bad usage), no traceback, and nothing is left behind; unusual models prune or decline.

Also the external-data round trip (a few MB with external data forced) that stands in for models over 2 GB;
``benchmarks/large_model.py`` measures the real thing.
"""

from __future__ import annotations

import errno
import os
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
import tiny
from onnx import TensorProto, helper, numpy_helper
from typer.testing import CliRunner

from onnxprune import api
from onnxprune import files as onnxfiles
from onnxprune import graph as graphs
from onnxprune.cli import app
from onnxprune.options import PlanOptions

runner = CliRunner()
PRUNE = ("--ratio", "0.5", "--round-to", "1", "--min-keep", "1")
IS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0


def cli(*args: object):
    result = runner.invoke(app, [str(a) for a in args])
    crashed = result.exception is not None and not isinstance(result.exception, SystemExit)
    assert not crashed, f"uncaught {type(result.exception).__name__}: {result.exception}"
    assert "Traceback" not in result.output
    return result


def assert_error(result, code: int, *needles: str) -> None:
    """One line on stderr, nothing on stdout, the exit code, and the words a user needs."""
    assert result.exit_code == code, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert result.stdout == ""
    for needle in needles:
        assert needle in lines[0], lines[0]


def files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


@pytest.fixture()
def model_path(tmp_path: Path) -> Path:
    path = tmp_path / "model.onnx"
    onnx.save(tiny.residual(), path)
    return path


# ---- unreadable input ----------------------------------------------------------------------------------
def _write(tmp_path: Path, name: str, content: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(content)
    return path


BAD_INPUTS = {
    "empty": lambda d: _write(d, "empty.onnx", b""),
    "random_bytes": lambda d: _write(d, "random.onnx", np.random.default_rng(0).bytes(4096)),
    "truncated": lambda d: _write(d, "cut.onnx", tiny.chain().SerializeToString()[:3000]),
    "text": lambda d: _write(d, "notes.onnx", b"ir_version: 8\ngraph { name: 'g' }\n"),
    "tensor_not_model": lambda d: _write(
        d, "tensor.onnx", numpy_helper.from_array(np.ones(3, np.float32), "t").SerializeToString()
    ),
    "directory": lambda d: d,
    "missing": lambda d: d / "missing.onnx",
}


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
@pytest.mark.parametrize("command", ["inspect", "prune"])
def test_unreadable_input_is_one_line(case: str, command: str, tmp_path: Path) -> None:
    src = BAD_INPUTS[case](tmp_path)
    before = files(tmp_path)
    extra = ("-o", tmp_path / "out.onnx", "--ratio", "0.5") if command == "prune" else ()
    assert_error(cli(command, src, *extra), 1, str(src))
    assert files(tmp_path) == before


def test_extension_does_not_matter_content_does(tmp_path: Path) -> None:
    src = tmp_path / "model.weights.txt"
    onnx.save(tiny.chain(), src)
    out = tmp_path / "pruned.bin"
    assert cli("prune", src, "-o", out, *PRUNE).exit_code == 0
    assert onnx.load(out).graph.node


@pytest.mark.parametrize(
    "change, needle",
    [
        (lambda m: setattr(m, "ir_version", 99), "IR version 99"),
        (lambda m: setattr(m.opset_import[0], "version", 99), "opset 99"),
    ],
)
def test_versions_onnx_cannot_read_are_refused(change, needle: str, tmp_path: Path) -> None:
    model = tiny.chain()
    change(model)
    src = tmp_path / "new.onnx"
    src.write_bytes(model.SerializeToString())
    for command in (["inspect", src], ["prune", src, "-o", tmp_path / "o.onnx", *PRUNE]):
        assert_error(cli(*command), 1, needle)
    assert files(tmp_path) == ["new.onnx"]


@pytest.mark.parametrize("broken", ["no_opset_import", "ir_version_2"])
def test_invalid_input_model_is_one_line_and_writes_nothing(broken: str, tmp_path: Path) -> None:
    model = tiny.chain()
    if broken == "no_opset_import":
        del model.opset_import[:]
    else:
        model.ir_version = 2
    src = tmp_path / "broken.onnx"
    src.write_bytes(model.SerializeToString())
    result = cli("prune", src, "-o", tmp_path / "o.onnx", *PRUNE)
    assert result.exit_code == 1 and result.stderr.strip().startswith("error: "), result.output
    assert len(result.stderr.strip().splitlines()) == 1
    assert files(tmp_path) == ["broken.onnx"]


# ---- external data --------------------------------------------------------------------------------------
def test_external_data_round_trips_through_the_api(model_path: Path, tmp_path: Path) -> None:
    out = tmp_path / "pruned.onnx"
    result = api.prune(
        model_path, out, PlanOptions(threshold=0.0, round_to=1, min_keep=1), external_data=True
    )
    assert files(tmp_path) == ["model.onnx", "pruned.onnx", "pruned.onnx.data"]
    assert out.stat().st_size < (tmp_path / "pruned.onnx.data").stat().st_size
    stored = onnx.load(out, load_external_data=False)
    locations = {e.value for t in stored.graph.initializer for e in t.external_data if e.key == "location"}
    assert locations == {"pruned.onnx.data"}, "relative to the model, never a temporary name"
    loaded = onnx.load(out)
    onnx.checker.check_model(loaded, full_check=True)
    original = onnx.load(model_path)
    tiny.assert_exact(original, loaded)  # only dead channels were removed
    tiny.assert_exact(result.pruned, loaded)  # and the caller's model still has its weights
    assert stat.S_IMODE(out.stat().st_mode) == stat.S_IMODE((tmp_path / "model.onnx").stat().st_mode)


def test_external_data_model_loads_prunes_and_saves_through_the_cli(model_path: Path, tmp_path: Path) -> None:
    ext = tmp_path / "ext"
    ext.mkdir()
    src = onnxfiles.save_model(onnx.load(model_path), ext / "big.onnx", external_data=True)
    assert files(ext) == ["big.onnx", "big.onnx.data"]
    out = tmp_path / "small.onnx"
    result = cli(
        "prune", src, "-o", out, "--threshold", "0", "--round-to", "1", "--min-keep", "1", "--external-data"
    )
    assert result.exit_code == 0, result.output
    assert (tmp_path / "small.onnx.data").exists()
    tiny.assert_exact(onnx.load(model_path), onnx.load(out))
    assert cli("prune", src, "-o", tmp_path / "inline.onnx", *PRUNE, "--no-external-data").exit_code == 0
    assert not (tmp_path / "inline.onnx.data").exists()


def test_saving_over_an_external_data_model_replaces_both_files(model_path: Path, tmp_path: Path) -> None:
    out = tmp_path / "out.onnx"
    onnxfiles.save_model(tiny.chain(), out, external_data=True)
    onnxfiles.save_model(onnx.load(model_path), out, external_data=True)
    assert files(tmp_path) == ["model.onnx", "out.onnx", "out.onnx.data"]
    tiny.assert_exact(onnx.load(model_path), onnx.load(out))


def _external_copy(model_path: Path, folder: Path) -> Path:
    folder.mkdir()
    return onnxfiles.save_model(onnx.load(model_path), folder / "m.onnx", external_data=True)


@pytest.mark.parametrize(
    "damage", ["missing_data", "truncated_data", "location_outside", "absolute_location"]
)
def test_damaged_external_data_is_one_line(damage: str, model_path: Path, tmp_path: Path) -> None:
    src = _external_copy(model_path, tmp_path / "ext")
    data = src.with_name("m.onnx.data")
    if damage == "missing_data":
        data.unlink()
    elif damage == "truncated_data":
        with open(data, "r+b") as handle:
            handle.truncate(100)
    else:
        model = onnx.load(src, load_external_data=False)
        target = "../elsewhere.data" if damage == "location_outside" else "/etc/passwd"
        for tensor in model.graph.initializer:
            for entry in tensor.external_data:
                if entry.key == "location":
                    entry.value = target
        src.write_bytes(model.SerializeToString())
    assert_error(cli("prune", src, "-o", tmp_path / "o.onnx", *PRUNE), 1, str(src))
    assert not (tmp_path / "o.onnx").exists()


def test_without_weights_infers_the_same_shapes_as_the_full_model() -> None:
    """Shape inference runs on a weightless skeleton, which is what makes models over 2 GB prunable."""
    model = tiny.concat()
    skeleton = onnxfiles.without_weights(model)
    assert skeleton.ByteSize() < model.ByteSize() / 4
    full = onnx.shape_inference.infer_shapes(model, data_prop=True)
    assert graphs.infer_shapes(model).graph.value_info == full.graph.value_info


@pytest.mark.slow
@pytest.mark.skipif(
    not os.environ.get("ONNXPRUNE_LARGE_TESTS"), reason="set ONNXPRUNE_LARGE_TESTS=1: ~2.2 GB"
)
def test_verification_of_a_model_over_2gb(tmp_path: Path) -> None:
    """The default CLI run, verification included, on a model past protobuf's limit (ONNX Runtime sessions
    read such models through external-data files)."""
    import large_model  # a benchmark script, imported only for this opt-in test

    src = tmp_path / "large.onnx"
    large_model.build(src, 2.2, 1024)
    result = cli("prune", src, "-o", tmp_path / "out.onnx", "--ratio", "0.5")
    assert result.exit_code == 0, result.output


# ---- unusual models ---------------------------------------------------------------------------------------
def if_model(outer_scope: bool = True) -> onnx.ModelProto:
    """An If whose branches read a Conv → BN → Relu output from the outer scope (as exporters write it)."""
    n = tiny.Net(seed=2)
    y = n.cbr(n.cbr("input", 3, 8), 8, 8)
    branch_in = y if outer_scope else "y_in"
    branches = {}
    for key, op in (("then_branch", "Relu"), ("else_branch", "Sigmoid")):
        body = [helper.make_node(op, [branch_in], [f"{key}_out"])]
        branches[key] = helper.make_graph(
            body, key, [], [helper.make_tensor_value_info(f"{key}_out", TensorProto.FLOAT, None)]
        )
    # The condition is computed at run time (a constant one would be folded away at load with its branch).
    cond = n.node("Greater", [n.node("ReduceMean", ["input"], keepdims=0), n.param(np.array(0.0), "zero")])
    z = n.node("If", [cond], **branches)
    return n.model([n.head(n.cbr(z, 8, 8), 8)])


def test_outer_scope_tensor_of_an_if_is_declined() -> None:
    model = if_model()
    y_producer = [n.name for n in model.graph.node if n.op_type == "Conv"][1]
    group = next(g for g in api.inspect(model).groups if y_producer in g.producers)
    assert not group.prunable


def test_if_with_outer_scope_reads_never_writes_a_wrong_model(tmp_path: Path) -> None:
    src, out = tmp_path / "if.onnx", tmp_path / "out.onnx"
    onnx.save(if_model(), src)
    result = cli("prune", src, "-o", out, *PRUNE)
    if result.exit_code == 0:  # the outer-scope read is declined, so the pruning is exact
        tiny.assert_exact(api.prune_model(onnx.load(src), PlanOptions(ratio=0.5)).masked, onnx.load(out))
    else:
        assert_error(result, 1)
        assert not out.exists()


def loop_model(front: bool = True) -> onnx.ModelProto:
    """A Loop over a feature map; ``front``: a prunable Conv → BN → Relu before it."""
    n = tiny.Net(seed=3)
    x = n.cbr(n.cbr("input", 3, 16), 16, 8) if front else n.cbr("input", 3, 8)
    body = helper.make_graph(
        [helper.make_node("Identity", ["c_in"], ["c_out"]), helper.make_node("Relu", ["v_in"], ["v_out"])],
        "body",
        [
            helper.make_tensor_value_info("i", TensorProto.INT64, []),
            helper.make_tensor_value_info("c_in", TensorProto.BOOL, []),
            helper.make_tensor_value_info("v_in", TensorProto.FLOAT, None),
        ],
        [
            helper.make_tensor_value_info("c_out", TensorProto.BOOL, []),
            helper.make_tensor_value_info("v_out", TensorProto.FLOAT, None),
        ],
    )
    n.inits.append(numpy_helper.from_array(np.array(2, np.int64), "trip"))
    z = n.node("Loop", ["trip", "", x], body=body)
    return n.model([n.head(n.cbr(z, 8, 8), 8)])


def test_loop_declines_its_channels_and_keeps_its_subgraph(tmp_path: Path) -> None:
    src, out = tmp_path / "loop.onnx", tmp_path / "out.onnx"
    model = loop_model()
    onnx.save(model, src)
    result = cli("prune", src, "-o", out, *PRUNE, "--json")
    assert result.exit_code == 0, result.output
    reasons = {d["reason"] for d in __import__("json").loads(result.stdout)["declined"]}
    assert any("Loop" in r for r in reasons), reasons
    pruned = onnx.load(out)
    body = [n for n in model.graph.node if n.op_type == "Loop"][0].attribute[0].g
    assert [n for n in pruned.graph.node if n.op_type == "Loop"][0].attribute[0].g == body
    tiny.assert_exact(api.prune_model(model, PlanOptions(ratio=0.5, round_to=1, min_keep=1)).masked, pruned)


def qdq_model(weights_too: bool, front: bool = True) -> onnx.ModelProto:
    """Quantize → Dequantize on activations, and with ``weights_too`` int8 weights behind DequantizeLinear;
    ``front``: a prunable Conv → BN → Relu before them."""
    n = tiny.Net(seed=4)
    x = n.cbr(n.cbr("input", 3, 16), 16, 8) if front else n.cbr("input", 3, 8)
    n.inits += [
        numpy_helper.from_array(np.array(0.05, np.float32), "s"),
        numpy_helper.from_array(np.array(0, np.uint8), "zp"),
    ]
    x = n.node("DequantizeLinear", [n.node("QuantizeLinear", [x, "s", "zp"]), "s", "zp"])
    if weights_too:
        q = np.random.default_rng(0).integers(-100, 100, (8, 8, 3, 3)).astype(np.int8)
        n.inits += [
            numpy_helper.from_array(q, "wq"),
            numpy_helper.from_array(np.array(0.01, np.float32), "ws"),
            numpy_helper.from_array(np.array(0, np.int8), "wzp"),
        ]
        w = n.node("DequantizeLinear", ["wq", "ws", "wzp"])
        x = n.node("Relu", [n.bn(n.node("Conv", [x, w], kernel_shape=[3, 3], pads=[1] * 4), 8)])
    return n.model([n.head(x, 8)])


@pytest.mark.parametrize(
    "model, needle",
    [(lambda: loop_model(front=False), "Loop"), (lambda: qdq_model(False, front=False), "QuantizeLinear")],
)
def test_a_model_with_nothing_prunable_says_so_and_writes_nothing(model, needle: str, tmp_path: Path) -> None:
    """Not an empty table and a copy of the input (nor a validation error about a model nothing changed)."""
    src, out = tmp_path / "m.onnx", tmp_path / "out.onnx"
    onnx.save(model(), src)
    assert_error(cli("prune", src, "-o", out, *PRUNE), 1, "nothing to prune: ", "all declined", needle)
    assert files(tmp_path) == ["m.onnx"]


@pytest.mark.parametrize("weights_too", [False, True])
def test_quantized_models_decline_with_a_reason(weights_too: bool, tmp_path: Path) -> None:
    src, out = tmp_path / "qdq.onnx", tmp_path / "out.onnx"
    onnx.save(qdq_model(weights_too), src)
    found = api.inspect(src)
    first_conv = [n.name for n in onnx.load(src).graph.node if n.op_type == "Conv"][1]
    quantized_group = next(g for g in found.groups if first_conv in g.producers)
    reasons = [str(d) for d in quantized_group.declines]
    assert any("QuantizeLinear" in r for r in reasons), reasons
    if weights_too:
        everything = " ".join(str(d) for g in found.groups for d in g.declines)
        assert "weight is not a constant" in everything, "a Conv reading a dequantized weight is not sliced"
    result = cli("prune", src, "-o", out, *PRUNE)
    assert result.exit_code == 0, result.output
    pruned = onnx.load(out)
    quantized = [n for n in pruned.graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")]
    assert len(quantized) == (3 if weights_too else 2), "Q/DQ nodes stay as they were"
    if weights_too:
        original = {t.name: t for t in onnx.load(src).graph.initializer}
        assert next(t for t in pruned.graph.initializer if t.name == "wq") == original["wq"]


def test_float16_model_prunes_exactly(tmp_path: Path) -> None:
    from onnxprune.fp16 import convert_to_fp16

    src, out = tmp_path / "fp16.onnx", tmp_path / "out.onnx"
    onnx.save(convert_to_fp16(tiny.chain()), src)
    result = cli("prune", src, "-o", out, "--threshold", "0", "--round-to", "1", "--min-keep", "1", "--json")
    assert result.exit_code == 0, result.output
    pruned = onnx.load(out)
    types = {t.data_type for t in pruned.graph.initializer if t.data_type in (TensorProto.FLOAT16,)}
    assert types == {TensorProto.FLOAT16}
    report = __import__("json").loads(result.stdout)
    assert sum(g["channels_before"] - g["channels_after"] for g in report["groups"]) > 0
    tiny.assert_exact(onnx.load(src), pruned, rtol=1e-3)


@pytest.mark.parametrize("min_keep", [1, 8])
def test_every_channel_dead_keeps_min_keep(min_keep: int, tmp_path: Path) -> None:
    n = tiny.Net(seed=5, dead=1.0)
    model = n.model([n.head(n.cbr(n.cbr("input", 3, 16), 16, 12), 12)])
    src, out, report = tmp_path / "dead.onnx", tmp_path / "out.onnx", tmp_path / "r.json"
    onnx.save(model, src)
    args = ("--threshold", "0", "--round-to", "1", "--min-keep", min_keep, "--report", report)
    assert cli("prune", src, "-o", out, *args).exit_code == 0
    groups = __import__("json").loads(report.read_text())["groups"]
    assert sorted(g["channels_after"] for g in groups) == [min_keep, min_keep]
    tiny.assert_exact(model, onnx.load(out))


# ---- where the output goes ------------------------------------------------------------------------------
def test_output_equal_to_input_is_refused_and_input_untouched(model_path: Path, tmp_path: Path) -> None:
    before = model_path.read_bytes()
    link = tmp_path / "link.onnx"
    link.symlink_to(model_path)
    other = tmp_path / "sub"
    other.mkdir()
    for target in (model_path, tmp_path / "sub" / ".." / "model.onnx", link):
        assert_error(cli("prune", model_path, "-o", target, *PRUNE), 2, "overwrite the input")
    assert_error(cli("prune", model_path, "-o", tmp_path / "o.onnx", *PRUNE, "--report", model_path), 2)
    assert model_path.read_bytes() == before
    assert files(tmp_path) == ["link.onnx", "model.onnx", "sub"]


@pytest.mark.parametrize("where", ["missing_dir", "a_directory", "report_missing_dir"])
def test_output_that_cannot_be_a_file_is_one_line(where: str, model_path: Path, tmp_path: Path) -> None:
    out, extra = tmp_path / "out.onnx", []
    if where == "missing_dir":
        out = tmp_path / "nowhere" / "out.onnx"
    elif where == "a_directory":
        out = tmp_path
    else:
        extra = ["--report", tmp_path / "nowhere" / "r.json"]
    assert_error(
        cli("prune", model_path, "-o", out, *PRUNE, *extra), 1, "nowhere" if "missing" in where else ""
    )
    assert files(tmp_path) == ["model.onnx"]


@pytest.mark.skipif(IS_ROOT, reason="root writes into 0o500 directories; the /proc and /sys cases cover it")
def test_read_only_directory_is_one_line(model_path: Path, tmp_path: Path) -> None:
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        assert_error(cli("prune", model_path, "-o", locked / "out.onnx", *PRUNE), 1, "locked")
        assert list(locked.iterdir()) == []
    finally:
        locked.chmod(0o700)


@pytest.mark.parametrize("folder", ["/proc", "/sys"])
def test_unwritable_system_directory_is_one_line(folder: str, model_path: Path) -> None:
    if not Path(folder).is_dir():
        pytest.skip(f"no {folder} here")
    assert_error(cli("prune", model_path, "-o", f"{folder}/onnxprune-out.onnx", *PRUNE), 1, folder)
    # Not a comparison of listings: /proc gains an entry for every process started meanwhile.
    assert not [name for name in os.listdir(folder) if "onnxprune-out" in name]


def _is_char_device(path: str) -> bool:
    return os.path.exists(path) and stat.S_ISCHR(os.stat(path).st_mode)


@pytest.mark.skipif(not _is_char_device("/dev/full"), reason="no /dev/full device here")
@pytest.mark.parametrize("what", ["model", "report"])
def test_full_disk_is_one_line_and_the_device_stays(what: str, model_path: Path, tmp_path: Path) -> None:
    """/dev/full: writing fails with ENOSPC. The output is written into, never replaced (as root, an atomic
    rename would swap the device node for a regular file)."""
    before = set(os.listdir("/dev"))
    args = ("-o", "/dev/full") if what == "model" else ("-o", tmp_path / "o.onnx", "--report", "/dev/full")
    assert_error(cli("prune", model_path, *args, *PRUNE), 1, "/dev/full", "No space left")
    assert _is_char_device("/dev/full")
    assert set(os.listdir("/dev")) == before, "no temporary file left in /dev"
    if what == "report":
        assert not (tmp_path / "o.onnx").exists(), "a run whose report failed writes no model either"


@pytest.mark.skipif(not _is_char_device("/dev/null"), reason="no /dev/null device here")
def test_dev_null_output_is_a_dry_run(model_path: Path) -> None:
    assert cli("prune", model_path, "-o", "/dev/null", *PRUNE).exit_code == 0
    assert _is_char_device("/dev/null")
    assert_error(cli("prune", model_path, "-o", "/dev/null", *PRUNE, "--external-data"), 1, "external data")


@pytest.mark.parametrize("external", [False, True])
def test_disk_full_while_writing_leaves_nothing(
    external: bool, model_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def full(fd: int) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(onnxfiles.os, "fsync", full)
    flag = "--external-data" if external else "--no-external-data"
    assert_error(cli("prune", model_path, "-o", tmp_path / "o.onnx", *PRUNE, flag), 1, "No space left")
    assert files(tmp_path) == ["model.onnx"]


@pytest.mark.parametrize("step", ["sync", "model_after_data", "rename_model"])
@pytest.mark.parametrize("external", [False, True])
def test_ctrl_c_during_a_write_leaves_no_partial_or_temporary_file(
    step: str, external: bool, model_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "o.onnx"
    target: object
    if step == "sync":
        target, name = onnxfiles, "_sync"
    elif step == "model_after_data":
        target, name = onnxfiles, "_write_proto"
    else:
        target, name = onnxfiles.os, "replace"
    real = getattr(target, name)
    calls = []

    def interrupt(*args, **kwargs):
        calls.append(args)
        # Let the data file's rename through: Ctrl-C lands between the two renames.
        if step == "rename_model" and external and len(calls) == 1:
            return real(*args, **kwargs)
        raise KeyboardInterrupt

    monkeypatch.setattr(target, name, interrupt)
    flag = "--external-data" if external else "--no-external-data"
    result = cli("prune", model_path, "-o", out, *PRUNE, flag)
    assert result.exit_code == 130 and result.stderr.strip() == "interrupted", result.output
    assert calls, "the write step under test was reached"
    assert files(tmp_path) == ["model.onnx"]


def test_existing_output_survives_a_failed_write(
    model_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "o.onnx"
    out.write_bytes(b"previous")

    def full(fd: int) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(onnxfiles.os, "fsync", full)
    assert_error(cli("prune", model_path, "-o", out, *PRUNE), 1)
    assert out.read_bytes() == b"previous"
    assert files(tmp_path) == ["model.onnx", "o.onnx"]


# ---- usage --------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "args, needle",
    [
        (["--ratio", "1.5"], "--ratio"),
        (["--ratio", "-0.1"], "--ratio"),
        (["--ratio", "nan"], "--ratio"),
        (["--threshold", "inf"], "--threshold"),
        (["--ratio", "0.5", "--threshold", "0"], "exactly one"),
        ([], "exactly one"),
        (["--ratio", "0.5", "--round-to", "0"], "--round-to"),
        (["--ratio", "0.5", "--shape", "nonsense"], "--shape"),
    ],
)
def test_bad_usage_exits_2_with_one_line(
    args: list[str], needle: str, model_path: Path, tmp_path: Path
) -> None:
    assert_error(cli("prune", model_path, "-o", tmp_path / "o.onnx", *args), 2, needle)
    assert files(tmp_path) == ["model.onnx"]


@pytest.mark.parametrize("args", [["--ratio", "abc"], ["--ratio", "0.5", "--bogus"], []])
def test_option_parsing_errors_exit_2_without_a_traceback(args: list[str], model_path: Path) -> None:
    """Typer's own usage errors (a boxed message after the usage line) for what the command never sees."""
    extra = ["-o", "out.onnx"] if args else ["--ratio", "0.5"]  # [] leaves out the required -o
    result = cli("prune", model_path, *extra, *args)
    assert result.exit_code == 2 and "Traceback" not in result.output


@pytest.mark.parametrize(
    "args, needle",
    [(["--scope", "everything"], "global, layer"), (["--criterion", "magic"], "auto, gamma, l1, l2")],
)
def test_a_bad_choice_is_one_line_naming_the_choices(
    args: list[str], needle: str, model_path: Path, tmp_path: Path
) -> None:
    """Enumerated options name their choices in one line, through the real entry point too."""
    command = [sys.executable, "-m", "onnxprune.cli", "prune", model_path, "-o", tmp_path / "o.onnx"]
    done = subprocess.run([*map(str, command), "--ratio", "0.5", *args], capture_output=True, text=True)
    assert done.returncode == 2 and done.stdout == ""
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and needle in lines[0], done.stderr
    assert files(tmp_path) == ["model.onnx"]


def test_onnx_runtime_logs_nothing_on_stderr(tmp_path: Path) -> None:
    """ONNX Runtime's own [W:onnxruntime ...] / [E:onnxruntime ...] lines never reach the user: a model with
    an unused initializer (a warning) prunes quietly, and a failing run is onnxprune's one line."""
    model = tiny.chain()
    model.graph.initializer.append(numpy_helper.from_array(np.ones(3, np.float32), "unused"))
    src = tmp_path / "m.onnx"
    onnx.save(model, src)
    command = [sys.executable, "-m", "onnxprune.cli", "prune", str(src), "-o", str(tmp_path / "o.onnx")]
    done = subprocess.run([*command, "--ratio", "0.5"], capture_output=True, text=True)
    assert done.returncode == 0 and "onnxruntime" not in done.stderr, done.stderr
    n = tiny.Net(seed=2, dead=0.0)
    x = n.node("Concat", [n.cbr("input", 3, 8), n.param(np.ones((1, 4, 16, 16)), "side")], axis=1)
    onnx.save(n.model([n.head(n.cbr(x, 12, 8), 8)], shape=(1, 3, "H", "W")), src)
    done = subprocess.run([*command, "--ratio", "0.5"], capture_output=True, text=True)
    assert done.returncode == 1 and "onnxruntime:" not in done.stderr, done.stderr
    assert len(done.stderr.strip().splitlines()) == 1 and "--shape" in done.stderr


def test_real_entry_point_exits_cleanly(tmp_path: Path) -> None:
    exe = Path(sys.executable).with_name("onnxprune")
    if not exe.exists():
        pytest.skip("the onnxprune console script is not installed beside this Python")
    garbage = _write(tmp_path, "g.onnx", b"\x00\xff" * 100)
    good = tmp_path / "m.onnx"
    onnx.save(tiny.chain(), good)
    for args, code in (
        (["inspect", tmp_path / "missing.onnx"], 1),
        (["prune", garbage, "-o", tmp_path / "o.onnx", "--ratio", "0.5"], 1),
        (["prune", good, "-o", tmp_path / "o.onnx", "--ratio", "1.5"], 2),
    ):
        done = subprocess.run([exe, *map(str, args)], capture_output=True, text=True, timeout=120)
        assert done.returncode == code, done.stderr
        assert "Traceback" not in done.stderr and len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert files(tmp_path) == ["g.onnx", "m.onnx"]


def test_onnx_runtime_reads_a_model_over_2gb_from_a_file(monkeypatch: pytest.MonkeyPatch) -> None:
    """Over protobuf's limit a model cannot be serialised for ONNX Runtime: it goes through a temporary
    file with external data that lives as long as the session (forced here on a tiny model)."""
    from onnxprune import runtime
    from onnxprune.inputs import make_inputs

    model = tiny.chain()
    feed = make_inputs(model)[0]
    direct = runtime.ort_session(model)  # the same optimisation level: bit-identical results
    expected = dict(zip([o.name for o in direct.get_outputs()], direct.run(None, feed), strict=True))
    monkeypatch.setattr(runtime, "needs_external_data", lambda m: True)
    written: list[Path] = []
    monkeypatch.setattr(
        runtime, "save_model", lambda *a, **k: written.append(onnxfiles.save_model(*a, **k)) or written[-1]
    )
    session = runtime.ort_session(model)
    folder = written[0].parent
    assert sorted(p.name for p in folder.iterdir()) == ["model.onnx", "model.onnx.data"]
    got = dict(zip([o.name for o in session.get_outputs()], session.run(None, feed), strict=True))
    np.testing.assert_array_equal(got[next(iter(expected))], next(iter(expected.values())))
    del session
    assert not folder.exists()


# ---- messages about the user's own options (issue 11) -----------------------------------------------------
@pytest.mark.parametrize("option", ["--report", "--plan", "--save-onnx"])
def test_an_output_option_equal_to_the_output_is_refused(
    option: str, model_path: Path, tmp_path: Path
) -> None:
    out = tmp_path / "ok.onnx"
    extra = ["--plan", tmp_path / "x.plan"] if option == "--save-onnx" else []
    assert_error(cli("prune", model_path, "-o", out, *PRUNE, option, out, *extra), 2, "-o and", "same file")
    assert files(tmp_path) == ["model.onnx"]


def test_replay_of_a_plan_that_does_not_fit_says_expected_and_found(model_path: Path, tmp_path: Path) -> None:
    report = tmp_path / "r.json"
    assert cli("prune", model_path, "-o", tmp_path / "a.onnx", *PRUNE, "--report", report).exit_code == 0
    saved = __import__("json").loads(report.read_text())
    group = saved["groups"][0]
    group["channels_before"] += 3
    report.write_text(__import__("json").dumps(saved))
    where = group["producers"][0]
    expected = (
        f"{group['channels_before']} channels in the plan, {group['channels_before'] - 3} in this model"
    )
    assert_error(cli("prune", model_path, "-o", tmp_path / "b.onnx", "--replay", report), 2, where, expected)
    group["nodes"] = ["/not/a/node"]
    group["channels_before"] -= 3
    report.write_text(__import__("json").dumps(saved))
    assert_error(cli("prune", model_path, "-o", tmp_path / "b.onnx", "--replay", report), 2, "does not have")
    assert not (tmp_path / "b.onnx").exists()


@pytest.mark.parametrize(
    "args, needle",
    [
        (["--round-to", "4"], "--round-to"),
        (["--scope", "layer"], "--scope"),
        (["--criterion", "l1"], "--criterion"),
    ],
)
def test_options_a_replay_would_ignore_are_refused(
    args: list[str], needle: str, model_path: Path, tmp_path: Path
) -> None:
    report = tmp_path / "r.json"
    assert cli("prune", model_path, "-o", tmp_path / "a.onnx", *PRUNE, "--report", report).exit_code == 0
    result = cli("prune", model_path, "-o", tmp_path / "b.onnx", "--replay", report, *args)
    assert_error(result, 2, needle, "no effect with --replay")
    assert not (tmp_path / "b.onnx").exists()


def test_an_exclude_that_matches_nothing_warns(model_path: Path, tmp_path: Path) -> None:
    result = cli("prune", model_path, "-o", tmp_path / "o.onnx", *PRUNE, "--exclude", "/no/such/*", "--json")
    assert result.exit_code == 0
    assert "warning: --exclude '/no/such/*' matches no node" in result.stderr
    assert __import__("json").loads(result.stdout)["warnings"][0].startswith("--exclude '/no/such/*'")
    conv = next(n.name for n in onnx.load(model_path).graph.node if n.op_type == "Conv")
    hit = cli("prune", model_path, "-o", tmp_path / "p.onnx", *PRUNE, "--exclude", conv)
    assert hit.exit_code == 0 and "matches no node" not in hit.stderr


def test_version_and_short_help() -> None:
    from onnxprune import __version__

    version = cli("--version")
    assert version.exit_code == 0 and version.stdout.strip() == f"onnxprune {__version__}"
    for args in (["-h"], ["prune", "-h"], ["check", "-h"]):
        shown = cli(*args)
        assert shown.exit_code == 0 and "Usage" in shown.stdout
    prune_help = runner.invoke(app, ["prune", "-h"], env={"COLUMNS": "300"}).stdout
    assert "global|layer" in prune_help and "auto|gamma|l1|l2" in prune_help, "choices are shown"
    assert "--load-inputs" in prune_help and "--load-inputs" in cli("check", "-h").stdout
    assert "--install-completion" in cli("-h").stdout
