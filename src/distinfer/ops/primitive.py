"""``Primitive``: an op with a ``.shard()`` strategy, a layout rule and a local numpy kernel.

A strategy says how many pieces each input dim is cut into (MindSpore's ``in_strategy``). An
op's *layout rule* turns it into a device matrix and tensor maps (spec §4.2):

* the raw device matrix comes from the strategy (for MatMul ``((a, b), (b, c))`` it is
  ``[a, b, c]``);
* if it uses fewer than the stage's devices, the repeat count is appended on the RIGHT (on the
  left for the few ops MindSpore treats that way);
* tensor maps count device axes from the right; the recorded form drops size-1 axes.

Rules are written in *device-axis positions* (indices into the raw matrix), which stay valid
whether the repeat axis is appended on the right or the left; :func:`build` converts them to
:class:`~distinfer.layout.Layout` objects. A split contraction dimension leaves its output as a
partial sum over that axis, which the executor reduces before anyone reads it.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np

from ..errors import StrategyError
from ..layout import Layout
from . import registry

__all__ = ["Primitive", "OpLayouts", "Dims", "build", "check_strategy", "apply_rule", "batch_split"]

# A rule's description of one tensor: per dim, the raw device position splitting it (-1: none,
# a tuple: several positions, outermost first).
Dims = Sequence[Any]

# Set by distinfer.parallel._executor at import: runs a primitive on Tensors.
_EXECUTE: Callable[..., Any] | None = None


@dataclass
class OpLayouts:
    """What a rule decided: device matrix, required input layouts, output layouts and partial axes.

    >>> from distinfer import ops
    >>> from distinfer.ops.primitive import apply_rule
    >>> lay = apply_rule(ops.MatMul(), ((2, 2), (2, 1)), [(4, 6), (6, 3)], [(4, 3)], 8, {})
    >>> lay.dev_matrix, lay.outputs[0].tensor_map, lay.partial  # k split: output partial over position 1
    ((2, 2, 1, 2), (3, 1), [(1,)])
    """

    dev_matrix: tuple[int, ...]
    inputs: list[Layout | None]
    outputs: list[Layout]
    partial: list[tuple[int, ...]] = field(default_factory=list)  # per output, dev positions
    partial_op: str = "sum"
    final: list | None = None  # output layouts to reduce/redistribute to at once (out_strategy)


def build(n: int, dev_raw: Sequence[int], in_dims: Sequence[Dims | None], in_shapes: Sequence[Sequence[int] | None],
          out_dims: Sequence[Dims], out_shapes: Sequence[Sequence[int]], partial: Sequence[Sequence[int]] = (),
          repeat_left: bool = False, partial_op: str = "sum", op: str = "op") -> OpLayouts:
    """Layouts over ``n`` devices from raw device positions (see module doc).

    Here MatMul's ``[a, k, c] = [2, 2, 1]`` on 8 devices: the repeat count 2 is appended on the right.

    >>> from distinfer.ops.primitive import build
    >>> lay = build(8, [2, 2, 1], [[0, 1], [1, 2]], [(4, 6), (6, 3)], [[0, 2]], [(4, 3)], partial=[[1]])
    >>> lay.dev_matrix, [x.tensor_map for x in lay.inputs], lay.outputs[0].local_shape
    ((2, 2, 1, 2), [(3, 2), (2, 1)], (2, 3))
    """
    used = math.prod(dev_raw)
    if used > n or n % used:
        raise StrategyError(f"{op}: the strategy uses {used} devices (device matrix {list(dev_raw)}), which "
                            f"{'exceeds' if used > n else 'does not divide'} the {n} devices of the stage")
    repeat = n // used
    dev = tuple(dev_raw) + ((repeat,) if repeat > 1 and not repeat_left else ())
    shift = 1 if repeat > 1 and repeat_left else 0
    if shift:
        dev = (repeat,) + dev

    def positions(dims: Dims) -> list:
        return [tuple(q + shift for q in p if q != -1) if isinstance(p, tuple) else (-1 if p == -1 else p + shift)
                for p in dims]

    ins = [None if d is None else Layout.from_axes(dev, positions(d), s) for d, s in zip(in_dims, in_shapes)]
    outs = [Layout.from_axes(dev, positions(d), s) for d, s in zip(out_dims, out_shapes)]
    parts = [tuple(p + shift for p in ps) for ps in partial] or [() for _ in outs]
    return OpLayouts(dev, ins, outs, parts, partial_op)


def check_strategy(op: str, strategy: Any, shapes: Sequence[Sequence[int] | None], n: int) -> tuple:
    """Validate a strategy's form against the input shapes; return it as a tuple of tuples.

    >>> from distinfer.ops.primitive import check_strategy
    >>> check_strategy("MatMul", [[2, 1], [1, 1]], [(4, 3), (3, 5)], 2)
    ((2, 1), (1, 1))
    >>> check_strategy("MatMul", ((3, 1), (1, 1)), [(4, 3), (3, 5)], 4)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    distinfer.errors.StrategyError: MatMul: axis 0 of input 0 with shape (4, 3) is split 3 ways, but 4 is not ...
    """
    tensor_shapes = [s for s in shapes]
    if not isinstance(strategy, (tuple, list)) or len(strategy) != len(tensor_shapes):
        raise StrategyError(f"{op}: the strategy {strategy} must have one tuple per input ({len(tensor_shapes)} "
                            f"inputs of shapes {[tuple(s) if s is not None else None for s in tensor_shapes]}, "
                            f"{n} devices)")
    out = []
    for i, (s, shape) in enumerate(zip(strategy, tensor_shapes)):
        s = tuple(s) if isinstance(s, (tuple, list)) else s
        if not isinstance(s, tuple) or not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool)
                                              and v >= 1 for v in s):
            raise StrategyError(f"{op}: input {i}'s strategy {s} must be a tuple of positive ints "
                                f"(strategy {strategy}, shapes {[tuple(x) for x in tensor_shapes]}, {n} devices)")
        if len(s) != len(shape):
            raise StrategyError(f"{op}: input {i} has shape {tuple(shape)} ({len(shape)} dims) but its strategy "
                                f"{s} has {len(s)} entries (strategy {strategy}, {n} devices)")
        for d, (v, size) in enumerate(zip(s, shape)):
            if size % v:
                raise StrategyError(f"{op}: axis {d} of input {i} with shape {tuple(shape)} is split {v} ways, but "
                                    f"{size} is not divisible by {v} (strategy {strategy}, {n} devices)")
        if math.prod(s) > n:
            raise StrategyError(f"{op}: input {i}'s strategy {s} uses {math.prod(s)} devices, more than the "
                                f"{n} devices (strategy {strategy}, shapes {[tuple(x) for x in tensor_shapes]})")
        out.append(tuple(int(v) for v in s))
    return tuple(out)


def apply_rule(prim: "Primitive", strategy: tuple, shapes: Sequence[Sequence[int]], out_shapes: list, n: int,
               consts: dict) -> OpLayouts:
    """``prim.rule(...)``, with every :class:`StrategyError` naming the strategy, the shapes and ``n``.

    Some checks (e.g. the device matrix :func:`build` derives exceeding the stage) only see the
    derived matrix; this adds what the user typed to their message.

    >>> from distinfer import ops
    >>> from distinfer.errors import StrategyError
    >>> from distinfer.ops.primitive import apply_rule
    >>> try:
    ...     apply_rule(ops.MatMul(), ((2, 2), (2, 2)), [(4, 6), (6, 4)], [(4, 4)], 4, {})
    ... except StrategyError as e:
    ...     print(e)  # doctest: +ELLIPSIS
    MatMul: the strategy uses 8 devices ... (strategy ((2, 2), (2, 2)), input shapes [(4, 6), (6, 4)], 4 devices)
    """
    try:
        return prim.rule(strategy, shapes, out_shapes, n, consts)
    except StrategyError as exc:
        msg = str(exc)
        if f"strategy {strategy}" in msg and f"{n} devices" in msg:
            raise
        shown = [tuple(s) if s is not None else None for s in shapes]
        raise StrategyError(f"{msg} (strategy {strategy}, input shapes {shown}, {n} devices)") from None


def batch_split(dim0: int, n: int) -> int:
    """MindSpore's batch-parallel split of dim 0 by the device count: ``gcd(dim0, devices)`` when the
    device count does not divide it, as MindSpore's ``GenerateBatchStrategiesWithCheck`` does.

    >>> batch_split(32, 8), batch_split(12, 8), batch_split(1, 8)
    (8, 4, 1)
    """
    return math.gcd(int(dim0), n) if dim0 else 1


def _is_strategy_tuple(s: Any) -> bool:
    return isinstance(s, (tuple, list)) and all(isinstance(x, (tuple, list)) for x in s)


def _is_layout(x: Any) -> bool:
    """A ``distinfer.Layout`` with its tensor map set (duck-typed: that class lives a floor above)."""
    return hasattr(x, "splits") and hasattr(x, "to_layout")


class Primitive:
    """Base of every op: ``.shard()``, attributes, and calling on Tensors.

    Subclasses set ``tensor_args`` (positions of tensor arguments; the others are constants) and
    implement :meth:`infer`, :meth:`rule` and :meth:`kernel` (and :meth:`bprop` for training).
    Strategies apply only in semi-auto and auto parallel modes; otherwise the op runs on the local data.

    A public subclass defined in ``distinfer.ops`` is an op: it registers itself in
    :mod:`distinfer.ops.registry` and declares its other facts as class attributes (``ms_aliases``,
    ``mindir_inputs``, ``amp``, ``onnx_op`` / ``to_onnx`` / ``onnx_refusal``).

    >>> import numpy as np, distinfer as ms
    >>> mm = ms.ops.MatMul().shard(((2, 1), (1, 1)))
    >>> mm
    Prim[MatMul], in_strategy=((2, 1), (1, 1))
    >>> mm(ms.Tensor(np.ones((2, 3), np.float32)), ms.Tensor(np.ones((3, 1), np.float32))).asnumpy().tolist()
    [[3.0], [3.0]]
    """

    tensor_args: tuple[int, ...] | None = None  # None: every argument is a tensor
    repeat_left = False

    # ------------------------------------------------------------ registry facts (see ops/registry.py)
    #: Other names MindSpore gives this op in MindIR files (its class name is always one).
    ms_aliases: tuple[str, ...] = ()
    #: Constructor arguments MindSpore 2.x writes as node inputs after the call's own arguments:
    #: ``(input position, attribute)`` pairs, e.g. MatMul's ``((2, "transpose_a"), (3, "transpose_b"))``.
    mindir_inputs: tuple[tuple[int, str], ...] = ()
    #: The MindSpore amp list the op is on: "white" runs it in float16 under ``amp_level="O1"``.
    amp: str | None = None
    #: The ONNX operator computing the op from the call's arguments in order, with no attributes.
    onnx_op: str | None = None
    #: ``to_onnx(self, g)``, for any other ONNX form: emits nodes into ``g``, the ONNX writer's view
    #: of one traced call (:class:`distinfer.exporter.onnx_writer.OnnxNode`), writing ``g.outputs``.
    to_onnx: Callable[[Primitive, Any], None] | None = None
    #: Why the op has no ONNX form (the ONNX writer raises with this reason).
    onnx_refusal: str | None = None
    # Instance attributes that are bookkeeping, not attributes of the op itself.
    _BOOKKEEPING = frozenset({"name", "in_strategy", "out_strategy", "attrs", "instance_name"})

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if not cls.__name__.startswith("_") and cls.__module__.startswith(__package__ + "."):
            registry.register(cls)

    def __init__(self, name: str | None = None) -> None:
        self.name = name or type(self).__name__
        self.in_strategy: tuple | None = None
        self.out_strategy: tuple | None = None
        self.in_layouts: tuple | None = None  # the Layouts in_strategy was given as, if it was
        self.attrs: dict[str, Any] = {}
        self.instance_name = ""

    def shard(self, in_strategy=None, out_strategy=None, **kwargs) -> "Primitive":
        """Set the input (and optionally output) strategy; returns the primitive for chaining.

        ``in_strategy`` is a split tuple per input, or a :class:`distinfer.Layout` per tensor input
        (not both): the op then takes the split counts of the Layouts, and checks when it runs that
        they give every rank the block those split counts do.
        """
        self.in_layouts = None
        if isinstance(in_strategy, (tuple, list)) and in_strategy and any(_is_layout(s) for s in in_strategy):
            if not all(_is_layout(s) for s in in_strategy):
                raise StrategyError(f"{self.name}.shard: in_strategy mixes Layouts and split tuples: {in_strategy!r}")
            if out_strategy is not None:
                raise NotImplementedError(f"{self.name}.shard: out_strategy with Layouts is not supported by distinfer")
            self.in_layouts = tuple(in_strategy)
            in_strategy = tuple(s.splits() for s in in_strategy)
        for label, s in (("in_strategy", in_strategy), ("out_strategy", out_strategy)):
            if s is not None and not _is_strategy_tuple(s):
                raise StrategyError(f"{self.name}.shard: {label} must be a tuple of tuples of ints such as "
                                    f"((2, 1), (1, 2)), got {s!r}")
        self.in_strategy = None if in_strategy is None else tuple(tuple(x) for x in in_strategy)
        self.out_strategy = None if out_strategy is None else tuple(tuple(x) for x in out_strategy)
        self.attrs["in_strategy"] = self.in_strategy
        return self

    def add_prim_attr(self, name: str, value: Any) -> "Primitive":
        self.attrs[name] = value
        return self

    def del_prim_attr(self, name: str) -> "Primitive":
        self.attrs.pop(name, None)
        return self

    def set_prim_instance_name(self, name: str) -> "Primitive":
        self.instance_name = name
        return self

    def __call__(self, *args: Any) -> Any:
        return _EXECUTE(self, args)

    def __repr__(self) -> str:
        shard = f", in_strategy={self.in_strategy}" if self.in_strategy else ""
        return f"Prim[{self.name}]{shard}"

    def op_attrs(self) -> dict[str, Any]:
        """The op's own attributes (what MindIR files record for it), without the bookkeeping.

        >>> from distinfer import ops
        >>> ops.MatMul(transpose_b=True).shard(((2, 1), (1, 1))).op_attrs()
        {'in_layouts': None, 'transpose_a': False, 'transpose_b': True}
        """
        return {k: v for k, v in vars(self).items() if k not in self._BOOKKEEPING and not k.startswith("_")}

    # ------------------------------------------------------------ per-op definitions
    def infer(self, shapes: list[tuple[int, ...]], dtypes: list, consts: dict) -> list[tuple[tuple[int, ...], Any]]:
        """Output ``(shape, dtype)`` list from input shapes/dtypes; raises on bad shapes."""
        raise NotImplementedError(self.name)

    def default_strategy(self, shapes: list[tuple[int, ...]], n: int, consts: dict) -> tuple:
        """MindSpore's batch-parallel strategy: dim 0 of every input split by the device count."""
        return tuple(tuple([batch_split(s[0], n)] + [1] * (len(s) - 1)) if s else () for s in shapes)

    def rule(self, strategy: tuple, shapes: list, out_shapes: list, n: int, consts: dict) -> OpLayouts:
        """Layouts for ``strategy``; raises :class:`StrategyError` naming op, strategy, shapes and n."""
        raise NotImplementedError(self.name)

    def kernel(self, ctx: "KernelContext", *xs: np.ndarray) -> Any:
        """Local computation on local blocks; returns one array or a tuple."""
        raise NotImplementedError(self.name)

    def bprop(self, ctx: "KernelContext", xs: list, out: Any, douts: list) -> list:
        """Local vector-Jacobian product: gradients of the local input blocks (None: no gradient)."""
        raise NotImplementedError(f"{self.name} has no gradient")

    follows_input = False  # shape ops keep their input's layout instead of taking a strategy


@dataclass
class KernelContext:
    """What a local kernel may need beyond its arrays: constants and the global boxes of its blocks."""

    consts: dict
    in_boxes: list  # per tensor input: ((start, stop), ...) of the local block in the global tensor
    out_boxes: list
    in_shapes: list  # global shapes
    out_shapes: list
    out_dtypes: list
    layouts: OpLayouts | None = None
    saved: dict = field(default_factory=dict)
