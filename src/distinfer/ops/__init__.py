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

from ._elementwise import SiLU
from ._shape import TensorGetItem
from .function import (abs, add, amax, argmax, bias_add, bmm, cast, cat, concat, div, erf, exp, expand_dims, fill,
                       flatten, gather, gelu, log, log_softmax, matmul, maximum, mean, minimum, mul, neg, one_hot,
                       ones, ones_like, pow, pows, reduce_max, reduce_mean, reduce_min, reduce_sum, relu, reshape,
                       reshape_, sigmoid, softmax, split, sqrt, square, squeeze, sub, sum, tanh, tensor_add, tensor_div,
                       tensor_exp, tensor_ge, tensor_le, tensor_mul, tensor_pow, tensor_sub, transpose, zeros,
                       zeros_like)
from .operations import (Abs, Add, ArgMaxWithValue, BatchMatMul, BiasAdd, Cast, Concat, Div, Dropout, Equal, Erf,
                         Exp, ExpandDims, FastGeLU, Flatten, Gather, GeLU, Greater, GreaterEqual, Identity, LayerNorm,
                         Less, LessEqual, Log, LogSoftmax, MatMul, Maximum, Minimum, Mul, Neg, OneHot, Pow, RealDiv,
                         ReduceMax, ReduceMean, ReduceMin, ReduceSum, ReLU, Reshape, Rsqrt, Sigmoid, Softmax,
                         SoftmaxCrossEntropyWithLogits, SparseSoftmaxCrossEntropyWithLogits, Split, Sqrt, Square,
                         Squeeze, Sub, Tanh, Transpose)
from .primitive import Primitive

__all__ = [
    "Primitive", "Add", "Sub", "Mul", "RealDiv", "Div", "Maximum", "Minimum", "Pow", "Less", "Greater", "LessEqual",
    "GreaterEqual", "Equal", "ReLU", "GeLU", "FastGeLU", "Sigmoid", "SiLU", "Tanh", "Exp", "Log", "Sqrt", "Rsqrt",
    "Neg", "Square", "Abs", "Erf", "Cast", "Softmax", "LogSoftmax", "BiasAdd", "Identity", "MatMul", "BatchMatMul",
    "ReduceSum", "ReduceMean", "ReduceMax", "ReduceMin", "ArgMaxWithValue", "Reshape", "Flatten", "Transpose",
    "ExpandDims", "Squeeze", "Concat", "Split", "TensorGetItem", "Gather", "OneHot", "LayerNorm", "Dropout",
    "SparseSoftmaxCrossEntropyWithLogits", "SoftmaxCrossEntropyWithLogits",
    "add", "sub", "mul", "div", "matmul", "bmm", "relu", "gelu", "erf", "sigmoid", "tanh", "exp", "log", "sqrt", "neg",
    "square", "abs", "maximum", "minimum", "pow", "softmax", "log_softmax", "reshape", "flatten", "transpose",
    "expand_dims", "squeeze", "concat", "cat", "split", "gather", "one_hot", "cast", "sum", "mean", "reduce_sum",
    "reduce_mean", "amax", "argmax", "bias_add", "zeros", "ones", "zeros_like", "ones_like", "fill",
    "tensor_add", "tensor_sub", "tensor_mul", "tensor_div", "tensor_pow", "pows", "tensor_exp", "tensor_ge",
    "tensor_le", "reshape_", "reduce_max", "reduce_min", "GradOperation", "grad", "value_and_grad",
]


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
