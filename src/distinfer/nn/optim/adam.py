"""``mindspore.nn.optim.adam``: MindSpore's module path for Adam and AdamWeightDecay (the objects of ``distinfer.nn``).

>>> from distinfer.nn.optim.adam import Adam
>>> import distinfer.nn as nn
>>> Adam is nn.Adam
True
"""
from . import Adam, AdamWeightDecay

__all__ = ["Adam", "AdamWeightDecay"]
