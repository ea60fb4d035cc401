"""Bias maps in the form a backend builds best.

A compensated prune leaves a bias map behind every zero-padded Conv whose removed input channels carried
constants (``rules/padmap.py``): ``Conv → Add(map) → BatchNormalization``, the map stored as its separable
factors ``rows @ taps @ cols`` (or dense where that is smaller). ONNX Runtime folds the factors once when it
loads the model; an engine builder stores a dense map whole, and computes a factored one in a kernel of its
own. This pass rewrites every map into one of these forms:

- ``factored``: as the prune wrote it (nothing changes);
- ``dense``: one [1, K, Ho, Wo] constant;
- ``conv``: the map as what it is, the Conv's own geometry applied to an image of ones with the summed taps
  ``A = sum_j c_j W[:, j]`` as a one-channel weight [K, 1, R, S]: exact, Hi * Wi + K * R * S numbers, and a
  builder computes it with a small convolution (a dense map stays as it is: its taps are not kept);
- ``after-bn``: the Add moved behind the BatchNormalization that reads it, the map scaled by that BN's
  per-channel factor ``gamma / sqrt(var + eps)`` (``BN(c + m) = BN(c) + scale * m``): exact, and the
  Conv → BN pair is adjacent again so that a builder fuses it; a map with no BN after it stays where it is;
- ``interior``: no map at all. Away from the border every tap of the Conv lands inside the input, so the map
  is one value per channel there (the sum of its taps); that value is folded into the Conv's bias and the
  border, where the map differs from it, is left wrong. Not exact: the record says by how much the Conv's
  output is off at the border (the largest difference) and on what fraction of its positions.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from onnxprune.errors import UsageError
from onnxprune.graph import infer_shapes, to_model
from onnxprune.rules.base import const
from onnxprune.rules.padmap import factored_map

FORMS = ("factored", "dense", "conv", "after-bn", "interior")
EXACT_FORMS = ("factored", "dense", "conv", "after-bn")


@dataclass
class MapsRecord:
    """What ``convert_maps`` did: the form asked for, the maps found and how many took that form."""

    form: str
    maps: int = 0
    converted: int = 0
    left: list[dict[str, str]] = field(default_factory=list)  # maps that kept their form, and why
    border_max_abs: float = 0.0  # interior: the largest error it leaves at a Conv's output
    border_fraction: float = 0.0  # interior: the share of mapped Conv output positions that are off
    positions: int = 0  # interior: the output positions of the Convs whose maps were folded

    @property
    def exact(self) -> bool:
        return self.form in EXACT_FORMS or self.converted == 0

    def to_dict(self) -> dict[str, Any]:
        record: dict[str, Any] = {
            "form": self.form,
            "maps": self.maps,
            "converted": self.converted,
            "exact": self.exact,
            "left": self.left,
        }
        if self.form == "interior":
            record["border_max_abs"] = self.border_max_abs
            record["border_fraction"] = self.border_fraction
        return record

    def line(self) -> str:
        """One line for a build's printout."""
        if not self.maps:
            return "bias maps: none"
        text = f"bias maps: {self.converted} of {self.maps} {self.form}"
        if self.left:
            text += f" ({len(self.left)} left as they were: {self.left[0]['reason']})"
        if self.form == "interior" and self.converted:
            text += (
                f"; not exact: off by up to {self.border_max_abs:.3g} at the border "
                f"({self.border_fraction:.1%} of those Convs' output positions)"
            )
        return text


@dataclass
class _Site:
    """One map: ``add`` adds ``values`` (float64 [1, K, Ho, Wo]) to the output of ``conv``."""

    add: gs.Node
    conv: gs.Node
    conv_side: int  # which input of the Add is the Conv's output
    values: np.ndarray
    interior: np.ndarray  # [K]: the map's value where every tap is inside
    factors: gs.Node | None  # the first MatMul (rows @ taps) of a factored map


def check_form(form: str) -> str:
    if form not in FORMS:
        raise UsageError(f"--bias-maps must be one of {', '.join(FORMS)}, got {form!r}")
    return form


def convert_maps(model: onnx.ModelProto, form: str) -> tuple[onnx.ModelProto, MapsRecord]:
    """A copy of ``model`` with every bias map in ``form`` (``model`` itself is not changed)."""
    check_form(form)
    # The conv form needs each mapped Conv's input size: inferred, where the model does not say.
    graph = gs.import_onnx(infer_shapes(model) if form == "conv" else model)
    sites = find_maps(graph)
    record = MapsRecord(form, maps=len(sites))
    if form == "factored" or not sites:
        record.converted = sum(site.factors is not None for site in sites)
        record.left = [{"node": s.add.name, "reason": "stored dense"} for s in sites if s.factors is None]
        return model, record
    changed = 0
    rewrite = {"dense": _to_dense, "conv": _to_conv, "after-bn": _after_bn, "interior": _to_interior}[form]
    for index, site in enumerate(sites):
        reason = rewrite(graph, site, index, record)
        if reason is None:
            changed += 1
        else:
            record.left.append({"node": site.add.name, "reason": reason})
    record.converted = changed
    graph.cleanup().toposort()
    return to_model(graph, model), record


def find_maps(graph: gs.Graph) -> list[_Site]:
    """Every Add of a constant [1, K, Ho, Wo] map (dense or factored) to the output of a Conv that nothing
    else reads."""
    sites = []
    for node in graph.nodes:
        if node.op != "Add" or len(node.inputs) != 2:
            continue
        for side in (0, 1):
            conv_out, other = node.inputs[side], node.inputs[1 - side]
            producer = conv_out.inputs[0] if len(conv_out.inputs) == 1 else None
            if producer is None or producer.op != "Conv" or len(conv_out.outputs) != 1:
                continue
            site = _site(node, producer, side, other)
            if site is not None:
                sites.append(site)
                break
    return sites


def _site(add: gs.Node, conv: gs.Node, side: int, other: gs.Tensor) -> _Site | None:
    first = factored_map(other)
    if first is not None:
        rows, taps = const(first.inputs[0]), const(first.inputs[1])
        cols = const(other.inputs[0].inputs[1])
        assert rows is not None and taps is not None and cols is not None  # factored_map checked them
        values = np.matmul(np.matmul(rows.astype(np.float64), taps.astype(np.float64)), cols)[None]
        return _Site(add, conv, side, values, taps.astype(np.float64).sum(axis=(1, 2)), first)
    dense = const(other) if isinstance(other, gs.Constant) else None
    if dense is None or dense.ndim != 4 or dense.shape[0] != 1 or dense.shape[2] * dense.shape[3] <= 1:
        return None
    values = dense.astype(np.float64)
    centre = values[0, :, values.shape[2] // 2, values.shape[3] // 2]  # inside, where the map is that big
    return _Site(add, conv, side, values, centre, None)


def _map_input(site: _Site) -> gs.Tensor:
    return site.add.inputs[1 - site.conv_side]


def _dtype(site: _Site) -> np.dtype:
    stored = site.factors.inputs[1] if site.factors is not None else _map_input(site)
    return np.asarray(const(stored)).dtype


def _to_dense(graph: gs.Graph, site: _Site, index: int, record: MapsRecord) -> str | None:
    if site.factors is None:
        return "already dense"
    dense = gs.Constant(f"{site.add.name or 'map'}_dense_{index}", site.values.astype(_dtype(site)))
    site.add.inputs[1 - site.conv_side] = dense
    return None


def _to_conv(graph: gs.Graph, site: _Site, index: int, record: MapsRecord) -> str | None:
    """The map recomputed by the Conv's geometry from a ones image: zero padding makes the border right."""
    if site.factors is None:
        return "stored dense: its taps are not kept"
    shape = site.conv.inputs[0].shape
    if shape is None or len(shape) != 4 or not all(isinstance(d, int) for d in shape[2:]):
        return "the Conv's input size is not known"
    taps = np.asarray(const(site.factors.inputs[1]))
    prefix = f"{site.add.name or 'map'}_conv_{index}"
    ones = gs.Constant(f"{prefix}_ones", np.ones((1, 1, *shape[2:]), dtype=taps.dtype))
    weight = gs.Constant(f"{prefix}_taps", np.ascontiguousarray(taps[:, None]))
    attrs = {key: value for key, value in site.conv.attrs.items() if key != "group"}
    out = gs.Variable(prefix, dtype=taps.dtype)
    graph.nodes.append(gs.Node("Conv", prefix, attrs=attrs, inputs=[ones, weight], outputs=[out]))
    site.add.inputs[1 - site.conv_side] = out
    return None


def _after_bn(graph: gs.Graph, site: _Site, index: int, record: MapsRecord) -> str | None:
    """Conv → Add(m) → BN becomes Conv → BN → Add(scale * m); the Add takes over the BN's output."""
    out = site.add.outputs[0]
    readers = out.outputs
    if len(readers) != 1 or readers[0].op != "BatchNormalization" or readers[0].inputs[0] is not out:
        return "no BatchNormalization reads it alone"
    bn = readers[0]
    gamma, var = const(bn.inputs[1]), const(bn.inputs[4])
    if gamma is None or var is None or gamma.ndim != 1 or len(bn.outputs) != 1:
        return "its BatchNormalization's statistics are not constants"
    scale = gamma.astype(np.float64) / np.sqrt(var.astype(np.float64) + float(bn.attrs.get("epsilon", 1e-5)))
    conv_out, bn_out = site.add.inputs[site.conv_side], bn.outputs[0]
    name = f"{site.add.name or 'map'}_after_bn_{index}"
    if site.factors is not None:  # scaled along K, the map stays factored
        taps = np.asarray(const(site.factors.inputs[1]))
        site.factors.inputs[1] = gs.Constant(name, (taps * scale[:, None, None]).astype(taps.dtype))
        scaled: gs.Tensor = _map_input(site)
    else:
        scaled = gs.Constant(name, (site.values * scale[None, :, None, None]).astype(_dtype(site)))
    normalised = gs.Variable(f"{bn_out.name}_before_map", dtype=bn_out.dtype, shape=bn_out.shape)
    bn.inputs[0] = conv_out
    bn.outputs[0] = normalised
    site.add.inputs[site.conv_side] = normalised
    site.add.inputs[1 - site.conv_side] = scaled
    site.add.outputs[0] = bn_out
    return None


def _to_interior(graph: gs.Graph, site: _Site, index: int, record: MapsRecord) -> str | None:
    """The Conv's bias gains the map's interior value; the Add is bypassed (its output becomes the Conv's)."""
    conv, dtype = site.conv, _dtype(site)
    bias = const(conv.inputs[2]) if len(conv.inputs) > 2 else None
    base = np.zeros(len(site.interior)) if bias is None else bias.astype(np.float64)
    conv_bias = gs.Constant(
        f"{conv.name or 'conv'}_bias_interior_{index}", (base + site.interior).astype(dtype)
    )
    if len(conv.inputs) > 2:
        conv.inputs[2] = conv_bias
    else:
        conv.inputs.append(conv_bias)
    error = np.abs(site.values[0] - site.interior[:, None, None]).max(axis=0)  # [Ho, Wo]
    # float64 sums of the same taps in another order: equal to ~1e-16 of the map's scale
    noise = 1e-9 * max(float(np.abs(site.values).max()), 1e-30)
    off = record.border_fraction * record.positions + float((error > noise).sum())
    record.positions += error.size
    record.border_fraction = off / record.positions
    record.border_max_abs = max(record.border_max_abs, float(error.max()))
    out = site.add.outputs[0]
    site.add.outputs.clear()
    conv.outputs[0] = out
    return None
