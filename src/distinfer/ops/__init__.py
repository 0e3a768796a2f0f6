"""``mindspore.ops``: primitives with ``.shard()`` and their functional forms.

A face: it only re-exports. The primitives are defined by op family (``_elementwise``,
``_matmul``, ``_nn_ops``, ``_reduce``, ``_shape``) on :mod:`.primitive`, and each registers itself
in :mod:`.registry`; the functional forms live in :mod:`.function`. MindSpore's module paths are
here too: :mod:`.operations` (``P``), :mod:`.functional` (``F``) and :mod:`.composite` (``C``).
The names of a higher floor (``GradOperation``, ``grad``, ``value_and_grad``, from
:mod:`distinfer.autograd` through ``composite`` and ``functional``) are imported on first use, so
importing an ops module never runs the autograd floor.

>>> import numpy as np, distinfer as ms
>>> from distinfer import ops
>>> x = ms.Tensor(np.ones((2, 3), np.float32))
>>> ops.MatMul()(x, ms.Tensor(np.ones((3, 4), np.float32))).shape
(2, 4)
>>> ops.GradOperation is ms.ops.composite.GradOperation
True
"""
import importlib

from . import function, operations
from ._elementwise import SiLU
from ._shape import TensorGetItem
from .function import *  # noqa: F401,F403  (function.__all__)
from .operations import *  # noqa: F401,F403  (operations.__all__)
from .primitive import Primitive

__all__ = ["Primitive", *operations.__all__, "SiLU", "TensorGetItem", *function.__all__,
           "GradOperation", "grad", "value_and_grad"]


def __getattr__(name: str):
    # The autograd floor's names, from the faces that hold them: imported on first use, so that
    # importing an ops module never runs that floor. (import_module: `from . import composite` here
    # would look the name up on this module first, calling this function again.)
    if name in ("composite", "functional"):
        return importlib.import_module(f"{__name__}.{name}")
    if name == "GradOperation":
        from .composite import GradOperation

        return GradOperation
    if name in ("grad", "value_and_grad"):
        from .functional import grad, value_and_grad

        return grad if name == "grad" else value_and_grad
    raise AttributeError(f"module 'distinfer.ops' has no attribute {name!r}")
