"""``mindspore.nn.optim.momentum``: MindSpore's module path for Momentum (the same objects as in ``distinfer.nn``).

>>> from distinfer.nn.optim.momentum import Momentum
>>> import distinfer.nn as nn
>>> Momentum is nn.Momentum
True
"""
from . import Momentum

__all__ = ["Momentum"]
