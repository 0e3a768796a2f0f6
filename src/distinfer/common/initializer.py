"""``mindspore.common.initializer``: initializers whose values do not depend on the rank count, and
:func:`initializer`, a lazily initialised Tensor.

The Initializer classes are defined in :mod:`distinfer._initializers` (below Tensor, which holds
one until its layout is known); this module is where MindSpore scripts import them from.

>>> import distinfer as ms
>>> from distinfer.common.initializer import initializer, Normal
>>> ms.set_seed(1)
>>> w = initializer(Normal(0.02), [4, 6], ms.float32)
>>> w.init_data().asnumpy().shape
(4, 6)

numpy's global generator: MindSpore's random initializers take a seed from it (one ``randint``
draw) each time they produce values; distinfer's make the same draw at the same moments (when a
lazily initialised Tensor is materialised, and when a Parameter is created outside (semi-)auto
parallel mode and outside :func:`no_init_parameters`, where MindSpore initialises it at once), so a
script that seeds numpy draws MindSpore's numbers afterwards.

>>> import numpy as np
>>> np.random.seed(0); _ = ms.Parameter(initializer("normal", [2])); after_param = np.random.rand()
>>> np.random.seed(0); _ = np.random.randint(1, 1 << 63, dtype=np.int64); bool(np.random.rand() == after_param)
True
"""
from __future__ import annotations

from .. import dtype as mstype
from .._initializers import (Constant, HeNormal, HeUniform, Initializer, Normal, One, TruncatedNormal, Uniform,
                             XavierNormal, XavierUniform, Zero, initializes_at_creation, no_init_parameters)
from .._random import get_seed, set_seed
from ..tensor import Tensor, lazy_tensor

__all__ = ["Initializer", "initializer", "Normal", "Uniform", "Zero", "One", "Constant", "TruncatedNormal",
           "XavierUniform", "XavierNormal", "HeUniform", "HeNormal", "set_seed", "get_seed", "no_init_parameters",
           "initializes_at_creation"]


def initializer(init, shape=None, dtype=mstype.float32) -> Tensor:
    """A lazily initialised Tensor of ``shape``; its data is produced only when needed.

    ``init`` is a name ("normal", "zeros", ...), an :class:`Initializer`, a number, or a
    Tensor/ndarray (returned as a Tensor, its shape checked against ``shape``).

    >>> import distinfer as ms
    >>> from distinfer.common.initializer import initializer, One
    >>> w = initializer(One(), (2, 3), ms.float16)  # nothing computed yet
    >>> w.has_init, w.shape, w.dtype
    (True, (2, 3), Float16)
    >>> w.asnumpy().tolist()
    [[1.0, 1.0, 1.0], [1.0, 1.0, 1.0]]
    """
    return lazy_tensor(init, shape, dtype)
