"""What every rule meets whatever the op: weights shared by two nodes or reached through Identity,
parameters stored as Constant nodes (PaddlePaddle), several inputs and outputs, symbolic dimensions."""

import numpy as np
import onnx
from onnx import helper, numpy_helper

from onnxprune import api

from ._build import HALF, Net, assert_declines, build, check_exact, shape_of, tiny


def siamese():
    """Two inputs through one Conv weight (a tied initializer), each with its own BN and its own plan."""
    n = Net()
    w = n.param(n.rng.normal(0, 0.3, (16, 3, 3, 3)))
    a = n.act(n.bn(n.node("Conv", ["left", w], kernel_shape=[3, 3], pads=[1] * 4), 16), "Relu")
    b = n.act(n.bn(n.node("Conv", ["right", w], kernel_shape=[3, 3], pads=[1] * 4), 16), "Relu")
    y = n.node("Concat", [n.cbr(a, 16, 8), n.cbr(b, 16, 8)], axis=1)
    return build(n, [n.head(y, 16)], {"left": (1, 3, 16, 16), "right": (1, 3, 16, 16)}), w


def test_tied_weight_is_sliced_per_user():
    """Copy-on-write: each Conv gets its own slice; the shared tensor is never sliced in place."""
    model, w = siamese()
    dead, half = check_exact(model)
    for result in (dead, half):
        graph = result.pruned.graph  # type: ignore[union-attr]
        convs = [
            node
            for node in graph.node
            if node.op_type == "Conv" and "left" in node.input or "right" in node.input
        ]
        weights = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
        first, second = (weights[c.input[1]] for c in convs)
        assert convs[0].input[1] != convs[1].input[1] and first.shape != (16, 3, 3, 3)
        original = numpy_helper.to_array(next(t for t in model.graph.initializer if t.name == w))
        for sliced in (first, second):  # every slice is rows of the original, none half-written
            assert all(any(np.array_equal(row, o) for o in original) for row in sliced)


def test_weight_through_identity():
    """PyTorch exports a tied weight once and forwards it through Identity nodes."""
    n = Net()
    x = n.cbr("input", 3, 16)
    w = n.param(n.rng.normal(0, 0.3, (16, 16, 1, 1)))
    conv = n.node("Conv", [x, n.node("Identity", [w])])
    y = n.act(n.bn(conv, 16), "Relu")
    z = n.act(n.bn(n.node("Conv", [y, n.node("Identity", [w])]), 16), "Relu")
    check_exact(build(n, [n.head(z, 16)]), through="Conv")


def as_constant_nodes(model: onnx.ModelProto) -> onnx.ModelProto:
    """PaddlePaddle style: no initializers, every parameter is the output of a Constant node."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    consts = [
        helper.make_node("Constant", [], [t.name], value=t, name=f"const_{t.name}")
        for t in model.graph.initializer
    ]
    del out.graph.initializer[:]
    del out.graph.node[:]
    out.graph.node.extend(consts + list(model.graph.node))
    return out


def test_parameters_as_constant_nodes():
    model = as_constant_nodes(tiny.residual())
    assert not model.graph.initializer
    check_exact(model, through="Add")


def detector():
    """Two inputs (image, depth) fused, an FPN-ish neck, three graph outputs: two heads and a feature map."""
    n = Net()
    image, depth = n.cbr("image", 3, 16), n.cbr("depth", 1, 8)
    x = n.cbr(n.node("Concat", [image, depth], axis=1), 24, 24)
    feature = n.cbr(x, 24, 16)  # also a graph output: its channels must stay
    neck = n.cbr(feature, 16, 24)
    cls = n.conv(neck, 24, 5, k=1, bias=True)
    box = n.conv(neck, 24, 4, k=1, bias=True)
    inputs = {"image": (1, 3, 16, 16), "depth": (1, 1, 16, 16)}
    return build(n, [cls, box, feature], inputs), feature


def test_channels_reaching_graph_outputs_stay():
    model, feature = detector()
    dead, half = check_exact(model)
    for result in (dead, half):
        pruned = result.pruned  # type: ignore[union-attr]
        assert [shape_of(pruned, o.name)[1] for o in pruned.graph.output] == [5, 4, 16]
    assert_declines(model, f"reaches graph output {feature!r}")


def dynamic(spatial_flatten: bool):
    n = Net()
    x = n.cbr(n.cbr("input", 3, 16), 16, 16)
    if spatial_flatten:
        flat = n.node("Flatten", [x], axis=1)
        return build(n, [n.node("Relu", [flat])], {"input": ("N", 3, "H", "W")})
    return build(n, [n.head(x, 16)], {"input": ("N", 3, "H", "W")})


def test_dynamic_batch_and_spatial_dims_still_prune():
    """GAP → Flatten → Gemm on [N, C, 1, 1]: the classifier's input channels are pruned too."""
    dead, half = check_exact(dynamic(spatial_flatten=False), through=("Flatten", "Gemm"))
    assert dead is not None
    assert [d.dim_param for d in dead.pruned.graph.input[0].type.tensor_type.shape.dim] == ["N", "", "H", "W"]


def test_spatial_flatten_of_dynamic_dims_declines():
    model = dynamic(spatial_flatten=True)
    assert_declines(model, "Flatten mixes the channel axis with others")
    assert tiny.removed_channels(api.prune_model(model, HALF)) > 0  # the first Conv's channels still go
