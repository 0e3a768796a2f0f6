"""``mindspore.nn.optim.optimizer``: MindSpore's module path for Optimizer (the same objects as in ``distinfer.nn``).

>>> from distinfer.nn.optim.optimizer import Optimizer
>>> import distinfer.nn as nn
>>> Optimizer is nn.Optimizer
True
"""
from . import Optimizer

__all__ = ["Optimizer"]
