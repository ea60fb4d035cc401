"""The engine's layers, as the builder reports them with detailed profiling verbosity.

Two sources. TensorRT-RTX, which builds without a GPU, prints the layer list of the plan it wrote in its
verbose log (a message that starts ``Layers:``, one line per layer: name, type, inputs, constants, outputs,
tactic, the ONNX nodes it fuses); that list is read here, with or without a GPU. TensorRT, which builds only
on a GPU, is asked through its engine inspector (``IEngineInspector``, JSON) on the deserialized engine.
Either way each layer keeps the builder's own record and gains the ONNX nodes it came from.
"""

from __future__ import annotations

import json
import re
from typing import Any

_FIELD = re.compile(r"(?:^|, )(Name|LayerType|TacticName|StreamId): ([^,]*)")
_ONNX_NODE = re.compile(r"\[ONNX Layer: ([^\]]+)\]")
_OUTPUTS = re.compile(r"Outputs: \[(.*?)\], TacticName")
_TENSOR = re.compile(r"\{ Name: ([^,]+), Dimensions: \[([^\]]*)\]")


def from_builder_log(log: list[str]) -> list[dict[str, Any]] | None:
    """The layer list of the builder's verbose log; None where the log has none."""
    block = next((message for message in log if message.startswith("Layers:")), None)
    if block is None:
        return None
    layers = []
    for line in block.splitlines()[1:]:
        if not line.startswith("Name: "):
            break  # the I/O tensors and the engine's metadata follow after a blank line
        layers.append(_layer(line))
    return layers


def _layer(line: str) -> dict[str, Any]:
    # The first Name is the layer's; the fields of its tensors come later in the line.
    fields: dict[str, str] = {}
    for key, value in _FIELD.findall(line):
        fields.setdefault(key, value.strip())
    outputs = _OUTPUTS.search(line)
    tensors = _TENSOR.findall(outputs.group(1)) if outputs else []
    return {
        "name": fields.get("Name", ""),
        "type": fields.get("LayerType", ""),
        "tactic": fields.get("TacticName", ""),
        "onnx_nodes": _ONNX_NODE.findall(line.split("Metadata:", 1)[-1]),
        "outputs": [{"name": name, "dims": [int(d) for d in dims.split(",") if d]} for name, dims in tensors],
        "builder": line,
    }


def from_inspector(trt: Any, logger: Any, plan: bytes) -> list[dict[str, Any]]:
    """The layers of a deserialized engine, from TensorRT's engine inspector. Needs a CUDA device: only
    called where the backend checked for one."""
    runtime = trt.Runtime(logger)
    engine = runtime.deserialize_cuda_engine(plan)
    if engine is None:
        return []
    inspector = engine.create_engine_inspector()
    info = json.loads(inspector.get_engine_information(trt.LayerInformationFormat.JSON))
    layers = []
    for layer in info.get("Layers", []):
        record = layer if isinstance(layer, dict) else {"Name": str(layer)}
        metadata = str(record.get("Metadata", ""))
        layers.append(
            {
                "name": str(record.get("Name", "")),
                "type": str(record.get("LayerType", "")),
                "tactic": str(record.get("TacticName", "")),
                "onnx_nodes": _ONNX_NODE.findall(metadata),
                "builder": record,
            }
        )
    return layers


def compute_layers(layers: list[dict[str, Any]]) -> int:
    """Layers that compute: the stream signal/wait markers in the list do not."""
    return sum(layer["type"] not in ("signal", "wait") for layer in layers)
