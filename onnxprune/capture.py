"""Capture: intermediate tensors of a model from ONNX Runtime, batch by batch, without a framework.

A model is cut down to what the wanted tensors need (nodes and weights) and those tensors become its
outputs, so an early layer's activations cost only the layers before it. A static batch (exporters often
write 1) is made dynamic so calibration runs many samples per call; where the graph bakes the batch in
(a ``Reshape`` to ``[1, -1]``), it runs at the model's own batch instead.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence

import numpy as np
import onnx

from onnxprune.data import Samples, batches, count
from onnxprune.errors import OnnxPruneError, first_line
from onnxprune.runtime import ort_session

# Bytes of wanted tensors per ORT call: bounds memory whatever the data size.
BATCH_BYTES = 32 * 2**20
MAX_BATCH = 64
# What a sample costs inside ONNX Runtime, in multiples of its input's bytes, where the wanted tensors say
# less: a run holds the cut's own intermediate activations, and a stride-2 stem of 16-64 channels alone
# holds 1-5x the input's bytes. A deep wave of small maps sized by its outputs alone ran 64 detector
# samples at 640x640 per call and swung the process by 6 GB.
ACTIVATION_FACTOR = 4


def subset(model: onnx.ModelProto, wanted: Sequence[str]) -> onnx.ModelProto:
    """A copy of ``model`` computing only ``wanted`` (tensor names), which are its outputs."""
    graph = model.graph
    if any(
        a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS)
        for n in graph.node
        for a in n.attribute
    ):
        needed_nodes = list(graph.node)  # subgraphs read outer tensors: keep everything
    else:
        needed_nodes = _needed(graph, set(wanted))
    used = {name for node in needed_nodes for name in node.input}
    inits = [t for t in graph.initializer if t.name in used]
    init_names = {t.name for t in graph.initializer}
    inputs = [v for v in graph.input if v.name not in init_names]
    new = onnx.helper.make_graph(
        needed_nodes, graph.name, inputs, [onnx.ValueInfoProto(name=name) for name in wanted], inits
    )
    out = onnx.helper.make_model(new, opset_imports=model.opset_import, ir_version=model.ir_version)
    out.functions.extend(model.functions)
    return out


def _needed(graph: onnx.GraphProto, wanted: set[str]) -> list[onnx.NodeProto]:
    keep = [False] * len(graph.node)
    frontier = set(wanted)
    for index in range(len(graph.node) - 1, -1, -1):
        node = graph.node[index]
        if frontier.intersection(node.output):
            keep[index] = True
            frontier.update(n for n in node.input if n)
    return [node for node, kept in zip(graph.node, keep, strict=True) if kept]


def dynamic_batch(copy: onnx.ModelProto) -> onnx.ModelProto:
    """Axis 0 of every data input made a dim_param, shapes of everything else forgotten: in place (on a
    copy from ``subset``: one more copy of the weights would be one more model in memory)."""
    init_names = {t.name for t in copy.graph.initializer}
    for value in copy.graph.input:
        dims = value.type.tensor_type.shape.dim
        if value.name not in init_names and len(dims):
            dims[0].Clear()
            dims[0].dim_param = "calib_batch"
    del copy.graph.value_info[:]
    outputs = [onnx.ValueInfoProto(name=v.name) for v in copy.graph.output]
    del copy.graph.output[:]
    copy.graph.output.extend(outputs)
    return copy


class Runner:
    """Runs a model (or a cut of it) over samples and yields the wanted tensors batch by batch."""

    def __init__(
        self,
        model: onnx.ModelProto,
        wanted: Sequence[str],
        static_batch: int | None,
        batch: int | None = None,
    ) -> None:
        """``batch``: samples per call; None: sized from the first call (one sample) to BATCH_BYTES."""
        self.wanted = list(wanted)
        self.static_batch = static_batch
        cut = subset(model, self.wanted)
        self.session = ort_session(
            dynamic_batch(cut) if static_batch is not None else cut, threads=2, spin=False
        )
        self.batch = batch

    def run(self, samples: Samples) -> Iterator[tuple[int, int, dict[str, np.ndarray]]]:
        """(first sample index, end index, {name: array}) per batch."""
        total = count(samples)
        start = 0
        while start < total:
            size = self.batch or 1
            feed = {name: array[start : start + size] for name, array in samples.items()}
            outputs = self._call(feed)
            if self.batch is None:
                self.batch = batch_size(feed, outputs)
            stop = min(start + size, total)
            yield start, stop, outputs
            start = stop

    def _call(self, feed: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        try:
            values = self.session.run(self.wanted, dict(feed))
        except Exception as err:
            if self.static_batch is None or self.batch == self.static_batch:
                raise OnnxPruneError(f"calibration run failed in ONNX Runtime: {first_line(err)}") from err
            # The graph fixes its batch after all: fall back to the model's own.
            self.batch = self.static_batch
            return self._split(feed)
        return dict(zip(self.wanted, values, strict=True))

    def _split(self, feed: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        assert self.static_batch is not None
        parts = [self._call(b) for b in batches(feed, self.static_batch)]
        return {name: np.concatenate([p[name] for p in parts]) for name in self.wanted}


def batch_size(feed: Mapping[str, np.ndarray], outputs: Mapping[str, np.ndarray]) -> int:
    """Samples per call, from one call's feed and outputs: the larger of the wanted tensors' bytes and the
    activations' estimate (ACTIVATION_FACTOR x the input's bytes) fits BATCH_BYTES."""
    n = max(len(next(iter(feed.values()))), 1)
    wanted = sum(a.nbytes for a in outputs.values()) // n
    inside = ACTIVATION_FACTOR * sum(a.nbytes for a in feed.values()) // n
    return int(np.clip(BATCH_BYTES // max(wanted, inside, 1), 1, MAX_BATCH))


def for_each_batch(
    model: onnx.ModelProto,
    wanted: Sequence[str],
    samples: Samples,
    static_batch: int | None,
    visit: Callable[[int, int, dict[str, np.ndarray]], None],
) -> None:
    """Calls ``visit(start, stop, tensors)`` for every batch ``samples[start:stop]``."""
    if not wanted:
        return
    for start, stop, outputs in Runner(model, wanted, static_batch).run(samples):
        visit(start, stop, outputs)
