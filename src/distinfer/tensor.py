"""``Tensor`` and ``Parameter``: numpy blocks that know the global tensor they belong to.

A Tensor holds this rank's **local** block, the **global** shape, and a
:class:`~distinfer.layout.DistSpec` saying how the global tensor is distributed: the
:class:`Layout` (which block this rank holds; ``None``: the whole tensor), any *pending partial
results* over device axes (the runtime reduces them before anyone reads the value) and the
pipeline stage holding it.

A Parameter is a named, trainable Tensor that may be **lazy**: it keeps its initializer and
full shape until the layout of the op consuming it is known, then materialises only its block
(as MindSpore slices parameters at compile time). Once sliced, ``param.shape`` is the local
shape, as in MindSpore.

>>> import numpy as np, distinfer as ms
>>> t = ms.Tensor(np.arange(6, dtype=np.float32).reshape(2, 3))
>>> t.shape, t.dtype
((2, 3), Float32)
>>> p = ms.Parameter(ms.Tensor(np.zeros(3, np.float32)), name="bias")
>>> p.name, p.requires_grad
('bias', True)
"""
from __future__ import annotations

import numbers
from typing import Any, Callable, Sequence

import numpy as np

from . import _format
from . import dtype as mstype
from ._initializers import as_initializer, initializes_at_creation
from ._random import next_seed
from .layout import DistSpec, Layout

__all__ = ["Tensor", "Parameter", "ParameterTuple"]

_WHOLE = DistSpec()  # every rank holds the whole tensor

# Filled by distinfer.ops at import: Python operators on Tensors run as sharded primitives.
_OPERATORS: dict[str, Callable[..., Any]] = {}


def _infer_np(data: Any, dtype: mstype.Type | None) -> np.ndarray:
    """numpy array for Tensor(data, dtype) with MindSpore's defaults for Python scalars/lists."""
    if dtype is not None:
        np_dtype = mstype.get_dtype(dtype).np
        if isinstance(data, np.ndarray) and data.dtype != np_dtype:
            return data.astype(np_dtype)
        return np.asarray(data, dtype=np_dtype)
    if isinstance(data, np.ndarray):
        return data
    arr = np.asarray(data)
    if arr.dtype == np.float64 and not isinstance(data, np.generic):
        arr = arr.astype(np.float32)  # Python floats become Float32, as in MindSpore
    return arr


class Tensor:
    """MindSpore's ``Tensor(input_data=None, dtype=None, shape=None, init=None)``.

    Python floats become Float32; Python operators run as primitives.

    >>> import numpy as np, distinfer as ms
    >>> t = ms.Tensor([[1, 2], [3, 4]], ms.float32)
    >>> t.shape, t.dtype, (t * 2 + 1).asnumpy().tolist()
    ((2, 2), Float32, [[3.0, 5.0], [7.0, 9.0]])
    >>> ms.Tensor(1.5).dtype, ms.Tensor(shape=(2,), dtype=ms.int32).asnumpy().tolist()
    (Float32, [0, 0])
    """

    __array_priority__ = 100

    def __init__(self, input_data: Any = None, dtype: Any = None, shape: Any = None, init: Any = None,
                 const_arg: bool = False, **_: Any) -> None:
        self._spec = _WHOLE
        self.init = None
        self.init_seed: int | None = None
        if isinstance(input_data, Tensor):
            input_data = input_data.asnumpy()
        if init is not None:
            if input_data is not None:
                raise ValueError("Tensor: give either input_data or init, not both")
            self.init = as_initializer(init)
            self.init_seed = next_seed()
            self._shape = (int(shape),) if isinstance(shape, numbers.Integral) else tuple(int(s) for s in shape)
            self._dtype = mstype.get_dtype(dtype if dtype is not None else mstype.float32)
            self._local: np.ndarray | None = None
            return
        if input_data is None:
            if shape is None:
                raise ValueError("Tensor: input_data, or shape with dtype and init, is required")
            input_data = np.zeros(shape, dtype=mstype.get_dtype(dtype or mstype.float32).np)
        arr = _infer_np(input_data, mstype.get_dtype(dtype) if dtype is not None else None)
        self._local = arr
        self._shape = tuple(arr.shape)
        self._dtype = mstype.from_numpy(arr.dtype)

    # ------------------------------------------------------------------- construction
    @classmethod
    def _make(cls, local: np.ndarray | None, shape: Sequence[int], spec: DistSpec | Layout | None = None,
              dtype: mstype.Type | None = None) -> "Tensor":
        """A Tensor from a local block (``None`` in abstract runs), its global shape and its
        distribution (a :class:`DistSpec`, or just a Layout)."""
        t = cls.__new__(cls)
        t._local = local
        t._shape = tuple(int(s) for s in shape)
        t._spec = spec if isinstance(spec, DistSpec) else (_WHOLE if spec is None else DistSpec(spec))
        t._dtype = dtype if dtype is not None else mstype.from_numpy(local.dtype)
        t.init = None
        t.init_seed = None
        return t

    # ----------------------------------------------------------------------- metadata
    @property
    def shape(self) -> tuple[int, ...]:
        """Global shape."""
        return self._shape

    @property
    def dtype(self) -> mstype.Type:
        return self._dtype

    @property
    def ndim(self) -> int:
        return len(self._shape)

    @property
    def size(self) -> int:
        return int(np.prod(self._shape, dtype=np.int64))

    @property
    def itemsize(self) -> int:
        return self._dtype.itemsize

    @property
    def nbytes(self) -> int:
        return self.size * self.itemsize

    @property
    def has_init(self) -> bool:
        return self._local is None and self.init is not None

    @property
    def layout(self) -> Layout | None:
        """Which block of the global tensor this rank holds (``None``: all of it)."""
        return self._spec.layout

    @property
    def spec(self) -> DistSpec:
        """How the global tensor is distributed (layout, pending partial results, pipeline stage)."""
        return self._spec

    @property
    def global_shape(self) -> tuple[int, ...]:
        """The shape of the whole tensor (a sliced Parameter's ``shape`` is its local one)."""
        return self._shape

    @property
    def local(self) -> np.ndarray | None:
        """This rank's block as it is (``None`` before a lazy tensor is materialised or in a
        layout-only run); unlike :meth:`asnumpy` it may hold unreduced partial results."""
        return self._local

    def _settle(self, local: np.ndarray, spec: DistSpec) -> None:
        """Replace the block and spec by an equal value in another form (the runtime keeps a
        reduction here so later consumers do not repeat it)."""
        self._local, self._spec = local, spec

    # ----------------------------------------------------------------------------- data
    def asnumpy(self) -> np.ndarray:
        """This rank's data as numpy (the whole tensor unless it is laid out across ranks)."""
        if self._spec.partial:
            raise RuntimeError("this Tensor holds unreduced partial sums; use it in an op first")
        if self._local is None:
            if self.init is None:
                raise RuntimeError("this Tensor has no data (it comes from a layout-only run)")
            self.init_data()
        return self._local

    numpy = asnumpy

    def __array__(self, dtype=None, copy=None):
        arr = self.asnumpy()
        return arr.astype(dtype) if dtype is not None else arr

    def init_data(self, slice_index: int | None = None, shape=None, opt_shard_group=None) -> "Tensor":
        """Materialise a lazily initialised tensor (the full tensor, or this rank's block if laid out)."""
        if self._local is None and self.init is not None:
            box = self.layout.box(_rank()) if self.layout is not None else tuple((0, s) for s in self._shape)
            self._local = self.init.block(self._shape, box, self.init_seed, self._dtype)
        return self

    def item(self):
        return self.asnumpy().item()

    def tolist(self):
        return self.asnumpy().tolist()

    def copy(self) -> "Tensor":
        return Tensor(self.asnumpy().copy())

    def astype(self, dtype) -> "Tensor":
        return _OPERATORS["cast"](self, mstype.get_dtype(dtype))

    def set_dtype(self, dtype) -> "Tensor":
        self._local = self.asnumpy().astype(mstype.get_dtype(dtype).np)
        self._dtype = mstype.get_dtype(dtype)
        return self

    def __len__(self) -> int:
        if not self._shape:
            raise TypeError("len() of a 0-d Tensor")
        return self._shape[0]

    def __bool__(self) -> bool:
        return bool(self.asnumpy())

    def __float__(self) -> float:
        return float(self.asnumpy())

    def __int__(self) -> int:
        return int(self.asnumpy())

    def __index__(self) -> int:
        return int(self.asnumpy())

    def __repr__(self) -> str:
        """MindSpore's ``Tensor(shape=[...], dtype=..., value=...)``: the shape is the global one,
        the values this rank's block (the whole tensor unless it is laid out across ranks).

        >>> import numpy as np, distinfer as ms
        >>> ms.Tensor(np.float32(2.3014357))
        Tensor(shape=[], dtype=Float32, value= 2.30144)
        """
        if self._local is None or self._spec.partial:
            state = "not materialised" if self._local is None else "pending partial sums"
            return f"Tensor(shape={list(self._shape)}, dtype={self._dtype}, value=<{state}>)"
        return _format.tensor_repr(self._local, str(self._dtype), self._shape)

    def __str__(self) -> str:
        """The values as numpy prints them, as MindSpore's ``print(tensor)`` shows them.

        >>> import numpy as np, distinfer as ms
        >>> print(ms.Tensor(np.float32(2.3014357)), ms.Tensor(np.array([1, 2], np.int32)))
        2.3014357 [1 2]
        """
        if self._local is None and self.init is None or self._spec.partial:
            return repr(self)
        return _format.tensor_str(self.asnumpy(), str(self._dtype))

    def __getitem__(self, index):
        return _OPERATORS["getitem"](self, index)

    # ------------------------------------------------- Python operators -> primitives
    def _op(name: str, swap: bool = False):  # type: ignore[misc]
        def method(self, other):
            return _OPERATORS[name](other, self) if swap else _OPERATORS[name](self, other)
        method.__name__ = name
        return method

    __add__ = _op("add")
    __radd__ = _op("add", swap=True)
    __sub__ = _op("sub")
    __rsub__ = _op("sub", swap=True)
    __mul__ = _op("mul")
    __rmul__ = _op("mul", swap=True)
    __truediv__ = _op("div")
    __rtruediv__ = _op("div", swap=True)
    __matmul__ = _op("matmul")
    __pow__ = _op("pow")
    __lt__ = _op("less")
    __gt__ = _op("greater")
    __le__ = _op("less_equal")
    __ge__ = _op("greater_equal")
    del _op

    def __neg__(self):
        return _OPERATORS["neg"](self)

    def reshape(self, *shape):
        shape = shape[0] if len(shape) == 1 and isinstance(shape[0], (tuple, list)) else shape
        return _OPERATORS["reshape"](self, tuple(shape))

    def transpose(self, *axes):
        axes = axes[0] if len(axes) == 1 and isinstance(axes[0], (tuple, list)) else axes
        return _OPERATORS["transpose"](self, tuple(axes) if axes else tuple(reversed(range(self.ndim))))

    def sum(self, axis=None, keepdims=False):
        return _OPERATORS["reduce_sum"](self, axis, keepdims)

    def mean(self, axis=None, keep_dims=False):
        return _OPERATORS["reduce_mean"](self, axis, keep_dims)

    def expand_dims(self, axis: int):
        return _OPERATORS["expand_dims"](self, axis)

    def squeeze(self, axis=None):
        return _OPERATORS["squeeze"](self, axis)

    def flatten(self):
        return _OPERATORS["reshape"](self, (-1,))

    def argmax(self, axis=None):
        return _OPERATORS["argmax"](self, axis)

    def max(self, axis=None, keepdims=False):
        return _OPERATORS["reduce_max"](self, axis, keepdims)


def lazy_tensor(init: Any, shape: Any = None, dtype: Any = mstype.float32) -> Tensor:
    """A Tensor of ``shape`` whose data an initializer produces only when needed (``init``: a name such as
    "normal", an Initializer or a number), or ``init`` itself if it is a Tensor or an ndarray of that shape.
    MindSpore's ``initializer`` (:mod:`distinfer.common.initializer`).

    >>> lazy_tensor("ones", 3).has_init, lazy_tensor(np.ones(2, np.float32)).has_init
    (True, False)
    """
    if isinstance(init, (Tensor, np.ndarray)):
        t = init if isinstance(init, Tensor) else Tensor(init)
        if shape is not None and tuple(t.shape) != tuple(shape):
            raise ValueError(f"initializer: the Tensor has shape {tuple(t.shape)} but shape {tuple(shape)} was asked for")
        return t
    if shape is None:
        raise ValueError("initializer: shape is required unless init is a Tensor")
    shape = (int(shape),) if isinstance(shape, numbers.Integral) else tuple(int(s) for s in shape)
    if any(s < 0 for s in shape):
        raise ValueError(f"initializer: shape {shape} has a negative dimension")
    return Tensor(shape=shape, dtype=dtype, init=as_initializer(init))


def _rank() -> int:
    from .communication import _backend

    return _backend.current_rank()


class Parameter(Tensor):
    """MindSpore's ``Parameter(default_input, name=None, requires_grad=True, layerwise_parallel=False,
    parallel_optimizer=True)``; lazy until its layout is known (see module doc).

    >>> import numpy as np, distinfer as ms
    >>> p = ms.Parameter(ms.Tensor(np.zeros((2, 2), np.float32)), name="w")
    >>> p.set_data(ms.Tensor(np.ones((2, 2), np.float32)))
    Parameter (name=w, shape=(2, 2), dtype=Float32, requires_grad=True)
    >>> p.asnumpy().tolist(), p.global_shape, p.sliced
    ([[1.0, 1.0], [1.0, 1.0]], (2, 2), False)
    """

    def __init__(self, default_input: Any, name: str | None = None, requires_grad: bool = True,
                 layerwise_parallel: bool = False, parallel_optimizer: bool = True, **_: Any) -> None:
        if isinstance(default_input, Tensor):
            src = default_input
        elif isinstance(default_input, numbers.Number):
            src = Tensor(default_input)
        else:
            src = Tensor(np.asarray(default_input))
        self.__dict__.update(src.__dict__)  # data, shape, dtype, initializer: every Tensor field
        # A parameter starts whole on this rank; its first consumer decides its layout.
        self._spec = _WHOLE
        self._name = name
        self.requires_grad = requires_grad
        self.layerwise_parallel = layerwise_parallel
        self.parallel_optimizer = parallel_optimizer
        self.sliced = False
        self.is_init = False
        self.param_info = None
        self._init_now_unless_deferred()

    def _init_now_unless_deferred(self) -> None:
        """Outside (semi-)auto parallel mode MindSpore gives a Parameter its values when it is
        created (drawing from numpy's generator); in those modes they wait for the first run."""
        if self._local is None and self.init is not None and initializes_at_creation():
            self.init_data()

    @property
    def name(self) -> str:
        return self._name if self._name is not None else "Parameter"

    @name.setter
    def name(self, value: str) -> None:
        if not isinstance(value, str) or not value:
            raise ValueError(f"Parameter name must be a non-empty str, got {value!r}")
        self._name = value

    @property
    def shape(self) -> tuple[int, ...]:
        """The local shape once sliced to a layout (MindSpore's behaviour), else the full shape."""
        if self.sliced and self.layout is not None:
            return self.layout.local_shape
        return self._shape

    @property
    def global_shape(self) -> tuple[int, ...]:
        return self._shape

    @property
    def comm_fusion(self) -> int:
        """The gradient-communication fusion group (``Cell.set_comm_fusion``); 1 by default."""
        return self.__dict__.get("_comm_fusion", 1)

    @comm_fusion.setter
    def comm_fusion(self, value: int) -> None:
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"The input value must be int, but got {type(value).__name__!r}")
        if value < 0:
            raise ValueError(f"The input value must be int and must >= 0, but got '{value}' with type 'int'.")
        self._comm_fusion = value

    def _materialize(self, layout: Layout, rank: int) -> None:
        """Adopt ``layout`` and keep only ``rank``'s block (from the initializer or the full data)."""
        if layout.shape != self._shape:
            raise ValueError(f"Parameter {self.name}: layout shape {layout.shape} != parameter shape {self._shape}")
        if self._local is None:
            self._local = self.init.block(self._shape, layout.box(rank), self.init_seed, self._dtype)
        elif self.layout is None:
            self._local = np.array(self._local[layout.block(rank)], order="C")  # keeps 0-d; frees the full
        self._spec = DistSpec(layout)
        self.sliced = not layout.is_replicated or layout.num_devices > 1
        self.is_init = True

    def _set_local(self, local: np.ndarray) -> None:
        """Replace this rank's block in place (optimizer updates)."""
        self._local = local

    def set_data(self, data: Any, slice_shape: bool = False, *, _copy: bool = True) -> "Parameter":
        """Replace the value. A sliced parameter takes either its local block or the full tensor
        (which is then sliced to its layout); anything else is a shape error naming both shapes.

        The parameter keeps a copy of ``data``. ``_copy=False`` (internal, for loaders that hand
        over an array nothing else uses) keeps ``data`` itself when it already has the
        parameter's dtype and is C-contiguous."""
        arr = data.asnumpy() if isinstance(data, Tensor) else np.asarray(data)
        if isinstance(data, Tensor) and data.has_init and not self.sliced:
            self._local, self.init, self.init_seed = None, data.init, data.init_seed
            self._shape, self._dtype = data._shape, data._dtype
            self._init_now_unless_deferred()
            return self
        layout = self.layout
        if self.sliced and layout is not None:
            if tuple(arr.shape) == layout.local_shape:
                local = arr
            elif tuple(arr.shape) == self._shape:
                local = arr[layout.block(_rank())]
            else:
                raise RuntimeError(
                    f"Parameter {self.name}: set_data got shape {tuple(arr.shape)}, expected the local "
                    f"shape {layout.local_shape} or the full shape {self._shape}")
        else:
            if tuple(arr.shape) != self._shape and not slice_shape:
                raise RuntimeError(f"Parameter {self.name}: set_data got shape {tuple(arr.shape)}, "
                                   f"expected {self._shape}")
            local = arr
            self._shape = tuple(arr.shape)
        # np.array / np.asarray keep 0-d (ascontiguousarray makes it 1-d).
        self._local = (np.array if _copy else np.asarray)(local, dtype=self._dtype.np, order="C")
        self.init = None
        return self

    def init_data(self, *args, **kwargs) -> "Parameter":
        super().init_data()
        self.is_init = True
        return self

    def clone(self, init: Any = "same") -> "Parameter":
        """A new Parameter with this one's shape, dtype and layout; ``init='same'`` copies the data."""
        if init == "same":
            new = Parameter(Tensor._make(None if self._local is None else self._local.copy(), self._shape,
                                         None, dtype=self._dtype), name=self._name,
                            requires_grad=self.requires_grad)
            new.init, new.init_seed = self.init, self.init_seed
        else:
            new = Parameter(lazy_tensor(init, self._shape, self._dtype), name=self._name,
                            requires_grad=self.requires_grad)
        if self.layout is not None:
            if new._local is None:
                new._materialize(self.layout, _rank())
            else:
                new._spec, new.sliced = DistSpec(self.layout), self.sliced
        new.parallel_optimizer = self.parallel_optimizer
        return new

    @property
    def data(self) -> Tensor:
        """The parameter's value as a plain Tensor sharing its block (and initializer, if lazy).

        >>> import numpy as np, distinfer as ms
        >>> p = ms.Parameter(ms.Tensor(np.ones(2, np.float32)), name="w")
        >>> type(p.data).__name__, p.data.asnumpy().tolist(), p.value().dtype
        ('Tensor', [1.0, 1.0], Float32)
        """
        view = Tensor.__new__(Tensor)
        view.__dict__.update(self.__dict__)  # the Tensor fields; the Parameter ones are inert on a Tensor
        return view

    def value(self) -> Tensor:
        """MindSpore's ``Parameter.value()``: the same as :attr:`data`."""
        return self.data

    def __repr__(self) -> str:
        return (f"Parameter (name={self.name}, shape={self.shape}, dtype={self._dtype}, "
                f"requires_grad={self.requires_grad})")

    __str__ = __repr__


class ParameterTuple(tuple):
    """A tuple of Parameters (optimizer state); a Cell attribute holding one registers each.

    >>> import numpy as np, distinfer as ms
    >>> params = ms.ParameterTuple([ms.Parameter(ms.Tensor(np.ones(2, np.float32)), name="w")])
    >>> ema = params.clone("ema")  # copies of the data, not trainable
    >>> ema[0].name, ema[0].requires_grad, ema[0].asnumpy().tolist()
    ('ema.w', False, [1.0, 1.0])
    """

    def __new__(cls, iterable=()):
        items = tuple(iterable)
        for p in items:
            if not isinstance(p, Parameter):
                raise TypeError(f"ParameterTuple holds Parameters only, got {type(p).__name__}")
        return super().__new__(cls, items)

    def clone(self, prefix: str, init: Any = "same") -> "ParameterTuple":
        """Clones named ``<prefix>.<name>``, each laid out like its source (MindSpore's optimizer state)."""
        out = []
        for p in self:
            c = p.clone(init)
            c.name = f"{prefix}.{p.name}"
            c.requires_grad = False
            c._clone_of = p
            out.append(c)
        return ParameterTuple(out)
