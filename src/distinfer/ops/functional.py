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
from .function import (abs, add, amax, argmax, bias_add, bmm, cast, cat, concat, div, erf, exp, expand_dims, fill,
                       flatten, gather, gelu, log, log_softmax, matmul, maximum, mean, minimum, mul, neg, one_hot,
                       ones, ones_like, pow, pows, reduce_max, reduce_mean, reduce_min, reduce_sum, relu, reshape,
                       reshape_, sigmoid, softmax, split, sqrt, square, squeeze, sub, sum, tanh, tensor_add, tensor_div,
                       tensor_exp, tensor_ge, tensor_le, tensor_mul, tensor_pow, tensor_sub, transpose, zeros,
                       zeros_like)
from .primitive import Primitive

__all__ = [
    "add", "sub", "mul", "div", "matmul", "bmm", "relu", "gelu", "erf", "sigmoid", "tanh", "exp", "log", "sqrt", "neg",
    "square", "abs", "maximum", "minimum", "pow", "softmax", "log_softmax", "reshape", "flatten", "transpose",
    "expand_dims", "squeeze", "concat", "cat", "split", "gather", "one_hot", "cast", "sum", "mean", "reduce_sum",
    "reduce_mean", "amax", "argmax", "bias_add", "zeros", "ones", "zeros_like", "ones_like", "fill",
    "tensor_add", "tensor_sub", "tensor_mul", "tensor_div", "tensor_pow", "pows", "tensor_exp", "tensor_ge",
    "tensor_le", "reshape_", "reduce_max", "reduce_min", "Primitive", "grad", "value_and_grad",
]
