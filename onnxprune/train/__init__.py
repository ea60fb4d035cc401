"""``onnxprune train``: Network Slimming's sparsity training and fine-tuning (labels or distillation) on
the ONNX model itself, with PyTorch as the engine (the ``[train]`` extra, imported only when training).

    from onnxprune.train import TrainOptions, train
    train("model.onnx", "slim.onnx", "data.npz", options=TrainOptions(epochs=5, l1_gamma=1e-4))

Importing this package needs no torch: options, data loading and the write-back are torch-free.
"""

from onnxprune.train.dataset import ImageOptions
from onnxprune.train.options import TrainOptions
from onnxprune.train.run import TrainingInterrupted, TrainResult, train

__all__ = ["ImageOptions", "TrainOptions", "TrainResult", "TrainingInterrupted", "train"]
