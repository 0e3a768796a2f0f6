"""``mindspore.ops``: primitives with ``.shard()`` and their functional forms.

>>> import numpy as np, distinfer as ms
>>> from distinfer import ops
>>> x = ms.Tensor(np.ones((2, 3), np.float32))
>>> ops.MatMul()(x, ms.Tensor(np.ones((3, 4), np.float32))).shape
(2, 4)
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np

from .. import dtype as mstype
from .. import tensor as _tensor
from ._elementwise import (Abs, Add, BiasAdd, Cast, Div, Equal, Erf, Exp, FastGeLU, GeLU, Greater, GreaterEqual, Identity,
                           Less, LessEqual, Log, LogSoftmax, Maximum, Minimum, Mul, Neg, Pow, RealDiv, ReLU, Rsqrt,
                           Sigmoid, SiLU, Softmax, Sqrt, Square, Sub, Tanh)
from ._matmul import BatchMatMul, MatMul
from ._nn_ops import (Dropout, Gather, LayerNorm, OneHot, SoftmaxCrossEntropyWithLogits,
                      SparseSoftmaxCrossEntropyWithLogits)
from ._print import Print
from ._reduce import ArgMaxWithValue, ReduceMax, ReduceMean, ReduceMin, ReduceSum
from ._shape import Concat, ExpandDims, Flatten, Reshape, Split, Squeeze, TensorGetItem, Transpose, encode_index
from .primitive import Primitive

__all__ = [
    "Primitive", "Add", "Sub", "Mul", "RealDiv", "Div", "Maximum", "Minimum", "Pow", "Less", "Greater", "LessEqual",
    "GreaterEqual", "Equal", "ReLU", "GeLU", "FastGeLU", "Sigmoid", "SiLU", "Tanh", "Exp", "Log", "Sqrt", "Rsqrt",
    "Neg", "Square", "Abs", "Erf", "Cast", "Softmax", "LogSoftmax", "BiasAdd", "Identity", "MatMul", "BatchMatMul",
    "ReduceSum", "ReduceMean", "ReduceMax", "ReduceMin", "ArgMaxWithValue", "Reshape", "Flatten", "Transpose",
    "ExpandDims", "Squeeze", "Concat", "Split", "TensorGetItem", "Gather", "OneHot", "LayerNorm", "Dropout",
    "SparseSoftmaxCrossEntropyWithLogits", "SoftmaxCrossEntropyWithLogits", "Print",
    "add", "sub", "mul", "div", "matmul", "bmm", "relu", "gelu", "erf", "sigmoid", "tanh", "exp", "log", "sqrt", "neg",
    "square", "abs", "maximum", "minimum", "pow", "softmax", "log_softmax", "reshape", "flatten", "transpose",
    "expand_dims", "squeeze", "concat", "cat", "split", "gather", "one_hot", "cast", "sum", "mean", "reduce_sum",
    "reduce_mean", "amax", "argmax", "bias_add", "zeros", "ones", "zeros_like", "ones_like", "fill",
]


# ---------------------------------------------------------------------- functional forms
def add(x, y):
    """``ops.add``: ``x + y`` elementwise, with broadcasting (primitive ``Add``).

    >>> import numpy as np, distinfer as ms
    >>> ms.ops.add(ms.Tensor(np.array([1.0, 2.0], np.float32)), 10.0).asnumpy().tolist()
    [11.0, 12.0]
    """
    return Add()(x, y)


def sub(x, y):
    """``ops.sub``: ``x - y`` elementwise, with broadcasting (primitive ``Sub``)."""
    return Sub()(x, y)


def mul(x, y):
    """``ops.mul``: ``x * y`` elementwise, with broadcasting (primitive ``Mul``)."""
    return Mul()(x, y)


def div(x, y):
    """``ops.div``: true division ``x / y`` elementwise, with broadcasting (primitive ``RealDiv``)."""
    return RealDiv()(x, y)


def matmul(x, y):
    """``ops.matmul``: matrix product; ``MatMul`` for two 2-D inputs, else ``BatchMatMul``.

    >>> import numpy as np, distinfer as ms
    >>> x = ms.Tensor(np.arange(6, dtype=np.float32).reshape(2, 3))
    >>> ms.ops.matmul(x, ms.Tensor(np.ones((3, 1), np.float32))).asnumpy().tolist()
    [[3.0], [12.0]]
    >>> ms.ops.matmul(ms.Tensor(np.ones((4, 2, 3), np.float32)), ms.Tensor(np.ones((4, 3, 5), np.float32))).shape
    (4, 2, 5)
    """
    if len(x.shape) == 2 and len(y.shape) == 2:
        return MatMul()(x, y)
    return BatchMatMul()(x, y)


def bmm(x, y):
    """``ops.bmm``: batched matrix product over the leading dims (primitive ``BatchMatMul``)."""
    return BatchMatMul()(x, y)


def relu(x):
    """``ops.relu``: ``max(x, 0)`` elementwise (primitive ``ReLU``)."""
    return ReLU()(x)


def gelu(input, approximate: str = "none"):
    """``ops.gelu``: GeLU elementwise. ``approximate="none"`` (the default) is exact,
    ``x * (1 + erf(x / sqrt(2))) / 2`` (primitives ``Mul``, ``Erf``, ``Add``); ``"tanh"`` is the
    tanh approximation (primitive ``GeLU``).

    >>> import numpy as np, distinfer as ms
    >>> x = ms.Tensor(np.array([1.0, 2.0, 3.0], np.float32))
    >>> [ms.ops.gelu(x, approximate=a).asnumpy().astype(float).round(6).tolist() for a in ("none", "tanh")]
    [[0.841345, 1.9545, 2.99595], [0.841192, 1.954598, 2.996363]]
    """
    if approximate == "tanh":
        return GeLU()(input)
    if approximate != "none":
        raise ValueError(f"For 'gelu', 'approximate' must be 'none' or 'tanh', but got {approximate!r}")
    return Mul()(Mul()(input, 0.5), Add()(Erf()(Mul()(input, 1.0 / math.sqrt(2.0))), 1.0))


def erf(input):
    """``ops.erf``: the Gauss error function elementwise (primitive ``Erf``).

    >>> import numpy as np, distinfer as ms
    >>> ms.ops.erf(ms.Tensor(np.array([-1.0, 0.0, 1.0]))).asnumpy().round(8).tolist()
    [-0.84270079, 0.0, 0.84270079]
    """
    return Erf()(input)


def sigmoid(x):
    """``ops.sigmoid``: ``1 / (1 + exp(-x))`` elementwise (primitive ``Sigmoid``)."""
    return Sigmoid()(x)


def tanh(x):
    """``ops.tanh``: hyperbolic tangent elementwise (primitive ``Tanh``)."""
    return Tanh()(x)


def exp(x):
    """``ops.exp``: ``e ** x`` elementwise (primitive ``Exp``)."""
    return Exp()(x)


def log(x):
    """``ops.log``: natural logarithm elementwise (primitive ``Log``)."""
    return Log()(x)


def sqrt(x):
    """``ops.sqrt``: square root elementwise (primitive ``Sqrt``)."""
    return Sqrt()(x)


def neg(x):
    """``ops.neg``: ``-x`` elementwise (primitive ``Neg``)."""
    return Neg()(x)


def square(x):
    """``ops.square``: ``x * x`` elementwise (primitive ``Square``)."""
    return Square()(x)


def abs(x):  # noqa: A001 - MindSpore name
    """``ops.abs``: absolute value elementwise (primitive ``Abs``)."""
    return Abs()(x)


def maximum(x, y):
    """``ops.maximum``: the larger of ``x`` and ``y`` elementwise, with broadcasting (primitive ``Maximum``)."""
    return Maximum()(x, y)


def minimum(x, y):
    """``ops.minimum``: the smaller of ``x`` and ``y`` elementwise, with broadcasting (primitive ``Minimum``)."""
    return Minimum()(x, y)


def pow(x, y):  # noqa: A001 - MindSpore name
    """``ops.pow``: ``x ** y`` elementwise, with broadcasting (primitive ``Pow``)."""
    return Pow()(x, y)


def softmax(x, axis: int = -1):
    """``ops.softmax``: ``exp(x)`` normalised to sum 1 along ``axis`` (primitive ``Softmax``).

    >>> import numpy as np, distinfer as ms
    >>> x = ms.Tensor(np.array([[0.0, np.log(3.0)], [5.0, 5.0]], np.float32))
    >>> ms.ops.softmax(x).asnumpy().round(3).tolist()
    [[0.25, 0.75], [0.5, 0.5]]
    """
    return Softmax(axis)(x)


def log_softmax(x, axis: int = -1):
    """``ops.log_softmax``: ``log(softmax(x))`` along ``axis``, computed stably (primitive ``LogSoftmax``)."""
    return LogSoftmax(axis)(x)


def reshape(x, shape):
    """``ops.reshape``: the same elements in row-major order under a new ``shape`` (primitive ``Reshape``).

    >>> import numpy as np, distinfer as ms
    >>> x = ms.Tensor(np.arange(6, dtype=np.float32).reshape(2, 3))
    >>> ms.ops.reshape(x, (3, 2)).asnumpy().tolist()
    [[0.0, 1.0], [2.0, 3.0], [4.0, 5.0]]
    >>> ms.ops.reshape(x, (-1,)).shape
    (6,)
    """
    return Reshape()(x, tuple(shape))


def flatten(x):
    """``ops.flatten``: keep dim 0 and merge the others into one (primitive ``Flatten``)."""
    return Flatten()(x)


def transpose(x, perm):
    """``ops.transpose``: dims permuted by ``perm`` (primitive ``Transpose``).

    >>> import numpy as np, distinfer as ms
    >>> ms.ops.transpose(ms.Tensor(np.zeros((2, 3, 4), np.float32)), (2, 0, 1)).shape
    (4, 2, 3)
    """
    return Transpose()(x, tuple(perm))


def expand_dims(x, axis: int):
    """``ops.expand_dims``: a size-1 dim inserted at ``axis`` (primitive ``ExpandDims``)."""
    return ExpandDims()(x, axis)


def squeeze(x, axis=()):
    """``ops.squeeze``: size-1 dims removed (those in ``axis``, or all of them by default) (primitive ``Squeeze``)."""
    return Squeeze(axis)(x)


def concat(tensors, axis: int = 0):
    """``ops.concat`` (also ``ops.cat``): the tensors joined along ``axis`` (primitive ``Concat``).

    >>> import numpy as np, distinfer as ms
    >>> a, b = ms.Tensor(np.zeros((2, 1), np.float32)), ms.Tensor(np.ones((2, 2), np.float32))
    >>> ms.ops.concat((a, b), axis=1).asnumpy().tolist()
    [[0.0, 1.0, 1.0], [0.0, 1.0, 1.0]]
    >>> ms.ops.cat([b, b]).shape
    (4, 2)
    """
    return Concat(axis)(tuple(tensors))


cat = concat


def split(x, split_size_or_sections, axis: int = 0):
    """``ops.split``: a tuple of equal pieces of size ``split_size_or_sections`` along ``axis``
    (primitive ``Split``). Only an int size is supported.

    >>> import numpy as np, distinfer as ms
    >>> pieces = ms.ops.split(ms.Tensor(np.arange(8, dtype=np.float32).reshape(2, 4)), 2, axis=1)
    >>> [p.asnumpy().tolist() for p in pieces]
    [[[0.0, 1.0], [4.0, 5.0]], [[2.0, 3.0], [6.0, 7.0]]]
    """
    if not isinstance(split_size_or_sections, int):
        raise ValueError("ops.split: only an int piece size is supported")
    return Split(axis, x.shape[axis] // split_size_or_sections)(x)


def gather(input_params, input_indices, axis: int, batch_dims: int = 0):
    """``ops.gather``: the slices of ``input_params`` at ``input_indices`` along ``axis`` (primitive ``Gather``).

    >>> import numpy as np, distinfer as ms
    >>> x = ms.Tensor(np.arange(6, dtype=np.float32).reshape(2, 3))
    >>> ms.ops.gather(x, ms.Tensor(np.array([2, 0], np.int32)), 1).asnumpy().tolist()
    [[2.0, 0.0], [5.0, 3.0]]
    """
    return Gather(batch_dims)(input_params, input_indices, axis)


def one_hot(indices, depth: int, on_value=1.0, off_value=0.0, axis: int = -1):
    """``ops.one_hot``: ``on_value`` at each index and ``off_value`` elsewhere, a new dim of ``depth``
    at ``axis`` (primitive ``OneHot``).

    >>> import numpy as np, distinfer as ms
    >>> ms.ops.one_hot(ms.Tensor(np.array([0, 2], np.int32)), 3).asnumpy().tolist()
    [[1.0, 0.0, 0.0], [0.0, 0.0, 1.0]]
    """
    return OneHot(axis)(indices, depth, on_value, off_value)


def cast(x, dtype):
    """``ops.cast``: ``x`` converted to ``dtype`` (primitive ``Cast``; float to int truncates, as numpy).

    >>> import numpy as np, distinfer as ms
    >>> y = ms.ops.cast(ms.Tensor(np.array([1.7, -2.5], np.float32)), ms.int32)
    >>> y.dtype, y.asnumpy().tolist()
    (Int32, [1, -2])
    """
    return Cast()(x, dtype)


def sum(input, axis=None, keepdims: bool = False):  # noqa: A001 - MindSpore name
    """``ops.sum`` (also ``ops.reduce_sum``): the sum over ``axis`` (an int, a tuple, or None for all
    dims) (primitive ``ReduceSum``).

    >>> import numpy as np, distinfer as ms
    >>> x = ms.Tensor(np.arange(6, dtype=np.float32).reshape(2, 3))
    >>> ms.ops.sum(x).asnumpy().item(), ms.ops.reduce_sum(x, 1).asnumpy().tolist()
    (15.0, [3.0, 12.0])
    >>> ms.ops.sum(x, 0, keepdims=True).shape
    (1, 3)
    """
    return ReduceSum(keepdims)(input, () if axis is None else axis)


def mean(input, axis=None, keep_dims: bool = False):
    """``ops.mean`` (also ``ops.reduce_mean``): the mean over ``axis`` (an int, a tuple, or None for
    all dims) (primitive ``ReduceMean``).

    >>> import numpy as np, distinfer as ms
    >>> ms.ops.mean(ms.Tensor(np.arange(6, dtype=np.float32).reshape(2, 3)), 1).asnumpy().tolist()
    [1.0, 4.0]
    """
    return ReduceMean(keep_dims)(input, () if axis is None else axis)


reduce_sum = sum
reduce_mean = mean


def amax(input, axis=None, keepdims: bool = False):
    """``ops.amax``: the maximum over ``axis`` (an int, a tuple, or None for all dims) (primitive ``ReduceMax``)."""
    return ReduceMax(keepdims)(input, () if axis is None else axis)


def bias_add(input_x, bias):
    """``ops.bias_add``: ``bias`` added along dim 1, the channel (primitive ``BiasAdd``)."""
    return BiasAdd()(input_x, bias)


def zeros(shape, dtype=None):
    """``ops.zeros``: a Tensor of zeros (Float32 by default), held whole on this rank.

    >>> import distinfer as ms
    >>> ms.ops.zeros((2, 2)).asnumpy().tolist(), ms.ops.zeros(3, ms.int32).dtype
    ([[0.0, 0.0], [0.0, 0.0]], Int32)
    """
    return _tensor.Tensor(np.zeros(shape, dtype=mstype.get_dtype(dtype or mstype.float32).np))


def ones(shape, dtype=None):
    """``ops.ones``: a Tensor of ones (Float32 by default), held whole on this rank."""
    return _tensor.Tensor(np.ones(shape, dtype=mstype.get_dtype(dtype or mstype.float32).np))


def fill(type, shape, value):  # noqa: A002 - MindSpore signature
    """``ops.fill``: a Tensor of ``shape`` and dtype ``type`` with every element ``value``.

    >>> import distinfer as ms
    >>> ms.ops.fill(ms.int32, (2, 3), 7).asnumpy().tolist()
    [[7, 7, 7], [7, 7, 7]]
    """
    return _tensor.Tensor(np.full(shape, value, dtype=mstype.get_dtype(type).np))


def zeros_like(x):
    """``ops.zeros_like``: zeros with ``x.shape`` and ``x.dtype``."""
    return zeros(x.shape, x.dtype)


def ones_like(x):
    """``ops.ones_like``: ones with ``x.shape`` and ``x.dtype``."""
    return ones(x.shape, x.dtype)


def _getitem(x, index: Any):
    """``x[index]`` with basic indexing, as a primitive (so it works on laid-out tensors and is traced)."""
    return TensorGetItem()(x, encode_index(index, len(x.shape)))


def argmax(x, axis=None):
    """``ops.argmax``: indices of the maxima along ``axis`` (of the flattened tensor when None), as
    Int32 (primitive ``ArgMaxWithValue``).

    >>> import numpy as np, distinfer as ms
    >>> x = ms.Tensor(np.array([[1, 5, 2], [7, 0, 3]], np.float32))
    >>> ms.ops.argmax(x, 1).asnumpy().tolist(), ms.ops.argmax(x).asnumpy().item()
    ([1, 0], 3)
    """
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
    # GradOperation, value_and_grad and grad live with autograd (floor 4); exposed here under MindSpore's names.
    if name in ("GradOperation", "value_and_grad", "grad"):
        from .. import autograd

        return getattr(autograd, name)
    raise AttributeError(f"module 'distinfer.ops' has no attribute {name!r}")
