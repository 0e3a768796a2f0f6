"""``mindspore.common.tensor``: MindSpore's module path for :class:`~distinfer.Tensor`.

>>> import distinfer as ms
>>> from distinfer.common.tensor import Tensor
>>> Tensor is ms.Tensor
True
"""
from ..tensor import Tensor

__all__ = ["Tensor"]
