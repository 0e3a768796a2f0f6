"""``mindspore.nn``: Cell, layers, losses, optimizers and training wrappers."""
from .cell import Cell, CellList, SequentialCell
from .loss import CrossEntropyLoss, L1Loss, LossBase, MSELoss, SoftmaxCrossEntropyWithLogits
from .optim import SGD, Adam, AdamWeightDecay, Momentum, Optimizer
from .wrap import DistributedGradReducer, PipelineCell, TrainOneStepCell, WithEvalCell, WithLossCell
from .loss_scale import DynamicLossScaleUpdateCell, FixedLossScaleUpdateCell, TrainOneStepWithLossScaleCell
from .layers import (GELU, Dense, Dropout, Embedding, Flatten, Identity, LayerNorm, LogSoftmax, ReLU, Sigmoid,
                     Softmax, Tanh)

__all__ = ["Cell", "CellList", "SequentialCell", "Dense", "ReLU", "GELU", "Sigmoid", "Tanh", "Flatten", "Softmax",
           "LogSoftmax", "LayerNorm", "Embedding", "Dropout", "Identity", "LossBase", "SoftmaxCrossEntropyWithLogits",
           "CrossEntropyLoss", "MSELoss", "L1Loss", "Optimizer", "SGD", "Momentum", "Adam", "AdamWeightDecay",
           "WithLossCell", "WithEvalCell", "TrainOneStepCell", "DistributedGradReducer", "PipelineCell",
           "TrainOneStepWithLossScaleCell", "DynamicLossScaleUpdateCell", "FixedLossScaleUpdateCell"]

__all__ += ["GraphCell"]


def __getattr__(name: str):
    # GraphCell runs a loaded MindIR graph, so it lives with load() in the exporter (floor 5); it is
    # imported on first use, so that importing an nn module never runs the exporter.
    if name == "GraphCell":
        from ..exporter.interpreter import GraphCell

        return GraphCell
    raise AttributeError(f"module 'distinfer.nn' has no attribute {name!r}")
