"""Inputs for running models: seeded random data shaped from the model, or the user's own data.

User data is an ``.npz`` keyed by input name (one feed), or a JSON file written by Polygraphy
(``polygraphy run --save-inputs inputs.json``: a list of feeds), so a Polygraphy workflow carries over.
Dynamic dims: axis 0 is the batch (DEFAULT_BATCH); the other dynamic axes of an image-like (rank >= 3)
input are spatial (DEFAULT_SPATIAL); anything else gets DEFAULT_OTHER. A dim_param shared by several
inputs gets one value. Errors: unreadable data, or data that does not fit the model, is a ModelLoadError;
a malformed ``--shape`` is a UsageError.
"""

from __future__ import annotations

import contextlib
import re
import zipfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import helper

from onnxprune.errors import ModelLoadError, OnnxPruneError, UsageError, first_line

Feed = dict[str, np.ndarray]
Shape = tuple[int, ...]

DEFAULT_BATCH, DEFAULT_SPATIAL, DEFAULT_OTHER = 1, 224, 1
# Random integers come from [0, INT_HIGH): small non-negative values stay valid as indices.
INT_HIGH = 8
# The name is everything before the last colon, so TensorFlow-style names ("input:0") work.
_SHAPE_SPEC = re.compile(r"(?P<name>.+):\[?(?P<dims>\d+(?:[x,]\d+)*)\]?")


@contextlib.contextmanager
def quiet_polygraphy() -> Iterator[None]:
    # Polygraphy logs each step to stdout; onnxprune reports through rich and its own errors.
    from polygraphy.logger import G_LOGGER

    with G_LOGGER.verbosity(G_LOGGER.CRITICAL + 1):
        yield


def parse_shapes(specs: Sequence[str]) -> dict[str, Shape]:
    """Parses ``--shape`` specs: ``input:1x3x224x224`` (or Polygraphy's ``input:[1,3,224,224]``)."""
    shapes: dict[str, Shape] = {}
    for spec in specs:
        match = _SHAPE_SPEC.fullmatch(spec.strip())
        if match is None:
            raise UsageError(f"bad --shape {spec!r}: expected NAME:DIMS, e.g. input:1x3x224x224")
        dims = tuple(int(d) for d in re.split("[x,]", match["dims"]))
        if 0 in dims or match["name"] in shapes:
            raise UsageError(f"bad --shape {spec!r}: a zero dimension, or a second shape for that input")
        shapes[match["name"]] = dims
    return shapes


@dataclass(frozen=True)
class _InputSpec:
    name: str
    dtype: np.dtype
    # None: the model gives no shape. Per axis: int (static), str (dim_param), None (anonymous dynamic).
    dims: tuple[int | str | None, ...] | None

    def fits(self, shape: Shape) -> bool:
        dims = self.dims
        return dims is None or (
            len(dims) == len(shape)
            and all(not isinstance(d, int) or d == n for d, n in zip(dims, shape, strict=True))
        )


def _graph_inputs(model: onnx.ModelProto) -> list[_InputSpec]:

    # Before IR 4, initializers were listed as graph inputs too; they are weights, not data.
    weights = {init.name for init in model.graph.initializer}
    specs = []
    for value in (v for v in model.graph.input if v.name not in weights):
        if not value.type.HasField("tensor_type"):
            raise OnnxPruneError(f"input {value.name!r} is not a tensor; onnxprune feeds tensor inputs only")
        tensor = value.type.tensor_type
        dims = tuple(_dim(d) for d in tensor.shape.dim) if tensor.HasField("shape") else None
        specs.append(
            _InputSpec(value.name, np.dtype(helper.tensor_dtype_to_np_dtype(tensor.elem_type)), dims)
        )
    return specs


def _dim(dim: Any) -> int | str | None:
    return int(dim.dim_value) if dim.dim_value > 0 else dim.dim_param or None


def fmt_dims(dims: Sequence[int | str | None]) -> str:
    return "x".join("?" if d is None else str(d) for d in dims)


def _input_shapes(specs: list[_InputSpec], shapes: Mapping[str, Shape]) -> dict[str, Shape]:
    names = [s.name for s in specs]
    for name in shapes:
        if name not in names:
            raise UsageError(f"--shape names {name!r}, not an input (inputs: {', '.join(names)})")
    bindings: dict[str, int] = {}
    # User shapes first, so that their dim_params also size the other inputs that share them.
    for spec in specs:
        if spec.name not in shapes or spec.dims is None:
            continue
        user = shapes[spec.name]
        if not spec.fits(user):
            raise UsageError(f"--shape {spec.name}:{fmt_dims(user)} does not fit {fmt_dims(spec.dims)}")
        bindings.update({d: n for d, n in zip(spec.dims, user, strict=True) if isinstance(d, str)})
    return {s.name: shapes[s.name] if s.name in shapes else _default_shape(s, bindings) for s in specs}


def _default_shape(spec: _InputSpec, bindings: dict[str, int]) -> Shape:
    if spec.dims is None:
        raise UsageError(
            f"input {spec.name!r} has no shape in the model; give it with --shape {spec.name}:DIMS"
        )
    shape = []
    for axis, dim in enumerate(spec.dims):
        if isinstance(dim, str) and dim in bindings:
            dim = bindings[dim]
        elif not isinstance(dim, int):
            value = DEFAULT_BATCH if axis == 0 else DEFAULT_SPATIAL if len(spec.dims) >= 3 else DEFAULT_OTHER
            dim = bindings.setdefault(dim, value) if dim is not None else value
        shape.append(dim)
    return tuple(shape)


def resolve_shapes(model: onnx.ModelProto, shapes: Mapping[str, Shape] | None = None) -> dict[str, Shape]:
    """The full shape of every input as ``make_inputs`` feeds it: ``shapes`` where given, else defaults."""
    return _input_shapes(_graph_inputs(model), shapes or {})


def _random_array(rng: np.random.Generator, spec: _InputSpec, shape: Shape) -> np.ndarray:
    # N(0, 1) rather than Polygraphy's U[0, 1): negative values exercise ReLUs and the sign of every weight.
    if spec.dtype.kind == "f":
        return np.asarray(rng.standard_normal(shape)).astype(spec.dtype)
    if spec.dtype.kind in "iu":
        return np.asarray(rng.integers(0, INT_HIGH, size=shape)).astype(spec.dtype)
    if spec.dtype.kind == "b":
        return np.asarray(rng.random(shape) < 0.5)
    raise OnnxPruneError(f"no random data for input {spec.name!r} of type {spec.dtype}; pass --inputs")


def make_inputs(
    model: onnx.ModelProto,
    *,
    iterations: int | None = None,
    seed: int = 0,
    shapes: Mapping[str, Shape] | None = None,
    inputs_path: str | Path | None = None,
) -> list[Feed]:
    """Feeds for ``model``: ``iterations`` seeded random feeds (1 if None), or the user's data file.

    Random data: floats ~ N(0, 1) in the input's own float type, integers in ``[0, INT_HIGH)``, bools fair
    coins. Dynamic dims come from ``shapes`` (full shapes by input name), else ``DEFAULT_BATCH`` for axis 0,
    ``DEFAULT_SPATIAL`` for the other dynamic axes of a rank >= 3 input, ``DEFAULT_OTHER`` for the rest.

    A data file decides the feeds (``seed`` and ``shapes`` are ignored): an ``.npz`` keyed by input name (or
    ``x``, with labels ``y``, for a single-input model) is one feed; a ``.json`` from ``polygraphy run
    --save-inputs`` is a list of feeds (or one). With ``iterations`` given, the first ``iterations`` feeds
    are used, and a single feed holding many samples is split along the batch axis into that many feeds
    (see :func:`prepare_feeds`, which also says so). Each array must fit its input (name, rank, static
    dims, dtype kind) and is cast to its dtype.
    """
    return prepare_feeds(
        model, iterations=iterations, seed=seed, shapes=shapes, inputs_path=inputs_path
    ).feeds


@dataclass
class Feeds:
    """Feeds and what they are: ``source`` is ``random`` or ``file``; ``notes`` say what was chosen for the
    user (samples split off a file, dims defaulted); ``defaulted`` names inputs whose dynamic dims took
    the defaults."""

    feeds: list[Feed]
    source: str
    description: str
    notes: list[str]
    defaulted: list[str]

    def shapes_line(self) -> str:
        """The inputs fed, as Polygraphy prints them: ``input [float32, 1x3x224x224]``."""
        first = self.feeds[0]
        return ", ".join(f"{name} [{a.dtype}, {fmt_dims(a.shape)}]" for name, a in first.items())

    def to_dict(self) -> dict[str, Any]:
        first = self.feeds[0]
        return {
            "source": self.source,
            "description": self.description,
            "feeds": len(self.feeds),
            "shapes": {name: list(a.shape) for name, a in first.items()},
            "dtypes": {name: str(a.dtype) for name, a in first.items()},
            "defaulted": list(self.defaulted),
            "notes": list(self.notes),
        }


def prepare_feeds(
    model: onnx.ModelProto,
    *,
    iterations: int | None = None,
    seed: int = 0,
    shapes: Mapping[str, Shape] | None = None,
    inputs_path: str | Path | None = None,
) -> Feeds:
    """:func:`make_inputs` with a description of what was fed, for the user to read."""
    specs = _graph_inputs(model)
    if iterations is not None and iterations < 1:
        raise UsageError(f"iterations must be at least 1, got {iterations}")
    if inputs_path is not None:
        path = Path(inputs_path)
        named = [_labelled_layout(feed, specs) for feed in _load_feeds(path)]
        loaded, notes = _take_samples(named, specs, iterations, path.name)
        feeds = [_check_feed(feed, specs, f"{path.name}, feed {i}") for i, feed in enumerate(loaded)]
        return Feeds(feeds, "file", f"{len(feeds)} feed(s) from {path.name}", notes, [])
    given = shapes or {}
    resolved = _input_shapes(specs, given)
    rng = np.random.default_rng(seed)
    count = iterations or 1
    feeds = [{s.name: _random_array(rng, s, resolved[s.name]) for s in specs} for _ in range(count)]
    defaulted = [
        s.name for s in specs if s.name not in given and any(not isinstance(d, int) for d in s.dims or ())
    ]
    notes = []
    if defaulted:
        shown = ", ".join(f"{n}:{fmt_dims(resolved[n])}" for n in defaulted)
        notes.append(f"dynamic dims set to defaults ({shown}); give real ones with --shape NAME:DIMS")
    return Feeds(feeds, "random", f"{count} random N(0,1) feed(s), seed {seed}", notes, defaulted)


def _take_samples(
    feeds: list[Mapping[str, Any]], specs: list[_InputSpec], iterations: int | None, where: str
) -> tuple[list[Mapping[str, Any]], list[str]]:
    """``iterations`` feeds out of a file: the first ones, or one feed split along the batch axis."""
    if iterations is None or len(feeds) == iterations:
        return feeds, []
    if len(feeds) > iterations:
        return feeds[:iterations], [
            f"--iterations {iterations}: the first {iterations} of the {len(feeds)} feeds in {where}"
        ]
    if len(feeds) > 1:
        return feeds, [f"--iterations {iterations}: {where} holds only {len(feeds)} feeds; all are used"]
    feed = {name: np.asarray(array) for name, array in feeds[0].items()}
    batches = {a.shape[0] if a.ndim else None for a in feed.values()}
    if len(batches) != 1 or None in batches:
        raise ModelLoadError(
            f"--iterations {iterations}: cannot split {where} along the batch axis "
            "(its arrays do not share one)"
        )
    total = int(batches.pop() or 0)
    step = _static_batch(specs) or 1
    count = min(iterations, total // step)
    if count < 1:
        return [feed], []
    split: list[Mapping[str, Any]] = [
        {n: a[i * step : (i + 1) * step] for n, a in feed.items()} for i in range(count)
    ]
    note = (
        f"--iterations {iterations}: {count} of the {total} samples in {where}, "
        f"split along the batch axis ({step} per feed)"
    )
    if count < iterations:
        note += f"; the file holds only {count}"
    return split, [note]


def _static_batch(specs: list[_InputSpec]) -> int | None:
    dims = {s.dims[0] for s in specs if s.dims}
    return dims.pop() if len(dims) == 1 and isinstance(next(iter(dims)), int) else None  # type: ignore[return-value]


def contrast_feed(feeds: Sequence[Mapping[str, np.ndarray]], seed: int = 1) -> Mapping[str, np.ndarray]:
    """A second, different input to measure how much the outputs depend on the inputs.

    The next feed where there are several; else the same samples in another order where every input has
    one batch of several samples (real data stays real); else seeded random data of the same shapes.
    """
    if len(feeds) > 1:
        return feeds[1]
    feed = feeds[0]
    batches = {a.shape[0] if a.ndim else 0 for a in feed.values()}
    if len(batches) == 1 and batches.pop() > 1:
        return {name: np.roll(array, 1, axis=0) for name, array in feed.items()}
    rng = np.random.default_rng(seed)
    return {
        name: _random_array(rng, _InputSpec(name, array.dtype, tuple(array.shape)), tuple(array.shape))
        for name, array in feed.items()
    }


def _load_feeds(path: Path) -> list[Mapping[str, Any]]:
    from polygraphy.exception import PolygraphyException
    from polygraphy.json import load_json

    if not path.is_file() or path.suffix not in (".npz", ".json"):
        raise ModelLoadError(f"inputs file {path} not found, or neither .npz nor Polygraphy .json")
    try:
        if path.suffix == ".npz":
            with np.load(path, allow_pickle=False) as data:
                return [{name: data[name] for name in data.files}]
        with quiet_polygraphy():
            feeds = load_json(str(path), description="input data")
    except (OSError, ValueError, zipfile.BadZipFile, PolygraphyException) as err:
        raise ModelLoadError(f"cannot read inputs file {path}: {first_line(err)}") from err
    # `run --save-inputs x.json` writes a list of feeds; Polygraphy's `--load-inputs` also takes one feed.
    feeds = feeds if isinstance(feeds, list) else [feeds]
    if not feeds or not all(isinstance(feed, Mapping) for feed in feeds):
        raise ModelLoadError(f"inputs file {path} is not Polygraphy input data (a list of name -> array)")
    return feeds


def _labelled_layout(feed: Mapping[str, Any], specs: list[_InputSpec]) -> Mapping[str, Any]:
    """The common (x, y) layout of a labelled set, as ``sweep --labels`` and ``train`` take it: ``x`` feeds
    a single-input model of another name, and ``y`` (its labels) feeds nothing."""
    names = [s.name for s in specs]
    if len(names) == 1 and names[0] not in feed and "x" in feed and set(feed) <= {"x", "y"}:
        return {names[0]: feed["x"]}
    return feed


def _check_feed(feed: Mapping[str, Any], specs: list[_InputSpec], where: str) -> Feed:
    feed = _labelled_layout(feed, specs)
    names = [s.name for s in specs]
    for name in feed:
        if name not in names:
            raise ModelLoadError(
                f"{where}: {name!r} is not an input of the model (inputs: {', '.join(names)})"
            )
    checked = {}
    for spec in specs:
        if spec.name not in feed:
            raise ModelLoadError(f"{where}: no data for input {spec.name!r}")
        array = np.asarray(feed[spec.name])
        if not spec.fits(array.shape):
            where_shape = f"{where}: input {spec.name!r} has shape {fmt_dims(array.shape)}"
            hint = "; --iterations N splits a file of many samples into N feeds" if array.ndim else ""
            raise ModelLoadError(f"{where_shape}, the model takes {fmt_dims(spec.dims or ())}{hint}")
        # float64 data for a float32 input is numpy's default, not a mistake; floats for an int input are.
        if not np.can_cast(array.dtype, spec.dtype, "same_kind"):
            raise ModelLoadError(
                f"{where}: input {spec.name!r} is {array.dtype}, the model takes {spec.dtype}"
            )
        checked[spec.name] = array.astype(spec.dtype, copy=False)
    return checked


def original_fails_message(feeds: Feeds, err: BaseException) -> str:
    """The one line for an original model that does not run on ``feeds``, with how to fix the inputs."""
    head = f"the original model does not run on the inputs fed ({feeds.shapes_line()}): {first_line(err)}"
    if feeds.defaulted:
        name = feeds.defaulted[0]
        dims = fmt_dims(feeds.feeds[0][name].shape)
        hint = f"give the real shape with --shape {name}:DIMS (now {dims})"
        return f"{head}; its dynamic dims were set to defaults: {hint}"
    if feeds.source == "random":
        return f"{head}; random data may not suit it: give real samples with --inputs"
    return head


def shapes_from_data(
    model: onnx.ModelProto, given: Mapping[str, Shape], data: Mapping[str, np.ndarray] | None
) -> tuple[dict[str, Shape], list[str]]:
    """The shapes to count and feed at: ``given`` (``--shape``), and for every other input with dynamic
    dims, one sample of the user's data (batch 1); with a note per input taken from the data."""
    shapes: dict[str, Shape] = dict(given)
    notes: list[str] = []
    if not data:
        return shapes, notes
    for spec in _graph_inputs(model):
        dynamic = spec.dims is None or any(not isinstance(d, int) for d in spec.dims)
        if spec.name in shapes or not dynamic or spec.name not in data:
            continue
        shape = (1, *data[spec.name].shape[1:])
        if spec.fits(shape):
            shapes[spec.name] = shape
            notes.append(f"{spec.name}:{fmt_dims(shape)}")
    return shapes, notes
