"""``mindspore.common``: initializers, dtypes, Tensor and Parameter."""
from .. import dtype
from ..tensor import Parameter, Tensor
from . import initializer

__all__ = ["dtype", "Tensor", "Parameter", "initializer"]
