"""build: engine plans from ONNX models, with TensorRT or TensorRT-RTX.

``backends``: which builders there are, which ``auto`` takes, and what this machine can do with each;
``options``: what a build is asked; ``build``: the stage (prepare the ONNX, build, compare, write);
``builder``: the parse and build through TensorRT's Python API, its log kept; ``layers``: the engine's
layers as the builder reports them; ``compare``: the engine against ONNX Runtime; ``report``: size, build
seconds, layers, and a table of builds; ``tensorrt``, ``rtx``: what differs between the two builders.
"""

from onnxprune.engine.build import BuildResult, build_engine, measure_engine
from onnxprune.engine.options import BiasMapForm, BuildOptions, EngineBackend, Profile, profiles

__all__ = [
    "BiasMapForm",
    "BuildOptions",
    "BuildResult",
    "EngineBackend",
    "Profile",
    "build_engine",
    "measure_engine",
    "profiles",
]
