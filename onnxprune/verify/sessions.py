"""ONNX Runtime sessions for verification: made once per model (a proto, a path, or a session already
made), run directly on each feed, optionally exposing intermediate tensors ("taps") beside the outputs."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeAlias

import numpy as np
import onnx

from onnxprune import files
from onnxprune.errors import ValidationError, VerificationError, first_line
from onnxprune.inputs import fmt_dims
from onnxprune.runtime import ort_session

if TYPE_CHECKING:
    import onnxruntime

# A model, its path, or a session already made for it (onnxruntime has no type hints: Any).
Model: TypeAlias = onnx.ModelProto | str | Path | Any


def model_session(model: Model, which: str, optimize: bool = True) -> onnxruntime.InferenceSession:
    """A session for ``model``; a session given is used as it is (verification reuses them)."""
    if hasattr(model, "get_inputs"):
        return model  # type: ignore[return-value]
    # runtime.ort_session, not Polygraphy's SessionFromOnnx: it serialises the model, which fails past 2 GB.
    # Each session runs once per feed, one after another: threads past the cores this process may use only
    # contend, and spinning between runs burns what the next session needs.
    with runtime_errors(f"cannot load the {which} model"):
        return ort_session(model, threads=_THREADS, optimize=optimize, spin=False)


_THREADS = min(4, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)


@dataclass
class Run:
    """An ONNX Runtime session run on each feed: its outputs, the ``added`` ones kept aside as ``tapped``.

    Run directly rather than as Polygraphy runners: Polygraphy asks of every feed and output whether it is
    a torch tensor, which imports torch wherever it is installed (seconds, for nothing).
    """

    session: Any
    taps: list[str] = field(default_factory=list)
    added: set[str] = field(default_factory=set)
    tapped: dict[str, np.ndarray] = field(default_factory=dict)

    def __call__(self, feed: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        names = [node.name for node in self.session.get_outputs()]
        values = dict(zip(names, self.session.run(names, dict(feed)), strict=True))
        self.tapped = {name: values[name] for name in self.taps}
        return {name: value for name, value in values.items() if name not in self.added}


def tapping_run(model: Any, which: str, taps: Sequence[str], optimize: bool) -> Run:
    """A run of ``model`` whose session also outputs ``taps`` (a proto's tensors)."""
    if not taps:
        return Run(model_session(model, which, optimize=optimize))
    if not isinstance(model, onnx.ModelProto) or files.needs_external_data(model):
        raise TypeError(f"only an ONNX model under 2 GB can expose tensors, not {type(model).__name__}")
    taps, added = _added(model, taps)
    # Outputs added for as long as it takes to serialise: a copy of the model would cost its weights again.
    model.graph.output.extend(onnx.ValueInfoProto(name=name) for name in added)
    try:
        data = model.SerializeToString()
    finally:
        del model.graph.output[len(model.graph.output) - len(added) :]
    return Run(model_session(data, which, optimize=optimize), taps=taps, added=set(added))


def _added(model: onnx.ModelProto, taps: Sequence[str]) -> tuple[list[str], list[str]]:
    """``taps`` without repeats, and those of them that are not already graph outputs."""
    taps = list(dict.fromkeys(taps))
    outputs = {o.name for o in model.graph.output}
    return taps, [name for name in taps if name not in outputs]


def masked_runs(model: Model, taps: Sequence[str]) -> dict[str, Run]:
    """The masked reference, optimised, and its noise-floor run (no optimisations) with ``taps``: a proto
    is serialised once for both."""
    if not taps or not isinstance(model, onnx.ModelProto) or files.needs_external_data(model):
        return {
            "reference": tapping_run(model, "reference", (), True),
            "noise": tapping_run(model, "reference", taps, False),
        }
    data = model.SerializeToString()
    reference = Run(model_session(data, "reference"))
    # Protobuf reads a message field that appears twice as the merge of both, repeated fields appended:
    # the bytes followed by a ModelProto holding only the added outputs are the model with those outputs.
    taps, added = _added(model, taps)
    extra = onnx.ModelProto(graph=onnx.GraphProto(output=[onnx.ValueInfoProto(name=n) for n in added]))
    noise = model_session(data + extra.SerializeToString(), "reference", optimize=False)
    return {"reference": reference, "noise": Run(noise, taps=taps, added=set(added))}


def check_inputs(sessions: list[Any], feeds: Sequence[Mapping[str, Any]]) -> None:
    """Same input names, types and static dims, said in one line: otherwise ONNX Runtime fails mid-run on
    a misnamed or mis-shaped input with a message about the feed, not about the two models."""
    ref, cand = ({i.name: i for i in sess.get_inputs()} for sess in sessions)
    if sorted(ref) != sorted(cand):
        raise VerificationError(
            f"the models take different inputs: {', '.join(sorted(ref))} vs {', '.join(sorted(cand))}"
        )
    for name, a in ref.items():
        b = cand[name]
        if a.type != b.type or not _dims_agree(a.shape, b.shape):
            raise VerificationError(
                f"the models take different inputs: {name} is {_describe(a)} in the reference, "
                f"{_describe(b)} in the other; give each model the data it takes and compare elsewhere"
            )
    for index, feed in enumerate(feeds):
        if sorted(feed) != sorted(ref):
            raise VerificationError(
                f"feed {index} has inputs {', '.join(sorted(feed))}, not {', '.join(sorted(ref))}"
            )


def _dims_agree(a: Sequence[Any] | None, b: Sequence[Any] | None) -> bool:
    if a is None or b is None:
        return True
    return len(a) == len(b) and all(
        not (isinstance(x, int) and isinstance(y, int)) or x == y for x, y in zip(a, b, strict=True)
    )


def _describe(arg: Any) -> str:
    dims = "?" if arg.shape is None else fmt_dims([d if isinstance(d, int) else "?" for d in arg.shape])
    return f"{arg.type.removeprefix('tensor(').removesuffix(')')} {dims}"


@contextlib.contextmanager
def runtime_errors(what: str) -> Iterator[None]:
    """Turns ONNX Runtime's and Polygraphy's exceptions into a one-line ``ValidationError``."""
    from onnxruntime.capi import onnxruntime_pybind11_state as ort_state
    from polygraphy.exception import PolygraphyException

    # ONNX Runtime's exceptions share no base class below Exception.
    ort_errors = tuple(
        v for v in vars(ort_state).values() if isinstance(v, type) and issubclass(v, Exception)
    )
    try:
        yield
    except (PolygraphyException, *ort_errors) as err:
        raise ValidationError(f"ONNX Runtime: {what}: {first_line(err)}") from err
