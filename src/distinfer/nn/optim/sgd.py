"""``mindspore.nn.optim.sgd``: MindSpore's module path for SGD (the same objects as in ``distinfer.nn``).

>>> from distinfer.nn.optim.sgd import SGD
>>> import distinfer.nn as nn
>>> SGD is nn.SGD
True
"""
from . import SGD

__all__ = ["SGD"]
