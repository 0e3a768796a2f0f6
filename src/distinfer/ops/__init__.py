"""``mindspore.ops``: primitives with ``.shard()`` and their functional forms.

>>> import numpy as np, distinfer as ms
>>> from distinfer import ops
>>> x = ms.Tensor(np.ones((2, 3), np.float32))
>>> ops.MatMul()(x, ms.Tensor(np.ones((3, 4), np.float32))).shape
(2, 4)
"""
from __future__ import annotations

from typing import Any

import numpy as np

from .. import dtype as mstype
from .. import tensor as _tensor
from ._elementwise import (Abs, Add, BiasAdd, Cast, Div, Equal, Exp, FastGeLU, GeLU, Greater, GreaterEqual, Identity,
                           Less, LessEqual, Log, LogSoftmax, Maximum, Minimum, Mul, Neg, Pow, RealDiv, ReLU, Rsqrt,
                           Sigmoid, SiLU, Softmax, Sqrt, Square, Sub, Tanh)
from ._matmul import BatchMatMul, MatMul
from ._nn_ops import (Dropout, Gather, LayerNorm, OneHot, SoftmaxCrossEntropyWithLogits,
                      SparseSoftmaxCrossEntropyWithLogits)
from ._reduce import ArgMaxWithValue, ReduceMax, ReduceMean, ReduceMin, ReduceSum
from ._shape import Concat, ExpandDims, Flatten, Reshape, Split, Squeeze, TensorGetItem, Transpose, encode_index
from .primitive import Primitive

__all__ = [
    "Primitive", "Add", "Sub", "Mul", "RealDiv", "Div", "Maximum", "Minimum", "Pow", "Less", "Greater", "LessEqual",
    "GreaterEqual", "Equal", "ReLU", "GeLU", "FastGeLU", "Sigmoid", "SiLU", "Tanh", "Exp", "Log", "Sqrt", "Rsqrt",
    "Neg", "Square", "Abs", "Cast", "Softmax", "LogSoftmax", "BiasAdd", "Identity", "MatMul", "BatchMatMul",
    "ReduceSum", "ReduceMean", "ReduceMax", "ReduceMin", "ArgMaxWithValue", "Reshape", "Flatten", "Transpose",
    "ExpandDims", "Squeeze", "Concat", "Split", "TensorGetItem", "Gather", "OneHot", "LayerNorm", "Dropout",
    "SparseSoftmaxCrossEntropyWithLogits", "SoftmaxCrossEntropyWithLogits",
    "add", "sub", "mul", "div", "matmul", "bmm", "relu", "gelu", "sigmoid", "tanh", "exp", "log", "sqrt", "neg",
    "square", "abs", "maximum", "minimum", "pow", "softmax", "log_softmax", "reshape", "flatten", "transpose",
    "expand_dims", "squeeze", "concat", "cat", "split", "gather", "one_hot", "cast", "sum", "mean", "reduce_sum",
    "reduce_mean", "amax", "argmax", "bias_add", "zeros", "ones", "zeros_like", "ones_like", "fill",
]


# ---------------------------------------------------------------------- functional forms
def add(x, y):
    return Add()(x, y)


def sub(x, y):
    return Sub()(x, y)


def mul(x, y):
    return Mul()(x, y)


def div(x, y):
    return RealDiv()(x, y)


def matmul(x, y):
    if len(x.shape) == 2 and len(y.shape) == 2:
        return MatMul()(x, y)
    return BatchMatMul()(x, y)


def bmm(x, y):
    return BatchMatMul()(x, y)


def relu(x):
    return ReLU()(x)


def gelu(x, approximate: str = "tanh"):
    return GeLU()(x)


def sigmoid(x):
    return Sigmoid()(x)


def tanh(x):
    return Tanh()(x)


def exp(x):
    return Exp()(x)


def log(x):
    return Log()(x)


def sqrt(x):
    return Sqrt()(x)


def neg(x):
    return Neg()(x)


def square(x):
    return Square()(x)


def abs(x):  # noqa: A001 - MindSpore name
    return Abs()(x)


def maximum(x, y):
    return Maximum()(x, y)


def minimum(x, y):
    return Minimum()(x, y)


def pow(x, y):  # noqa: A001 - MindSpore name
    return Pow()(x, y)


def softmax(x, axis: int = -1):
    return Softmax(axis)(x)


def log_softmax(x, axis: int = -1):
    return LogSoftmax(axis)(x)


def reshape(x, shape):
    return Reshape()(x, tuple(shape))


def flatten(x):
    return Flatten()(x)


def transpose(x, perm):
    return Transpose()(x, tuple(perm))


def expand_dims(x, axis: int):
    return ExpandDims()(x, axis)


def squeeze(x, axis=()):
    return Squeeze(axis)(x)


def concat(tensors, axis: int = 0):
    return Concat(axis)(tuple(tensors))


cat = concat


def split(x, split_size_or_sections, axis: int = 0):
    """Split into equal pieces of ``split_size_or_sections`` along ``axis``."""
    if not isinstance(split_size_or_sections, int):
        raise ValueError("ops.split: only an int piece size is supported")
    return Split(axis, x.shape[axis] // split_size_or_sections)(x)


def gather(input_params, input_indices, axis: int, batch_dims: int = 0):
    return Gather(batch_dims)(input_params, input_indices, axis)


def one_hot(indices, depth: int, on_value=1.0, off_value=0.0, axis: int = -1):
    return OneHot(axis)(indices, depth, on_value, off_value)


def cast(x, dtype):
    return Cast()(x, dtype)


def sum(input, axis=None, keepdims: bool = False):  # noqa: A001 - MindSpore name
    return ReduceSum(keepdims)(input, () if axis is None else axis)


def mean(input, axis=None, keep_dims: bool = False):
    return ReduceMean(keep_dims)(input, () if axis is None else axis)


reduce_sum = sum
reduce_mean = mean


def amax(input, axis=None, keepdims: bool = False):
    return ReduceMax(keepdims)(input, () if axis is None else axis)


def bias_add(input_x, bias):
    return BiasAdd()(input_x, bias)


def zeros(shape, dtype=None):
    return _tensor.Tensor(np.zeros(shape, dtype=mstype.get_dtype(dtype or mstype.float32).np))


def ones(shape, dtype=None):
    return _tensor.Tensor(np.ones(shape, dtype=mstype.get_dtype(dtype or mstype.float32).np))


def fill(type, shape, value):  # noqa: A002 - MindSpore signature
    return _tensor.Tensor(np.full(shape, value, dtype=mstype.get_dtype(type).np))


def zeros_like(x):
    return zeros(x.shape, x.dtype)


def ones_like(x):
    return ones(x.shape, x.dtype)


def _getitem(x, index: Any):
    """``x[index]`` with basic indexing, as a primitive (so it works on laid-out tensors and is traced)."""
    return TensorGetItem()(x, encode_index(index, len(x.shape)))


def argmax(x, axis=None):
    """Indices of the maxima along ``axis`` (of the flattened tensor when None), as Int32."""
    if axis is None:
        x, axis = reshape(x, (-1,)), 0
    return ArgMaxWithValue(axis)(x)[0]


_tensor._OPERATORS.update(
    add=add, sub=sub, mul=mul, div=div, matmul=matmul, pow=pow, neg=neg, less=lambda a, b: Less()(a, b),
    greater=lambda a, b: Greater()(a, b), less_equal=lambda a, b: LessEqual()(a, b),
    greater_equal=lambda a, b: GreaterEqual()(a, b), cast=cast, reshape=reshape, transpose=transpose,
    reduce_sum=lambda x, axis, keep: sum(x, axis, keep), reduce_mean=lambda x, axis, keep: mean(x, axis, keep),
    reduce_max=lambda x, axis, keep: amax(x, axis, keep), expand_dims=expand_dims,
    squeeze=lambda x, axis: squeeze(x, () if axis is None else axis), getitem=_getitem, argmax=argmax,
)


def __getattr__(name: str):
    # GradOperation lives with autograd (floor 4); exposed here under MindSpore's name.
    if name == "GradOperation":
        from ..autograd import GradOperation

        return GradOperation
    raise AttributeError(f"module 'distinfer.ops' has no attribute {name!r}")
