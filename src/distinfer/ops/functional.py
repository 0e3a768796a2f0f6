"""``mindspore.ops.functional`` (imported as ``F``): the functional forms, a few primitive instances,
``Primitive``, ``grad`` and ``value_and_grad``, as far as distinfer has them.

A face: it only re-exports, and each name is the very object ``distinfer.ops`` exposes
(``F.relu is ops.relu``, ``F.grad is distinfer.grad``). The functional forms are defined in
:mod:`distinfer.ops.function`, the gradient functions in :mod:`distinfer.autograd`.

>>> import numpy as np, distinfer as ms
>>> from distinfer.ops import functional as F
>>> F.relu is ms.ops.relu, F.tensor_add(ms.Tensor(np.ones(2, np.float32)), 1.0).asnumpy().tolist()
(True, [2.0, 2.0])
"""
from ..autograd import grad, value_and_grad
from . import function
from .function import *  # noqa: F401,F403  (the functional forms and instances, function.__all__)
from .primitive import Primitive

__all__ = [*function.__all__, "Primitive", "grad", "value_and_grad"]
