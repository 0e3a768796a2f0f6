"""Layers with MindSpore's signatures, parameters and initial values.

Each layer keeps its primitives as attributes (``self.matmul``...) so users can ``.shard()``
them exactly as in MindSpore, e.g. ``net.fc.matmul.shard(((2, 1), (4, 1)))``.
"""
from __future__ import annotations

import math

from .. import dtype as mstype
from ..ops import function as F, operations as P
from ..common.initializer import HeUniform, Uniform, initializer
from ..tensor import Parameter
from .cell import Cell

__all__ = ["Dense", "ReLU", "GELU", "Sigmoid", "Tanh", "Flatten", "Softmax", "LogSoftmax", "LayerNorm", "Embedding",
           "Dropout", "Identity"]


class Dense(Cell):
    """``Dense(in_channels, out_channels, weight_init=None, bias_init=None, has_bias=True, activation=None)``.

    ``weight`` is ``[out_channels, in_channels]`` and the forward pass is
    ``MatMul(transpose_b=True)(x, weight)`` then ``BiasAdd``, as in MindSpore.

    >>> import numpy as np, distinfer as ms
    >>> from distinfer import nn
    >>> net = nn.Dense(3, 2, weight_init="ones", bias_init="zeros", activation="relu")
    >>> net.weight.shape, net(ms.Tensor(np.array([[1.0, 2.0, 3.0]], np.float32))).asnumpy().tolist()
    ((2, 3), [[6.0, 6.0]])
    >>> net(ms.Tensor(np.ones((5, 4, 3), np.float32))).shape  # leading dims are kept
    (5, 4, 2)
    """

    def __init__(self, in_channels: int, out_channels: int, weight_init=None, bias_init=None, has_bias: bool = True,
                 activation=None, dtype=mstype.float32) -> None:
        super().__init__()
        self.in_channels, self.out_channels, self.has_bias = in_channels, out_channels, has_bias
        if weight_init is None:
            weight_init = HeUniform(math.sqrt(5))
        self.weight = Parameter(initializer(weight_init, [out_channels, in_channels], dtype), name="weight")
        if has_bias:
            if bias_init is None:
                bias_init = Uniform(1 / math.sqrt(in_channels))
            self.bias = Parameter(initializer(bias_init, [out_channels], dtype), name="bias")
            self.bias_add = P.BiasAdd()
        self.matmul = P.MatMul(transpose_b=True)
        self.activation = _activation(activation)

    def construct(self, x):
        lead = x.shape[:-1]
        if len(x.shape) != 2:
            x = F.reshape(x, (-1, x.shape[-1]))
        x = self.matmul(x, self.weight)
        if self.has_bias:
            x = self.bias_add(x, self.bias)
        if self.activation is not None:
            x = self.activation(x)
        if len(lead) != 1:
            x = F.reshape(x, tuple(lead) + (self.out_channels,))
        return x

    def extend_repr(self) -> str:
        return f"input_channels={self.in_channels}, output_channels={self.out_channels}, has_bias={self.has_bias}"


def _activation(act):
    if act is None or isinstance(act, Cell):
        return act
    table = {"relu": ReLU, "gelu": GELU, "sigmoid": Sigmoid, "tanh": Tanh, "softmax": Softmax}
    if isinstance(act, str) and act.lower() in table:
        return table[act.lower()]()
    raise ValueError(f"unknown activation {act!r}; known: {sorted(table)}")


class _Wrap(Cell):
    """A layer that applies one primitive (kept as ``self.<attr>`` for sharding)."""

    attr = "op"

    def construct(self, x):
        return getattr(self, self.attr)(x)


class ReLU(_Wrap):
    """``max(x, 0)`` elementwise (primitive ``self.relu``).

    >>> import numpy as np, distinfer as ms
    >>> from distinfer import nn
    >>> nn.ReLU()(ms.Tensor(np.array([-1.0, 0.0, 2.0], np.float32))).asnumpy().tolist()
    [0.0, 0.0, 2.0]
    """

    attr = "relu"

    def __init__(self) -> None:
        super().__init__()
        self.relu = P.ReLU()


class GELU(_Wrap):
    """``GELU(approximate=True)``: GeLU elementwise; the tanh approximation (primitive
    ``self.gelu``, shardable), or with ``approximate=False`` the exact
    ``x * (1 + erf(x / sqrt(2))) / 2`` (:func:`distinfer.ops.gelu`).

    >>> import numpy as np, distinfer as ms
    >>> from distinfer import nn
    >>> x = ms.Tensor(np.array([-1.0, 0.0, 2.0], np.float32))
    >>> [nn.GELU(a)(x).asnumpy().astype(float).round(5).tolist() for a in (True, False)]
    [[-0.15881, 0.0, 1.9546], [-0.15866, 0.0, 1.9545]]
    """

    attr = "gelu"

    def __init__(self, approximate: bool = True) -> None:
        super().__init__()
        self.approximate = bool(approximate)
        self.gelu = P.GeLU()

    def construct(self, x):
        return self.gelu(x) if self.approximate else F.gelu(x, approximate="none")


class Sigmoid(_Wrap):
    """``1 / (1 + exp(-x))`` elementwise (primitive ``self.sigmoid``).

    >>> import numpy as np, distinfer as ms
    >>> from distinfer import nn
    >>> nn.Sigmoid()(ms.Tensor(np.array([-1.0, 0.0, 2.0], np.float32))).asnumpy().astype(float).round(4).tolist()
    [0.2689, 0.5, 0.8808]
    """

    attr = "sigmoid"

    def __init__(self) -> None:
        super().__init__()
        self.sigmoid = P.Sigmoid()


class Tanh(_Wrap):
    """Hyperbolic tangent elementwise (primitive ``self.tanh``).

    >>> import numpy as np, distinfer as ms
    >>> from distinfer import nn
    >>> nn.Tanh()(ms.Tensor(np.array([-1.0, 0.0, 2.0], np.float32))).asnumpy().astype(float).round(4).tolist()
    [-0.7616, 0.0, 0.964]
    """

    attr = "tanh"

    def __init__(self) -> None:
        super().__init__()
        self.tanh = P.Tanh()


class Identity(Cell):
    """Returns its input unchanged.

    >>> import numpy as np, distinfer as ms
    >>> from distinfer import nn
    >>> nn.Identity()(ms.Tensor(np.array([-1.0, 2.0], np.float32))).asnumpy().tolist()
    [-1.0, 2.0]
    """

    def construct(self, x):
        return x


class Flatten(Cell):
    """``Flatten(start_dim=1, end_dim=-1)``.

    >>> import numpy as np, distinfer as ms
    >>> from distinfer import nn
    >>> x = ms.Tensor(np.zeros((2, 3, 4, 5), np.float32))
    >>> nn.Flatten()(x).shape, nn.Flatten(start_dim=1, end_dim=2)(x).shape
    ((2, 60), (2, 12, 5))
    """

    def __init__(self, start_dim: int = 1, end_dim: int = -1) -> None:
        super().__init__()
        self.start_dim, self.end_dim = start_dim, end_dim

    def construct(self, x):
        shape = x.shape
        s, e = self.start_dim % len(shape), self.end_dim % len(shape)
        new = tuple(shape[:s]) + (math.prod(shape[s:e + 1]),) + tuple(shape[e + 1:])
        return F.reshape(x, new)


class Softmax(_Wrap):
    """``Softmax(axis=-1)`` (primitive ``self.softmax``).

    >>> import numpy as np, distinfer as ms
    >>> from distinfer import nn
    >>> x = ms.Tensor(np.array([[0.0, 0.0], [0.0, np.log(3.0)]], np.float32))
    >>> nn.Softmax()(x).asnumpy().astype(float).round(4).tolist()
    [[0.5, 0.5], [0.25, 0.75]]
    >>> nn.Softmax(axis=0)(x).asnumpy().astype(float).round(4).tolist()
    [[0.5, 0.25], [0.5, 0.75]]
    """

    attr = "softmax"

    def __init__(self, axis: int = -1) -> None:
        super().__init__()
        self.softmax = P.Softmax(axis)


class LogSoftmax(_Wrap):
    """``LogSoftmax(axis=-1)`` (primitive ``self.log_softmax``).

    >>> import numpy as np, distinfer as ms
    >>> from distinfer import nn
    >>> y = nn.LogSoftmax()(ms.Tensor(np.array([[0.0, 0.0, 0.0, 0.0]], np.float32)))
    >>> y.asnumpy().astype(float).round(4).tolist()  # log(1/4)
    [[-1.3863, -1.3863, -1.3863, -1.3863]]
    """

    attr = "log_softmax"

    def __init__(self, axis: int = -1) -> None:
        super().__init__()
        self.log_softmax = P.LogSoftmax(axis)


class LayerNorm(Cell):
    """``LayerNorm(normalized_shape, begin_norm_axis=-1, begin_params_axis=-1, gamma_init='ones',
    beta_init='zeros', epsilon=1e-7)``; ``gamma``/``beta`` parameters; ``self.layer_norm`` primitive.

    >>> import numpy as np, distinfer as ms
    >>> from distinfer import nn
    >>> ln = nn.LayerNorm((3,))
    >>> [name for name, _ in ln.parameters_and_names()]
    ['gamma', 'beta']
    >>> ln(ms.Tensor(np.array([[1.0, 2.0, 3.0]], np.float32))).asnumpy().astype(float).round(4).tolist()
    [[-1.2247, 0.0, 1.2247]]
    """

    def __init__(self, normalized_shape, begin_norm_axis: int = -1, begin_params_axis: int = -1, gamma_init="ones",
                 beta_init="zeros", epsilon: float = 1e-7, dtype=mstype.float32) -> None:
        super().__init__()
        shape = tuple(normalized_shape) if isinstance(normalized_shape, (tuple, list)) else (normalized_shape,)
        self.normalized_shape = shape
        self.gamma = Parameter(initializer(gamma_init, shape, dtype), name="gamma")
        self.beta = Parameter(initializer(beta_init, shape, dtype), name="beta")
        self.layer_norm = P.LayerNorm(begin_norm_axis, begin_params_axis, epsilon)

    def construct(self, x):
        y, _, _ = self.layer_norm(x, self.gamma, self.beta)
        return y


class Embedding(Cell):
    """``Embedding(vocab_size, embedding_size, use_one_hot=False, embedding_table='normal', dtype=int32,
    padding_idx=None)``; the table is ``embedding_table`` and the lookup is ``self.gather``.

    >>> import numpy as np, distinfer as ms
    >>> from distinfer import nn
    >>> table = ms.Tensor(np.arange(10, dtype=np.float32).reshape(5, 2))
    >>> emb = nn.Embedding(5, 2, embedding_table=table)
    >>> emb(ms.Tensor(np.array([[4, 0]], np.int32))).asnumpy().tolist()
    [[[8.0, 9.0], [0.0, 1.0]]]
    """

    def __init__(self, vocab_size: int, embedding_size: int, use_one_hot: bool = False, embedding_table="normal",
                 dtype=mstype.int32, padding_idx=None) -> None:
        super().__init__()
        if use_one_hot:
            raise ValueError("Embedding(use_one_hot=True) is not supported; use the Gather lookup")
        self.vocab_size, self.embedding_size = vocab_size, embedding_size
        self.embedding_table = Parameter(initializer(embedding_table, [vocab_size, embedding_size], mstype.float32),
                                         name="embedding_table")
        self.gather = P.Gather()

    def construct(self, ids):
        return self.gather(self.embedding_table, ids, 0)


class Dropout(Cell):
    """``Dropout(keep_prob=None, p=None)``: identity unless the cell is training.

    >>> import numpy as np, distinfer as ms
    >>> from distinfer import nn
    >>> drop, x = nn.Dropout(p=0.5), ms.Tensor(np.ones((4, 4), np.float32))
    >>> bool((drop(x).asnumpy() == 1).all())  # not training: the identity
    True
    >>> set(drop.set_train()(x).asnumpy().ravel().tolist()) <= {0.0, 2.0}  # kept values scaled by 1 / (1 - p)
    True
    """

    def __init__(self, keep_prob: float | None = None, p: float | None = None, dtype=mstype.float32) -> None:
        super().__init__()
        if p is None:
            p = 0.5 if keep_prob is None else 1 - keep_prob
        if not 0 <= p < 1:
            raise ValueError(f"Dropout: p must be in [0, 1), got {p}")
        self.p = p
        self.dropout = P.Dropout(1 - p) if p > 0 else None

    def construct(self, x):
        if not self.training or self.dropout is None:
            return x
        out, _ = self.dropout(x)
        return out
