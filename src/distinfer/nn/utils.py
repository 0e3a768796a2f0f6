"""``mindspore.nn.utils``: :func:`no_init_parameters` (defer parameter initialisation).

>>> from distinfer.nn.utils import no_init_parameters
>>> from distinfer.common.initializer import no_init_parameters as same
>>> no_init_parameters is same
True
"""
from ..common.initializer import no_init_parameters

__all__ = ["no_init_parameters"]
