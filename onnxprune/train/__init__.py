"""``onnxprune train``: Network Slimming's sparsity training and fine-tuning (labels or distillation) on
the ONNX model itself, with PyTorch as the engine (the ``[train]`` extra, imported only when training).

    from onnxprune.train import TrainOptions, train, finetune
    train("model.onnx", "slim.onnx", "data.npz", teacher="model.onnx", options=TrainOptions(l1_gamma=0.3))
    tuned, report = finetune(original, pruned, samples, minutes=5)    # ModelProtos in, ModelProto out

Importing this package needs no torch: options, data loading and the write-back are torch-free.
"""

from onnxprune.train.dataset import ImageOptions
from onnxprune.train.finetune import finetune
from onnxprune.train.options import TrainOptions
from onnxprune.train.run import TrainingInterrupted, TrainResult, train

__all__ = ["ImageOptions", "TrainOptions", "TrainResult", "TrainingInterrupted", "finetune", "train"]
