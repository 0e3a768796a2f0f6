"""``mindspore.common``: initializers, dtypes, Tensor and Parameter, and the compilation markers (``api``)."""
from . import api, dtype, initializer
from .parameter import Parameter, ParameterTuple
from .tensor import Tensor

__all__ = ["dtype", "Tensor", "Parameter", "ParameterTuple", "initializer", "api"]
