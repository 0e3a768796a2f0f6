"""``mindspore.ops.composite`` (imported as ``C``): ``GradOperation``, ``matmul``, ``zeros_like`` and
``ones_like``, as far as distinfer has them.

A face: each name is the very object ``distinfer.ops`` exposes (``C.GradOperation is
ops.GradOperation``). ``zeros_like`` and ``ones_like`` take one Tensor here (MindSpore's also map
over tuples).

>>> import distinfer as ms
>>> from distinfer.ops import composite as C
>>> C.GradOperation is ms.ops.GradOperation, C.matmul is ms.ops.matmul
(True, True)
"""
from ..autograd import GradOperation
from .function import matmul, ones_like, zeros_like

__all__ = ["GradOperation", "matmul", "zeros_like", "ones_like"]
