"""``mindspore.nn``: Cell, layers, losses, optimizers and training wrappers."""
from .cell import Cell, CellList, SequentialCell
from .loss import CrossEntropyLoss, L1Loss, LossBase, MSELoss, SoftmaxCrossEntropyWithLogits
from .optim import SGD, Adam, AdamWeightDecay, Momentum, Optimizer
from .wrap import (DistributedGradReducer, PipelineCell, PipelineGradReducer, TrainOneStepCell, WithEvalCell,
                   WithLossCell)
from .loss_scale import DynamicLossScaleUpdateCell, FixedLossScaleUpdateCell, TrainOneStepWithLossScaleCell
from .layers import (GELU, Dense, Dropout, Embedding, Flatten, Identity, LayerNorm, LogSoftmax, ReLU, Sigmoid,
                     Softmax, Tanh)

__all__ = ["Cell", "CellList", "SequentialCell", "Dense", "ReLU", "GELU", "Sigmoid", "Tanh", "Flatten", "Softmax",
           "LogSoftmax", "LayerNorm", "Embedding", "Dropout", "Identity", "LossBase", "SoftmaxCrossEntropyWithLogits",
           "CrossEntropyLoss", "MSELoss", "L1Loss", "Optimizer", "SGD", "Momentum", "Adam", "AdamWeightDecay",
           "WithLossCell", "WithEvalCell", "TrainOneStepCell", "DistributedGradReducer", "PipelineCell",
           "PipelineGradReducer",
           "TrainOneStepWithLossScaleCell", "DynamicLossScaleUpdateCell", "FixedLossScaleUpdateCell"]

from .._lazy import lazy_exports  # noqa: E402

__all__ += ["GraphCell"]
__getattr__, __dir__ = lazy_exports(__name__, {"GraphCell": "..exporter.interpreter"})  # reads MindIR: protobuf
