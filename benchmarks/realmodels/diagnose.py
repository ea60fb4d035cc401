"""Diagnoses of issue 21 on the real models: one group cut alone, and where the error grows, layer by layer.

    python benchmarks/realmodels/diagnose.py group --model v4-rec --group 3 --ratio 0.125
    python benchmarks/realmodels/diagnose.py group --model v4-rec --group 3 --ratio 0.125 --bias add
    python benchmarks/realmodels/diagnose.py group --model v4-rec --group 3 --ratio 0.125 --compensate calib

``group`` prunes one channel group alone (``--scope layer``, every other group excluded, widths rounded to
8) with the given compensation, prints the task score through the client (score.py) and the relative error
(||pruned - original||² / ||original||²) of every Conv output and graph output on held-out calibration
inputs, in graph order. ``--bias add`` first rewrites every Conv's bias into an ``Add`` of a [1, C, 1, 1]
constant after it, ``--bias conv`` folds such Adds into the Conv's bias: the two ways the PaddlePaddle
exports here store a folded BatchNormalization (the function is the same, to float rounding), which decide
what a removed channel carries. ``--layers`` (a comma list of node names) narrows the table.

    python benchmarks/realmodels/diagnose.py layers --model v5-cls A.onnx B.onnx [--score]

    python benchmarks/realmodels/diagnose.py calib --model v5-cls --plan REPORT.json [--waves N]
        [--ridge 1e-3] [--rows-per-unknown 2] [--steps refit] [--per-layer]

    python benchmarks/realmodels/diagnose.py verdict --model v4-rec A.onnx B.onnx

``verdict`` prints, per pruned recognizer, output measures on the held-out calibration inputs (cosine,
per-frame argmax agreement, blank shares, decoded sequences that agree) beside its exact match.
``calib`` replays a saved plan with calibration settings of one's choosing (``--rows-per-unknown`` sets
calibrate.ROWS_PER_UNKNOWN for this run). ``layers`` prints the same per-layer errors for several pruned
models of one original side by side (the held-out calibration inputs: the last samples, which calibration
never fits on).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np
import onnx
from onnx import helper, numpy_helper

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from realmodels import calib, score  # noqa: E402
from realmodels.models import MODELS, RealModel  # noqa: E402

HELD_OUT = 26  # the tail of 256 samples that calibration holds out (10%): it never fits on them


def bias_as_add(model: onnx.ModelProto) -> onnx.ModelProto:
    """Every Conv's bias input moved into an Add after the Conv (same function)."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    graph = out.graph
    inits = {t.name: t for t in graph.initializer}
    nodes = []
    for node in graph.node:
        nodes.append(node)
        if node.op_type != "Conv" or len(node.input) < 3 or node.input[2] not in inits:
            continue
        bias = numpy_helper.to_array(inits[node.input[2]])
        name = node.input[2] + "_as_add"
        graph.initializer.append(numpy_helper.from_array(bias.reshape(1, -1, 1, 1), name))
        conv_out = node.output[0] + "_no_bias"
        add = helper.make_node("Add", [conv_out, name], [node.output[0]], name=node.name + "_bias")
        del node.input[2]
        node.output[0] = conv_out
        nodes.append(add)
    del graph.node[:]
    graph.node.extend(nodes)
    return out


def bias_into_conv(model: onnx.ModelProto) -> onnx.ModelProto:
    """Every ``Add(Conv(x, W), b[1, C, 1, 1])`` with a bias-less Conv folded into the Conv's bias."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    graph = out.graph
    inits = {t.name: t for t in graph.initializer}
    producers = {o: n for n in graph.node for o in n.output}
    readers: dict[str, int] = {}
    for node in graph.node:
        for name in node.input:
            readers[name] = readers.get(name, 0) + 1
    dropped = set()
    for node in graph.node:
        if node.op_type != "Add" or len(node.input) != 2:
            continue
        conv = producers.get(node.input[0])
        constant = inits.get(node.input[1])
        if conv is None or conv.op_type != "Conv" or len(conv.input) > 2 or constant is None:
            continue
        values = numpy_helper.to_array(constant)
        if values.ndim != 4 or values.shape[1] != values.size or readers.get(conv.output[0]) != 1:
            continue
        name = constant.name + "_as_bias"
        graph.initializer.append(numpy_helper.from_array(values.reshape(-1), name))
        conv.input.append(name)
        conv.output[0] = node.output[0]
        dropped.add(node.name)
    kept = [n for n in graph.node if n.name not in dropped]
    del graph.node[:]
    graph.node.extend(kept)
    return out


def load(spec: RealModel, bias: str | None) -> onnx.ModelProto:
    from onnxprune.graph import normalise, to_model

    model = onnx.load(str(spec.file()))
    if bias is None:
        return model
    # PaddlePaddle's exports hold parameters in Constant nodes: as initializers first, to find them.
    plain = to_model(normalise(model), model)
    return bias_as_add(plain) if bias == "add" else bias_into_conv(plain)


def prune_group(
    model: onnx.ModelProto, spec: RealModel, group: int, ratio: float, compensate: str, data, steps=("refit",)
):
    """``api.prune_model`` with one group cut by ``ratio`` and every other excluded."""
    from onnxprune import api
    from onnxprune.compensate.calibrate import CalibOptions

    shapes = {spec.input_name: spec.shape}
    found = api.inspect(model, shapes=shapes)
    others = tuple(g.nodes[0] for g in found.groups if g.id != group and g.nodes)
    options = api.PlanOptions(ratio=ratio, scope="layer", exclude=others, round_to=8, compensate=compensate)
    request = None
    if compensate == "calib":
        request = api.CalibRequest(source=data, options=CalibOptions(steps=tuple(steps)))
    return api.prune_model(model, options, api.VerifyOptions(shapes=shapes), request)


def layer_errors(original: onnx.ModelProto, pruned: onnx.ModelProto, x: np.ndarray, only=None) -> list:
    """(node, op, relative error) of every Conv output and graph output of the same shape in both models
    (a pruned group's own tensors are narrower: skipped), in graph order; sums over the samples two at a
    time (a detector's every Conv output at 640 x 640 would not fit in memory at once)."""
    from onnxprune.compensate.capture import subset

    from onnxprune.runtime import ort_session

    wanted = [
        (node.name, node.op_type, node.output[0])
        for node in pruned.graph.node
        if node.op_type == "Conv" and (only is None or node.name in only)
    ]
    wanted += [("(output)", "", o.name) for o in pruned.graph.output]
    names = [w[2] for w in wanted]
    sessions = [ort_session(subset(m, names), threads=2) for m in (original, pruned)]
    error, norm = np.zeros(len(names)), np.zeros(len(names))
    same = np.ones(len(names), dtype=bool)
    for start in range(0, len(x), 2):
        feed = {"x": x[start : start + 2]}
        runs = [session.run(names, feed) for session in sessions]
        for k, (a, b) in enumerate(zip(*runs, strict=True)):
            same[k] &= a.shape == b.shape
            if same[k]:
                reference = a.astype(np.float64)
                error[k] += np.sum((b - reference) ** 2)
                norm[k] += np.sum(reference**2)
    return [(node, op, error[k] / max(norm[k], 1e-30)) for k, (node, op, _) in enumerate(wanted) if same[k]]


def group_command(args: argparse.Namespace) -> None:
    spec = MODELS[args.model]
    data = calib.calibration_file(spec.task)
    model = load(spec, args.bias)
    steps = args.calib_steps.split(",")
    result = prune_group(model, spec, args.group, args.ratio, args.compensate, data, steps)
    kept = {g["id"]: (g["channels_before"], g["channels_after"]) for g in result.report["groups"]}
    with tempfile.TemporaryDirectory() as folder:
        for label, proto in (("original", model), ("pruned", result.pruned)):
            path = Path(folder) / f"{label}.onnx"
            onnx.save(proto, str(path))
            print(f"{label}: {spec.task} score {score.evaluate(spec.task, path, args.n).value:.1f}")
    macs = result.report["macs"]
    print(f"group {args.group}: {kept.get(args.group)} channels, MACs {macs['after'] / macs['before']:.4f}")
    x = np.load(data)["x"][-HELD_OUT:]
    only = set(args.layers.split(",")) if args.layers else None
    for node, op, error in layer_errors(model, result.pruned, x, only):
        print(f"  {node:28s} {op:5s} rel. error {error:.4g}")


def layers_command(args: argparse.Namespace) -> None:
    """Per-layer errors of several pruned models of one original, side by side, and their task scores."""
    spec = MODELS[args.model]
    original = onnx.load(str(spec.file()))
    x = np.load(calib.calibration_file(spec.task))["x"][-HELD_OUT:]
    only = set(args.layers.split(",")) if args.layers else None
    columns = [
        dict((n, e) for n, _, e in layer_errors(original, onnx.load(str(p)), x, only)) for p in args.pruned
    ]
    names = list(dict.fromkeys(n for column in columns for n in column))
    print(f"{'layer':28s} " + " ".join(f"{p.stem[-14:]:>14s}" for p in args.pruned))
    for name in names:
        cells = [f"{c[name]:14.4g}" if name in c else f"{'-':>14s}" for c in columns]
        print(f"{name:28s} " + " ".join(cells))
    if args.score:
        scores = [score.evaluate(spec.task, p, args.n).value for p in args.pruned]
        print(f"{'score':28s} " + " ".join(f"{v:14.1f}" for v in scores))


def calib_command(args: argparse.Namespace) -> None:
    """Calibration of one saved plan with chosen settings: its own held-out fidelity, the task score and,
    with ``--per-layer``, every layer's error on the held-out inputs."""
    from onnxprune import api
    from onnxprune.compensate import calibrate
    from onnxprune.compensate.calibrate import CalibOptions
    from onnxprune.planning import load_plan

    spec = MODELS[args.model]
    data = calib.calibration_file(spec.task)
    model = onnx.load(str(spec.file()))
    if args.rows_per_unknown is not None:
        calibrate.ROWS_PER_UNKNOWN = args.rows_per_unknown
    options = CalibOptions(steps=tuple(args.steps.split(",")), waves=args.waves, ridge=args.ridge)
    plan = api.PlanOptions(replay=load_plan(args.plan), compensate="calib")
    checks = api.VerifyOptions(shapes={spec.input_name: spec.shape})
    result = api.prune_model(model, plan, checks, api.CalibRequest(source=data, options=options))
    fidelity = result.report["calibration"]["fidelity"]
    print(f"held-out fidelity {fidelity['before']} -> {fidelity['after']}")
    refits = [x for x in result.report["calibration"]["layers"] if x["applied"] != "none"]
    print(f"{len(refits)} layers fitted ({', '.join(sorted({x['applied'] for x in refits}))})")
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "calibrated.onnx"
        onnx.save(result.pruned, str(path))
        print(f"{spec.task} score {score.evaluate(spec.task, path, args.n).value:.1f}")
        if args.output is not None:
            onnx.save(result.pruned, str(args.output))
    if args.per_layer:
        for node, op, error in layer_errors(model, result.pruned, np.load(data)["x"][-HELD_OUT:]):
            print(f"  {node:28s} {op:5s} rel. error {error:.4g}")


def sequence_measures(reference: np.ndarray, candidate: np.ndarray) -> dict[str, float]:
    """Measures of a [N, T, classes] CTC output (class 0 the blank) against the original's, per sample
    averaged: the report's cosine, per-frame argmax agreement (all frames, and the frames where the
    original is not blank), the blank share of each, and greedy-decoded sequences that agree."""
    ref, got = reference.reshape(len(reference), -1), candidate.reshape(len(candidate), -1)
    norms = np.linalg.norm(ref, axis=1) * np.linalg.norm(got, axis=1)
    a, b = reference.argmax(-1), candidate.argmax(-1)
    text = a != 0
    return {
        "cosine": float(np.mean((ref * got).sum(1) / np.maximum(norms, 1e-30))),
        "frame_agreement": float(np.mean(a == b)),
        "text_frame_agreement": float(np.mean((a == b)[text])) if text.any() else float("nan"),
        "blank_original": float(np.mean(~text)),
        "blank_pruned": float(np.mean(b == 0)),
        "sequence_agreement": float(np.mean([_greedy(x) == _greedy(y) for x, y in zip(a, b, strict=True)])),
    }


def _greedy(frames: np.ndarray) -> tuple[int, ...]:
    """CTC greedy decoding: repeats merged, blanks dropped."""
    keep = np.ones(len(frames), dtype=bool)
    keep[1:] = frames[1:] != frames[:-1]
    return tuple(int(c) for c in frames[keep & (frames != 0)])


def verdict_command(args: argparse.Namespace) -> None:
    """What fidelity measures say of pruned recognizers, next to their exact match through the client."""
    from onnxprune.runtime import ort_session

    spec = MODELS[args.model]
    x = np.load(calib.calibration_file(spec.task))["x"][-HELD_OUT:]
    name = onnx.load(str(spec.file()), load_external_data=False).graph.output[0].name
    reference = ort_session(onnx.load(str(spec.file())), threads=2).run([name], {"x": x})[0]
    for path in args.pruned:
        got = ort_session(onnx.load(str(path)), threads=2).run([name], {"x": x})[0]
        measures = sequence_measures(reference, got)
        result = score.evaluate(spec.task, path, args.n)
        cells = " ".join(f"{k} {v:.3f}" for k, v in measures.items())
        print(f"{path.name}: exact match {result.value:.1f}, empty {result.details['empty']:.1f}% | {cells}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(required=True)
    group = commands.add_parser("group", help="one group cut alone")
    group.add_argument("--model", required=True, choices=sorted(MODELS))
    group.add_argument("--group", type=int, required=True)
    group.add_argument("--ratio", type=float, default=0.125)
    group.add_argument("--compensate", default="bn", choices=("none", "bn", "calib"))
    group.add_argument("--calib-steps", default="refit", help="with --compensate calib")
    group.add_argument("--bias", choices=("add", "conv"), default=None)
    group.add_argument("--layers", default=None)
    group.add_argument("--n", type=int, default=None)
    group.set_defaults(run=group_command)
    layers = commands.add_parser("layers", help="per-layer errors of pruned models against the original")
    layers.add_argument("--model", required=True, choices=sorted(MODELS))
    layers.add_argument("pruned", type=Path, nargs="+")
    layers.add_argument("--layers", default=None)
    layers.add_argument("--score", action="store_true", help="also the task score of each")
    layers.add_argument("--n", type=int, default=None)
    layers.set_defaults(run=layers_command)
    verdict = commands.add_parser("verdict", help="fidelity measures of pruned recognizers vs exact match")
    verdict.add_argument("--model", required=True, choices=sorted(m for m in MODELS if m.endswith("rec")))
    verdict.add_argument("pruned", type=Path, nargs="+")
    verdict.add_argument("--n", type=int, default=None)
    verdict.set_defaults(run=verdict_command)
    fit = commands.add_parser("calib", help="calibrate a saved plan with chosen settings")
    fit.add_argument("--model", required=True, choices=sorted(MODELS))
    fit.add_argument("--plan", type=Path, required=True, help="a prune --report whose plan is replayed")
    fit.add_argument("--steps", default="refit")
    fit.add_argument("--waves", type=int, default=None, help="default: calibrate's (one wave per depth)")
    fit.add_argument("--ridge", type=float, default=1e-3)
    fit.add_argument("--rows-per-unknown", type=int, default=None, help="default: calibrate's")
    fit.add_argument("--per-layer", action="store_true")
    fit.add_argument("-o", "--output", type=Path, default=None)
    fit.add_argument("--n", type=int, default=None)
    fit.set_defaults(run=calib_command)
    args = parser.parse_args(argv)
    args.run(args)


if __name__ == "__main__":
    main()
