"""``mindspore.common.parameter``: MindSpore's module path for :class:`~distinfer.Parameter` and ``ParameterTuple``.

>>> import distinfer as ms
>>> from distinfer.common.parameter import Parameter, ParameterTuple
>>> Parameter is ms.Parameter and ParameterTuple is ms.ParameterTuple
True
"""
from ..tensor import Parameter, ParameterTuple

__all__ = ["Parameter", "ParameterTuple"]
