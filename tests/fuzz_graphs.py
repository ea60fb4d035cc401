"""Random CNN graphs for the property tests: chains of Conv → BN → activation, residual Adds, Concats,
channel Splits and Slices, depthwise and grouped convs, squeeze-excite, per-channel Mul/Add constants,
pooling and Resize, heads of GAP → Flatten → Gemm, Flatten → Gemm or a Gemm → Relu → Gemm MLP, and several
outputs (raw feature maps too), at opsets 13, 17 and 18, with random channel counts (1 to 24, most not
multiples of 8) and random dead channels.

A ``GraphBuilder`` adds one block per call on top of ``tiny.Net`` and records every call, so a generated
graph prints as the Python that rebuilds it (``describe``) and ``replay`` rebuilds it from the record.
The hypothesis strategy ``graphs()`` only draws the calls; shrinking then works on blocks and their sizes.

Where exactness is defined. Pruning at ``threshold=0`` removes the channels whose scoring BN is dead
(gamma = beta = 0). The pruned model can equal the original only if every *source* of such a channel (each
producer Conv's output, each scoring BN's output) is exactly 0 there. Every Conv here feeds its own BN and
nothing else, so that holds for Conv → BN. The one producer without a BN is a squeeze-excite gate Conv: its
removed channel (sigmoid(0) = 0.5 after masking) multiplies the block's input, so the block's input must be
exactly 0 on dead channels. The builder tracks that (``Live.zero``) and only puts an SE block on such a
tensor; after a non-zero-preserving activation (Sigmoid, HardSigmoid, Softplus) it first adds a Conv → BN →
Relu. Everywhere else dead channels are drawn freely, including 100 % dead BNs (min-keep must hold).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx
import tiny
from hypothesis import strategies as st
from onnx import numpy_helper

ZERO_ACTS = ("Relu", "LeakyRelu", "Relu6", "SiLU", "Tanh", "Elu", "")
NONZERO_ACTS = ("Sigmoid", "HardSigmoid", "Softplus")  # f(0) != 0: consumers must fold or keep
ACTS = ZERO_ACTS + NONZERO_ACTS
HEADS = ("gap_gemm", "flatten_gemm", "mlp", "raw")
MAX_CHANNELS = 24


@dataclass
class Live:
    """A tensor later blocks may read."""

    name: str
    c: int
    hw: int
    zero: bool  # removed (dead) channels are exactly 0 here
    used: bool = False


def _recorded(method: Callable[..., int]) -> Callable[..., int]:
    @functools.wraps(method)
    def wrapper(self: GraphBuilder, *args: Any, **kwargs: Any) -> int:
        self.calls.append((method.__name__, args, kwargs))
        return method(self, *args, **kwargs)

    return wrapper


@dataclass
class GraphBuilder:
    """Blocks on top of ``tiny.Net``; each block method takes live-tensor indices and returns the new one."""

    seed: int = 0
    in_channels: int = 3
    hw: int = 8
    opset: int = 17
    calls: list[tuple[str, tuple, dict]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.net = tiny.Net(self.seed)
        self.live = [Live("input", self.in_channels, self.hw, True)]

    # ---- helpers ---------------------------------------------------------------------------------
    def _use(self, i: int) -> Live:
        self.live[i].used = True
        return self.live[i]

    def _push(self, name: str, c: int, hw: int, zero: bool) -> int:
        self.live.append(Live(name, c, hw, zero))
        return len(self.live) - 1

    def _bn(self, x: str, c: int, dead: float) -> str:
        return self.net.bn(x, c, dead=self.net.rng.random(c) < dead)

    def _int64(self, values: list[int], hint: str) -> str:
        self.net.count += 1
        name = f"{hint}{self.net.count}"
        self.net.inits.append(numpy_helper.from_array(np.array(values, np.int64), name))
        return name

    def _conv_bn_act(
        self, x: Live, c_out: int, k: int, act: str, dead: float, group: int = 1, stride=1, bias=False
    ):
        h = self.net.conv(x.name, x.c, c_out, k, group=group, stride=stride, bias=bias)
        h = self.net.act(self._bn(h, c_out, dead), act)
        hw = (x.hw - 1) // stride + 1
        return self._push(h, c_out, hw, act in ZERO_ACTS)

    # ---- blocks ----------------------------------------------------------------------------------
    @_recorded
    def cbr(
        self, src: int, c_out: int, k: int = 3, act: str = "Relu", dead: float = 0.5, stride=1, bias=False
    ) -> int:
        """Conv → BN → activation."""
        return self._conv_bn_act(self._use(src), c_out, k, act, dead, stride=stride, bias=bias)

    @_recorded
    def residual(self, src: int, mid: int, act: str = "Relu", post: str = "", dead: float = 0.5) -> int:
        """x + BN(Conv(cbr(x))), then an optional activation: ResNet's basic block."""
        x = self._use(src)
        h = self.live[self._conv_bn_act(x, mid, 3, act, dead)]
        h.used = True
        y = self._bn(self.net.conv(h.name, mid, x.c, 3), x.c, dead)
        out = self.net.act(self.net.node("Add", [y, x.name]), post)
        return self._push(out, x.c, x.hw, x.zero and post in ZERO_ACTS)

    @_recorded
    def add(self, a: int, b: int, post: str = "") -> int:
        """Add of two live tensors of the same shape (a Split half plus a Conv output cuts a group)."""
        x, y = self._use(a), self._use(b)
        assert (x.c, x.hw) == (y.c, y.hw), "add needs equal shapes"
        out = self.net.act(self.net.node("Add", [x.name, y.name]), post)
        return self._push(out, x.c, x.hw, x.zero and y.zero and post in ZERO_ACTS)

    @_recorded
    def concat(self, srcs: list[int]) -> int:
        parts = [self._use(i) for i in srcs]
        assert len({p.hw for p in parts}) == 1, "concat needs equal spatial sizes"
        out = self.net.node("Concat", [p.name for p in parts], axis=1)
        return self._push(out, sum(p.c for p in parts), parts[0].hw, all(p.zero for p in parts))

    @_recorded
    def split(self, src: int, sizes: list[int], even: bool = False) -> int:
        """Split on the channel axis; ``even`` uses opset 18's num_outputs. Returns the last part."""
        x = self._use(src)
        assert sum(sizes) == x.c and min(sizes) > 0
        if even and self.opset >= 18:
            made = self.net.node("Split", [x.name], n_out=len(sizes), axis=1, num_outputs=len(sizes))
        else:
            made = self.net.node("Split", [x.name, self._int64(sizes, "split")], n_out=len(sizes), axis=1)
        outs: list[str] = [made] if isinstance(made, str) else list(made)
        return [self._push(o, s, x.hw, x.zero) for o, s in zip(outs, sizes, strict=True)][-1]

    @_recorded
    def depthwise(self, src: int, act: str = "Relu6", dead: float = 0.5, stride: int = 1) -> int:
        """Depthwise 3x3 Conv → BN → activation (MobileNet)."""
        x = self._use(src)
        out = self._conv_bn_act(x, x.c, 3, act, dead, group=x.c, stride=stride)
        self.live[out].zero = False  # the depthwise BN does not score: it maps a removed 0 to a constant
        return out

    @_recorded
    def grouped(self, src: int, group: int, per_group: int, act: str = "Relu", dead: float = 0.5) -> int:
        """Grouped 3x3 Conv (1 < group < C) → BN → activation (ResNeXt)."""
        x = self._use(src)
        assert x.c % group == 0
        return self._conv_bn_act(x, group * per_group, 3, act, dead, group=group)

    @_recorded
    def se(self, src: int, squeeze: int, dead_filters: float = 0.0) -> int:
        """x * Sigmoid(Conv(Relu(Conv(GAP(x))))); ``dead_filters`` zeroes squeeze filters (l1 = 0)."""
        x = self._use(src)
        n = self.net
        w1 = n.rng.normal(0, np.sqrt(2 / x.c), (squeeze, x.c, 1, 1))
        b1 = n.rng.normal(0, 0.1, squeeze)
        dead = n.rng.random(squeeze) < dead_filters
        w1[dead], b1[dead] = 0.0, 0.0
        pooled = n.node("GlobalAveragePool", [x.name])
        h = n.node("Relu", [n.node("Conv", [pooled, n.param(w1), n.param(b1, "b")], kernel_shape=[1, 1])])
        w2, b2 = n.rng.normal(0, np.sqrt(2 / squeeze), (x.c, squeeze, 1, 1)), n.rng.normal(0, 0.1, x.c)
        gate = n.node("Sigmoid", [n.node("Conv", [h, n.param(w2), n.param(b2, "b")], kernel_shape=[1, 1])])
        return self._push(n.node("Mul", [x.name, gate]), x.c, x.hw, x.zero)

    @_recorded
    def maxpool(self, src: int) -> int:
        x = self._use(src)
        out = self.net.node("MaxPool", [x.name], kernel_shape=[2, 2], strides=[2, 2])
        return self._push(out, x.c, x.hw // 2, x.zero)

    @_recorded
    def slice(self, src: int, lo: int, hi: int) -> int:
        """Channels [lo, hi) of a live tensor (Slice on axis 1)."""
        x = self._use(src)
        assert 0 <= lo < hi <= x.c
        ins = [x.name] + [self._int64(v, h) for v, h in (([lo], "starts"), ([hi], "ends"), ([1], "axes"))]
        return self._push(self.net.node("Slice", ins), hi - lo, x.hw, x.zero)

    @_recorded
    def upsample(self, src: int) -> int:
        """Nearest Resize by 2 of the spatial axes."""
        x = self._use(src)
        scales = self.net.param(np.array([1.0, 1.0, 2.0, 2.0]), "scales")
        out = self.net.node("Resize", [x.name, "", scales], mode="nearest")
        return self._push(out, x.c, x.hw * 2, x.zero)

    @_recorded
    def avgpool(self, src: int, count_include_pad: int = 0) -> int:
        """3x3 average pool, stride 1, padded: counting the padding turns a constant channel into a map."""
        x = self._use(src)
        out = self.net.node(
            "AveragePool", [x.name], kernel_shape=[3, 3], pads=[1] * 4, count_include_pad=count_include_pad
        )
        return self._push(out, x.c, x.hw, x.zero)

    @_recorded
    def scale(self, src: int, op: str = "Mul", rank: int = 4) -> int:
        """A per-channel constant operand ([1, C, 1, 1] or [C, 1, 1]): sliced with the kept channels."""
        x = self._use(src)
        shape = (1, x.c, 1, 1) if rank == 4 else (x.c, 1, 1)
        values = self.net.rng.uniform(0.5, 1.5, shape)
        out = self.net.node(op, [x.name, self.net.param(values, "scale")])
        return self._push(out, x.c, x.hw, x.zero and op == "Mul")

    # ---- finishing -------------------------------------------------------------------------------
    def head(self, src: int, kind: str) -> str:
        """A graph output read from a live tensor: GAP → Flatten → Gemm, Flatten → Gemm, or the map."""
        x = self._use(src)
        n = self.net
        if kind == "raw":
            return x.name
        if kind == "gap_gemm":
            return n.head(x.name, x.c, classes=5)
        if kind == "mlp":
            return self._mlp(n.node("Flatten", [n.node("GlobalAveragePool", [x.name])], axis=1), x.c)
        features = x.c * x.hw * x.hw
        flat = n.node("Flatten", [x.name], axis=1)
        w = n.param(n.rng.normal(0, np.sqrt(1 / features), (features, 5)))
        return n.node("Gemm", [flat, w, n.param(n.rng.normal(0, 0.1, 5), "b")])

    def _mlp(self, flat: str, features: int, hidden: int = 6) -> str:
        """Gemm → Relu → Gemm; half of the hidden filters are zero (l1 = 0, dead at threshold 0)."""
        n = self.net
        w1 = n.rng.normal(0, np.sqrt(1 / features), (hidden, features))
        b1 = n.rng.normal(0, 0.1, hidden)
        dead = n.rng.random(hidden) < 0.5
        w1[dead], b1[dead] = 0.0, 0.0
        h = n.node("Relu", [n.node("Gemm", [flat, n.param(w1), n.param(b1, "b")], transB=1)])
        w2 = n.param(n.rng.normal(0, np.sqrt(1 / hidden), (hidden, 5)))
        return n.node("Gemm", [h, w2, n.param(n.rng.normal(0, 0.1, 5), "b")])

    def finish(self, heads: list[tuple[int, str]]) -> onnx.ModelProto:
        self.calls.append(("finish", (heads,), {}))
        names = list(dict.fromkeys(self.head(i, kind) for i, kind in heads))
        return self.net.model(names, shape=(1, self.in_channels, self.hw, self.hw), opset=self.opset)

    def leaves(self) -> list[int]:
        return [i for i, t in enumerate(self.live) if i > 0 and not t.used]

    def describe(self) -> str:
        """The Python that rebuilds this graph."""
        head = f"b = GraphBuilder(seed={self.seed}, in_channels={self.in_channels}, hw={self.hw}, "
        lines = [head + f"opset={self.opset})"]
        for name, args, kwargs in self.calls:
            params = [repr(a) for a in args] + [f"{k}={v!r}" for k, v in kwargs.items()]
            lines.append(f"b.{name}({', '.join(params)})")
        return "\n".join(lines)


def replay(seed: int, in_channels: int, hw: int, opset: int, calls: list[tuple[str, tuple, dict]]):
    """Rebuild a recorded graph: the same calls on a fresh builder give the same model."""
    builder = GraphBuilder(seed, in_channels, hw, opset)
    model = None
    for name, args, kwargs in calls:
        model = getattr(builder, name)(*args, **kwargs)
    return builder, model


@dataclass
class FuzzGraph:
    model: onnx.ModelProto
    builder: GraphBuilder

    def describe(self) -> str:
        return self.builder.describe()


# ---- the hypothesis strategy ---------------------------------------------------------------------------
channels = st.integers(1, MAX_CHANNELS)
deadness = st.sampled_from([0.0, 0.3, 0.6, 1.0])
BLOCKS = (
    "cbr", "residual", "add", "concat", "split", "depthwise", "grouped", "se", "maxpool",
    "slice", "upsample", "avgpool", "scale",
)  # fmt: skip


@st.composite
def graphs(draw: st.DrawFn, max_blocks: int = 7, exact: bool = True) -> FuzzGraph:
    """A random graph. ``exact``: squeeze-excite only where pruning dead channels is exact (see above)."""
    b = GraphBuilder(
        seed=draw(st.integers(0, 2**16)),
        in_channels=draw(st.sampled_from([3, 1, 4])),
        hw=draw(st.sampled_from([8, 6])),
        opset=draw(st.sampled_from([17, 13, 18])),
    )
    b.cbr(
        0,
        draw(channels),
        k=draw(st.sampled_from([3, 1])),
        act=draw(st.sampled_from(ACTS)),
        dead=draw(deadness),
    )
    for _ in range(draw(st.integers(0, max_blocks))):
        _block(draw, b, draw(st.sampled_from(BLOCKS)), exact)
    heads = [(i, draw(st.sampled_from(HEADS))) for i in b.leaves()]
    extra = draw(st.lists(st.integers(1, len(b.live) - 1), max_size=2, unique=True))
    heads += [(i, "raw") for i in extra if i not in b.leaves()]
    return FuzzGraph(b.finish(heads), b)


def _pick(draw: st.DrawFn, b: GraphBuilder, ok: Callable[[Live], bool] = lambda t: True) -> int | None:
    """A live tensor other than the graph input (most blocks read features), preferring recent ones."""
    options = [i for i, t in enumerate(b.live) if i > 0 and ok(t)]
    if not options:
        return None
    return options[-1 - draw(st.integers(0, len(options) - 1))]


def _block(draw: st.DrawFn, b: GraphBuilder, kind: str, exact: bool) -> None:
    act = st.sampled_from(ACTS)
    src = _pick(draw, b)
    assert src is not None  # the first cbr always exists
    x = b.live[src]
    if kind == "residual":
        b.residual(
            src, draw(channels), act=draw(act), post=draw(st.sampled_from(ZERO_ACTS)), dead=draw(deadness)
        )
    elif kind == "add":
        other = _pick(draw, b, lambda t: (t.c, t.hw) == (x.c, x.hw))
        b.add(src, other if other is not None else src, post=draw(st.sampled_from(("", "Relu"))))
    elif kind == "concat":
        more = draw(st.lists(st.integers(0, 3), min_size=1, max_size=2))
        same = [i for i, t in enumerate(b.live) if i > 0 and t.hw == x.hw]
        b.concat([src] + [same[-1 - k % len(same)] for k in more])
    elif kind == "split" and x.c >= 2:
        parts = draw(st.integers(2, min(3, x.c)))
        even = draw(st.booleans())
        if even:
            step = -(-x.c // parts)
            sizes = [min(step, x.c - k * step) for k in range(parts)]
            sizes = [s for s in sizes if s > 0]
        else:
            cuts = sorted(
                draw(st.lists(st.integers(1, x.c - 1), min_size=parts - 1, max_size=parts - 1, unique=True))
            )
            sizes = [hi - lo for lo, hi in zip([0, *cuts], [*cuts, x.c], strict=True)]
        if len(sizes) >= 2:
            b.split(src, sizes, even=even)
    elif kind == "depthwise":
        b.depthwise(
            src, act=draw(act), dead=draw(deadness), stride=draw(st.sampled_from([1, 2])) if x.hw > 2 else 1
        )
    elif kind == "grouped":
        divisors = [g for g in range(2, x.c) if x.c % g == 0]
        if divisors:
            g = draw(st.sampled_from(divisors))
            b.grouped(
                src, g, draw(st.integers(1, max(1, MAX_CHANNELS // g))), act=draw(act), dead=draw(deadness)
            )
    elif kind == "se":
        if exact and not x.zero:
            src = b.cbr(src, x.c, k=1, act="Relu", dead=draw(deadness))
        b.se(src, draw(st.integers(1, 8)), dead_filters=draw(st.sampled_from([0.0, 0.5])))
    elif kind == "maxpool" and x.hw >= 4 and x.hw % 2 == 0:
        b.maxpool(src)
    elif kind == "slice" and x.c >= 2:
        lo = draw(st.integers(0, x.c - 1))
        b.slice(src, lo, draw(st.integers(lo + 1, x.c)))
    elif kind == "upsample" and x.hw <= 8:
        b.upsample(src)
    elif kind == "scale":
        b.scale(src, op=draw(st.sampled_from(["Mul", "Add"])), rank=draw(st.sampled_from([4, 3])))
    elif kind == "avgpool":
        b.avgpool(src, count_include_pad=draw(st.sampled_from([0, 1])))
    else:
        k = draw(st.sampled_from([3, 1]))
        b.cbr(src, draw(channels), k=k, act=draw(act), dead=draw(deadness), bias=draw(st.booleans()))


@st.composite
def plan_options(draw: st.DrawFn) -> dict[str, Any]:
    """Keyword arguments of a ratio PlanOptions."""
    return {
        "ratio": draw(st.sampled_from([0.0, 0.25, 0.5, 0.75, 0.9])),
        "round_to": draw(st.sampled_from([1, 2, 4, 8])),
        "min_keep": draw(st.sampled_from([1, 2, 8])),
        "scope": draw(st.sampled_from(["global", "layer"])),
        "criterion": draw(st.sampled_from(["auto", "auto", "l1", "l2", "gamma"])),
    }
