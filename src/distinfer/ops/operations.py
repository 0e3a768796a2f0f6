"""``mindspore.ops.operations`` (imported as ``P``): the primitive classes, as far as distinfer has them.

Each name is the very class ``distinfer.ops`` exposes (``P.MatMul is ops.MatMul``); every op is
registered in :mod:`distinfer.ops.registry`. distinfer's own ops without a MindSpore counterpart
here (``SiLU``, ``TensorGetItem``) are in ``distinfer.ops`` only.

>>> import numpy as np, distinfer as ms
>>> from distinfer.ops import operations as P
>>> P.MatMul is ms.ops.MatMul, P.ReLU()(ms.Tensor(np.array([-1.0, 1.0], np.float32))).asnumpy().tolist()
(True, [0.0, 1.0])
"""
from ._elementwise import (Abs, Add, BiasAdd, Cast, Div, Equal, Erf, Exp, FastGeLU, GeLU, Greater, GreaterEqual,
                           Identity, Less, LessEqual, Log, LogSoftmax, Maximum, Minimum, Mul, Neg, Pow, RealDiv, ReLU,
                           Rsqrt, Sigmoid, Softmax, Sqrt, Square, Sub, Tanh)
from ._matmul import BatchMatMul, MatMul
from ._print import Print
from ._nn_ops import (Dropout, Gather, LayerNorm, OneHot, SoftmaxCrossEntropyWithLogits,
                      SparseSoftmaxCrossEntropyWithLogits)
from ._reduce import ArgMaxWithValue, ReduceMax, ReduceMean, ReduceMin, ReduceSum
from ._shape import Concat, ExpandDims, Flatten, Reshape, Split, Squeeze, Transpose

__all__ = [
    "Add", "Sub", "Mul", "RealDiv", "Div", "Maximum", "Minimum", "Pow", "Less", "Greater", "LessEqual",
    "GreaterEqual", "Equal", "ReLU", "GeLU", "FastGeLU", "Sigmoid", "Tanh", "Exp", "Log", "Sqrt", "Rsqrt", "Neg",
    "Square", "Abs", "Erf", "Cast", "Softmax", "LogSoftmax", "BiasAdd", "Identity", "MatMul", "BatchMatMul",
    "ReduceSum", "ReduceMean", "ReduceMax", "ReduceMin", "ArgMaxWithValue", "Reshape", "Flatten", "Transpose",
    "ExpandDims", "Squeeze", "Concat", "Split", "Gather", "OneHot", "LayerNorm", "Dropout",
    "SparseSoftmaxCrossEntropyWithLogits", "SoftmaxCrossEntropyWithLogits", "Print",
]
