"""``mindspore.nn``: Cell, layers, losses, optimizers and training wrappers."""
from .cell import Cell, CellList, SequentialCell
from .layers import (GELU, Dense, Dropout, Embedding, Flatten, Identity, LayerNorm, LogSoftmax, ReLU, Sigmoid,
                     Softmax, Tanh)

__all__ = ["Cell", "CellList", "SequentialCell", "Dense", "ReLU", "GELU", "Sigmoid", "Tanh", "Flatten", "Softmax",
           "LogSoftmax", "LayerNorm", "Embedding", "Dropout", "Identity"]
