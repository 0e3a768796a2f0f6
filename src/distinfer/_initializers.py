"""Parameter initializers: the values of any block of a full tensor, from a seed.

Each :class:`Initializer` computes elements from their flat indices in the full tensor with the
counter-based generator of :mod:`distinfer._random`, so a rank computes only its own block and
the values do not depend on the rank count. Normal samples use Box-Muller on two independent
streams; truncated normals redraw out-of-range elements from further streams, element by
element, so they stay position-determined too. Tensors hold an initializer until their layout
is known (``Tensor(init=...)``); users import the classes from :mod:`distinfer.common.initializer`.

>>> import distinfer as ms
>>> from distinfer.common.initializer import initializer, Normal
>>> ms.set_seed(1)
>>> w = initializer(Normal(0.02), [4, 6], ms.float32)
>>> full = w.init_data().asnumpy()
>>> bool((w.init.block((4, 6), ((0, 4), (3, 6)), w.init_seed) == full[:, 3:]).all())
True
"""
from __future__ import annotations

import contextlib
import math
import numbers
from typing import Iterator, Sequence

import numpy as np

from . import context
from . import dtype as mstype
from ._random import flat_indices, next_seed, standard_normal, uniform01

__all__ = ["Initializer", "Normal", "Uniform", "Zero", "One", "Constant", "TruncatedNormal", "XavierUniform",
           "XavierNormal", "HeUniform", "HeNormal", "as_initializer"]

Box = Sequence[tuple[int, int]]

_ROWS_PER_CHUNK_ELEMS = 1 << 22  # bound temporaries when a block is large


def _advance_numpy() -> None:
    """The draw MindSpore's random initializers make from numpy's global generator for their seed.

    MindSpore's random initializers take a seed from numpy's global generator (one ``randint``
    draw) each time they produce values, so what a script draws from numpy afterwards depends on
    how many parameters were initialised before. distinfer's make the same draw at the same
    moments; the values themselves still come from the counter-based streams of :mod:`._random`,
    so they do not depend on the rank count or on the pipeline stage that computes them.
    """
    np.random.randint(low=1, high=1 << 63, dtype=np.int64)


class _Deferral:
    depth = 0  # open no_init_parameters blocks


@contextlib.contextmanager
def no_init_parameters() -> Iterator[None]:
    """MindSpore's ``nn.utils.no_init_parameters``: Parameters created inside keep their
    initializers (no values, no draw from numpy) until ``Cell.init_parameters_data()`` or their
    first use, whatever the parallel mode.

    >>> import distinfer as ms
    >>> from distinfer import nn
    >>> with no_init_parameters():
    ...     net = nn.Dense(3, 2)
    >>> net.weight.has_init, [p.has_init for p in net.init_parameters_data()]
    (True, [False, False])
    """
    _Deferral.depth += 1
    try:
        yield
    finally:
        _Deferral.depth -= 1


def initializes_at_creation() -> bool:
    """True when a Parameter built from an initializer gets its values at once, as MindSpore's
    do outside (semi-)auto parallel mode and outside :func:`no_init_parameters`.

    >>> initializes_at_creation()
    True
    """
    return _Deferral.depth == 0 and not context.is_sharded_mode()


def _fans(shape: Sequence[int]) -> tuple[int, int]:
    """MindSpore's fan_in/fan_out: ``shape[1]``/``shape[0]`` times the receptive field."""
    if len(shape) < 2:
        raise ValueError(f"fan_in and fan_out need a tensor of at least 2 dims, got shape {tuple(shape)}")
    receptive = math.prod(shape[2:])
    return shape[1] * receptive, shape[0] * receptive


# ------------------------------------------------------------------------- initializers
class Initializer:
    """Base class: subclasses define :meth:`_values` for flat indices of the full tensor.

    :meth:`block` computes any sub-box of the full tensor from those indices alone.

    >>> import numpy as np
    >>> from distinfer.common.initializer import Initializer
    >>> class FlatIndex(Initializer):
    ...     def _values(self, shape, seed, flat):
    ...         return flat.astype(np.float64)
    >>> FlatIndex().block((2, 3), ((0, 2), (1, 3)), seed=0).tolist()  # columns 1:3 of arange(6).reshape(2, 3)
    [[1.0, 2.0], [4.0, 5.0]]
    """

    draws_numpy = True  # random: each block() advances numpy's global generator (see _advance_numpy)

    def __init__(self, **kwargs) -> None:
        self._kwargs = kwargs

    def _values(self, shape: Sequence[int], seed: int, flat: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def block(self, shape: Sequence[int], box: Box, seed: int, dtype=mstype.float32) -> np.ndarray:
        """Values of the sub-box ``box`` of the full tensor of ``shape``; never builds the rest."""
        if self.draws_numpy:
            _advance_numpy()
        shape = tuple(int(s) for s in shape)
        box = tuple((int(a), int(b)) for a, b in box)
        np_dtype = mstype.get_dtype(dtype).np
        out = np.empty([b - a for a, b in box], dtype=np_dtype)
        if not box:
            out[...] = self._values(shape, seed, np.zeros((), np.uint64))
            return out
        row_elems = max(1, math.prod(b - a for a, b in box[1:]))
        step = max(1, _ROWS_PER_CHUNK_ELEMS // row_elems)
        a0, b0 = box[0]
        for start in range(a0, b0, step):
            sub = ((start, min(b0, start + step)),) + box[1:]
            out[start - a0:sub[0][1] - a0] = self._values(shape, seed, flat_indices(shape, sub))
        return out

    def __call__(self, arr: np.ndarray) -> None:
        """MindSpore's in-place form: fill ``arr`` with a freshly seeded full tensor."""
        arr[...] = self.block(arr.shape, tuple((0, s) for s in arr.shape), next_seed(), mstype.from_numpy(arr.dtype))

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v}" for k, v in self._kwargs.items())
        return f"{type(self).__name__}({args})"


class Constant(Initializer):
    """Every element equals ``value``.

    >>> from distinfer.common.initializer import Constant
    >>> Constant(0.5).block((2, 2), ((0, 2), (0, 2)), seed=0).tolist()
    [[0.5, 0.5], [0.5, 0.5]]
    """

    draws_numpy = False

    def __init__(self, value: float) -> None:
        super().__init__(value=value)
        self.value = value

    def _values(self, shape, seed, flat):
        return np.full(flat.shape, self.value, dtype=np.float64)


class Zero(Constant):
    """Every element is 0 (``"zeros"``).

    >>> from distinfer.common.initializer import Zero
    >>> Zero().block((3,), ((0, 3),), seed=0, dtype="Int32").tolist()
    [0, 0, 0]
    """

    def __init__(self) -> None:
        super().__init__(0)


class One(Constant):
    """Every element is 1 (``"ones"``).

    >>> from distinfer.common.initializer import One
    >>> One().block((2, 2), ((0, 2), (1, 2)), seed=0).tolist()
    [[1.0], [1.0]]
    """

    def __init__(self) -> None:
        super().__init__(1)


class Uniform(Initializer):
    """U(-scale, scale); MindSpore's default scale is 0.07.

    >>> from distinfer.common.initializer import Uniform
    >>> v = Uniform(0.1).block((100, 100), ((0, 100), (0, 100)), seed=1)
    >>> bool(v.min() >= -0.1 and v.max() <= 0.1), round(float(v.max()), 3)
    (True, 0.1)
    """

    def __init__(self, scale: float = 0.07) -> None:
        super().__init__(scale=scale)
        self.scale = scale

    def _values(self, shape, seed, flat):
        return (2.0 * uniform01(seed, flat, 0) - 1.0) * self.scale


class Normal(Initializer):
    """N(mean, sigma^2); MindSpore's default sigma is 0.01.

    >>> from distinfer.common.initializer import Normal
    >>> v = Normal(sigma=0.5, mean=1.0).block((100, 100), ((0, 100), (0, 100)), seed=1)
    >>> round(float(v.mean()), 2), round(float(v.std()), 2)
    (1.0, 0.5)
    """

    def __init__(self, sigma: float = 0.01, mean: float = 0.0) -> None:
        super().__init__(sigma=sigma, mean=mean)
        self.sigma, self.mean = sigma, mean

    def _values(self, shape, seed, flat):
        return standard_normal(seed, flat) * self.sigma + self.mean


class TruncatedNormal(Initializer):
    """N(mean, sigma^2) restricted to [a, b]: out-of-range elements are redrawn per element.

    >>> from distinfer.common.initializer import TruncatedNormal
    >>> v = TruncatedNormal(sigma=1.0, a=-0.5, b=0.5).block((100, 100), ((0, 100), (0, 100)), seed=1)
    >>> round(float(v.min()), 3), round(float(v.max()), 3)
    (-0.5, 0.5)
    """

    def __init__(self, sigma: float = 0.01, mean: float = 0.0, a: float = -2.0, b: float = 2.0) -> None:
        super().__init__(sigma=sigma, mean=mean, a=a, b=b)
        self.sigma, self.mean, self.a, self.b = sigma, mean, a, b

    def _values(self, shape, seed, flat):
        vals = standard_normal(seed, flat) * self.sigma + self.mean
        for stream in range(1, 64):
            bad = (vals < self.a) | (vals > self.b)
            if not bad.any():
                break
            vals[bad] = standard_normal(seed, flat[bad], stream) * self.sigma + self.mean
        return np.clip(vals, self.a, self.b)


class XavierUniform(Initializer):
    """U(-bound, bound), ``bound = gain * sqrt(6 / (fan_in + fan_out))``.

    >>> from distinfer.common.initializer import XavierUniform
    >>> v = XavierUniform().block((200, 100), ((0, 200), (0, 100)), seed=1)  # bound sqrt(6 / 300) = 0.1414
    >>> round(float(abs(v).max()), 4)
    0.1414
    """

    def __init__(self, gain: float = 1) -> None:
        super().__init__(gain=gain)
        self.gain = gain

    def _values(self, shape, seed, flat):
        fan_in, fan_out = _fans(shape)
        bound = self.gain * math.sqrt(6.0 / (fan_in + fan_out))
        return (2.0 * uniform01(seed, flat, 0) - 1.0) * bound


class XavierNormal(Initializer):
    """N(0, std^2), ``std = gain * sqrt(2 / (fan_in + fan_out))``.

    >>> from distinfer.common.initializer import XavierNormal
    >>> v = XavierNormal().block((200, 100), ((0, 200), (0, 100)), seed=1)  # std sqrt(2 / 300) = 0.082
    >>> round(float(v.std()), 3)
    0.082
    """

    def __init__(self, gain: float = 1) -> None:
        super().__init__(gain=gain)
        self.gain = gain

    def _values(self, shape, seed, flat):
        fan_in, fan_out = _fans(shape)
        return standard_normal(seed, flat) * self.gain * math.sqrt(2.0 / (fan_in + fan_out))


def _he_std(shape, negative_slope: float, mode: str, nonlinearity: str) -> float:
    fan_in, fan_out = _fans(shape)
    fan = fan_in if mode == "fan_in" else fan_out
    gain = math.sqrt(2.0 / (1 + negative_slope ** 2)) if nonlinearity == "leaky_relu" else \
        math.sqrt(2.0) if nonlinearity == "relu" else 1.0
    return gain / math.sqrt(fan)


class HeUniform(Initializer):
    """Kaiming uniform: U(-bound, bound), ``bound = sqrt(3) * gain / sqrt(fan)``.

    >>> from distinfer.common.initializer import HeUniform
    >>> v = HeUniform().block((64, 50), ((0, 64), (0, 50)), seed=1)  # fan_in 50, gain sqrt(2): bound 0.346
    >>> round(float(abs(v).max()), 3)
    0.346
    """

    def __init__(self, negative_slope: float = 0, mode: str = "fan_in", nonlinearity: str = "leaky_relu") -> None:
        super().__init__(negative_slope=negative_slope, mode=mode, nonlinearity=nonlinearity)
        if mode not in ("fan_in", "fan_out"):
            raise ValueError(f"HeUniform: mode must be 'fan_in' or 'fan_out', got {mode!r}")
        self.args = (negative_slope, mode, nonlinearity)

    def _values(self, shape, seed, flat):
        bound = math.sqrt(3.0) * _he_std(shape, *self.args)
        return (2.0 * uniform01(seed, flat, 0) - 1.0) * bound


class HeNormal(Initializer):
    """Kaiming normal: N(0, std^2), ``std = gain / sqrt(fan)``.

    >>> from distinfer.common.initializer import HeNormal
    >>> v = HeNormal().block((200, 50), ((0, 200), (0, 50)), seed=1)  # fan_in 50, gain sqrt(2): std 0.2
    >>> round(float(v.std()), 2)
    0.2
    """

    def __init__(self, negative_slope: float = 0, mode: str = "fan_in", nonlinearity: str = "leaky_relu") -> None:
        super().__init__(negative_slope=negative_slope, mode=mode, nonlinearity=nonlinearity)
        if mode not in ("fan_in", "fan_out"):
            raise ValueError(f"HeNormal: mode must be 'fan_in' or 'fan_out', got {mode!r}")
        self.args = (negative_slope, mode, nonlinearity)

    def _values(self, shape, seed, flat):
        return standard_normal(seed, flat) * _he_std(shape, *self.args)


_BY_NAME = {
    "normal": Normal, "uniform": Uniform, "zeros": Zero, "zero": Zero, "ones": One, "one": One,
    "truncatednormal": TruncatedNormal, "xavier_uniform": XavierUniform, "xavieruniform": XavierUniform,
    "xavier_normal": XavierNormal, "xaviernormal": XavierNormal, "he_uniform": HeUniform,
    "heuniform": HeUniform, "he_normal": HeNormal, "henormal": HeNormal,
}


def as_initializer(init) -> Initializer:
    """An Initializer from a name ("normal", "zeros", ...), an Initializer or a number."""
    if isinstance(init, Initializer):
        return init
    if isinstance(init, str):
        try:
            return _BY_NAME[init.lower()]()
        except KeyError:
            raise ValueError(f"initializer: unknown name {init!r}; known: {sorted(_BY_NAME)}") from None
    if isinstance(init, numbers.Number):
        return Constant(init)
    raise TypeError(f"initializer: init must be a str, an Initializer, a number or a Tensor, got {type(init).__name__}")
