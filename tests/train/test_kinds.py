"""Each output's kind, from the teacher's values: scores, per-frame distributions, maps (no torch)."""

from __future__ import annotations

import numpy as np
import pytest

from onnxprune.errors import UsageError
from onnxprune.train.kinds import OutputKind, is_distribution, output_kind, output_kinds, with_logits


def softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(-1, keepdims=True))
    return (e / e.sum(-1, keepdims=True)).astype(np.float32)


rng = np.random.default_rng(0)


@pytest.mark.parametrize(
    ("values", "kind", "probabilities"),
    [
        (rng.normal(size=(5, 10)).astype(np.float32), "scores", False),  # logits
        (softmax(rng.normal(size=(5, 2))), "scores", True),  # PP-OCR cls: softmax over 2 classes
        (softmax(rng.normal(size=(3, 40, 6625))), "sequence", True),  # a CTC recogniser
        (rng.normal(size=(3, 40, 97)).astype(np.float32), "map", False),  # [N, T, C] logits: ambiguous
        (rng.normal(size=(1, 84, 8400)).astype(np.float32), "map", False),  # YOLO's boxes and scores
        (rng.uniform(size=(2, 1, 32, 32)).astype(np.float32), "map", False),  # DB probability map
        (rng.normal(size=(5, 1)).astype(np.float32), "map", False),  # one score: a regression
        (np.arange(10).reshape(5, 2), "map", False),  # integers: nothing to soften
    ],
)
def test_output_kind(values: np.ndarray, kind: str, probabilities: bool) -> None:
    found = output_kind("out", values)
    assert (found.kind, found.probabilities) == (kind, probabilities)


def test_a_distribution_sums_to_one_and_is_never_negative() -> None:
    p = softmax(rng.normal(size=(4, 18385)))
    assert is_distribution(p)
    assert not is_distribution(p * 1.01)
    assert not is_distribution(p - p.mean())


def test_distill_choices_override_or_insist() -> None:
    outputs = {"logits": rng.normal(size=(4, 10)), "map": rng.normal(size=(4, 3, 8, 8))}
    assert [k.kind for k in output_kinds(outputs)] == ["scores", "map"]
    assert [k.kind for k in output_kinds(outputs, "mse")] == ["map", "map"]
    with pytest.raises(UsageError, match=r"--distill kl .* not map \[4, 3, 8, 8\]"):
        output_kinds(outputs, "kl")


def test_softmax_outputs_name_their_logits() -> None:
    from onnx import TensorProto, helper

    nodes = [
        helper.make_node("Identity", ["x"], ["z"]),
        helper.make_node("Softmax", ["z"], ["frames"], axis=2),
        helper.make_node("Softmax", ["z"], ["middle"], axis=1),
        helper.make_node("Relu", ["z"], ["map"]),
    ]
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 5])
    outs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in ("frames", "middle", "map")]
    model = helper.make_model(
        helper.make_graph(nodes, "g", [x], outs), opset_imports=[helper.make_opsetid("", 17)]
    )
    kinds = [
        OutputKind("frames", "sequence", True),
        OutputKind("middle", "sequence", True),
        OutputKind("map", "map"),
    ]
    found = with_logits(kinds, model, {"frames": 3, "middle": 3, "map": 3})
    assert [k.logits for k in found] == ["z", None, None]  # a softmax over another axis is not per frame


@pytest.mark.parametrize("blank", [0, 96])  # PaddleOCR's first class; TensorFlow's CTC takes the last
def test_a_sequence_knows_its_blank_as_the_class_picked_most(blank: int) -> None:
    logits = rng.normal(size=(3, 40, 97))
    logits[:, ::2, blank] += 20  # half the frames say blank, the rest spread over characters
    found = output_kind("rec", softmax(logits))
    assert found.kind == "sequence" and found.blank == blank and f"blank {blank}" in found.describe()


def test_held_out_decodes_drop_the_sequences_own_blank() -> None:
    from onnxprune.train.fidelity import measure

    teacher = np.eye(4, dtype=np.float32)[[[3, 1, 3, 1], [2, 3, 3, 2]]]  # blank 3: reads "1 1" and "2 2"
    student = np.eye(4, dtype=np.float32)[[[1, 1, 3, 1], [3, 2, 3, 2]]]  # the same text, other alignments
    assert measure(OutputKind("rec", "sequence", True, blank=3), teacher, student)["decode_match"] == 1.0
    assert measure(OutputKind("rec", "sequence", True, blank=0), teacher, student)["decode_match"] == 0.0


def test_the_ctc_blank_is_the_detected_one_else_paddleocrs() -> None:
    assert OutputKind("o", "sequence", True, blank=17).ctc_blank == 17
    assert OutputKind("o", "sequence", True).ctc_blank == 0
