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

One protocol: :meth:`Primitive.rule` maps a strategy to :class:`OpLayouts`. A strategy is a split
tuple per input or, for ops that keep their input's layout (shape ops), that input's Layout.
:func:`layouts` caches the result per (op, strategy, shapes, devices, constants): a repeated run
pays for a rule once.
"""
from __future__ import annotations

import math
import dataclasses
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np

from ..errors import StrategyError
from ..layout import Layout, replicated
from . import registry

__all__ = ["Primitive", "FollowsInput", "OpLayouts", "Dims", "build", "check_strategy", "apply_rule", "layouts", "batch_split",
           "user_input_layouts", "Arranged"]

# A rule's description of one tensor: per dim, the raw device position splitting it (-1: none,
# a tuple: several positions, outermost first).
Dims = Sequence[Any]

# Set by distinfer.parallel._executor at import: runs a primitive on Tensors.
_EXECUTE: Callable[..., Any] | None = None


@dataclass(frozen=True)
class OpLayouts:
    """What a rule decided: device matrix, required input layouts, output layouts and partial axes.

    >>> from distinfer import ops
    >>> from distinfer.ops.primitive import apply_rule
    >>> lay = apply_rule(ops.MatMul(), ((2, 2), (2, 1)), [(4, 6), (6, 3)], [(4, 3)], 8, {})
    >>> lay.dev_matrix, lay.outputs[0].tensor_map, lay.partial  # k split: output partial over position 1
    ((2, 2, 1, 2), (3, 1), ((1,),))
    """

    dev_matrix: tuple[int, ...]
    inputs: tuple[Layout | None, ...]
    outputs: tuple[Layout, ...]
    partial: tuple[tuple[int, ...], ...] = ()  # per output, dev positions
    partial_op: str = "sum"
    final: tuple[Layout, ...] | None = None  # output layouts to reduce/redistribute to at once (out_strategy)


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

    ins = tuple(None if d is None else Layout.from_axes(dev, positions(d), s) for d, s in zip(in_dims, in_shapes))
    outs = tuple(Layout.from_axes(dev, positions(d), s) for d, s in zip(out_dims, out_shapes))
    parts = tuple(tuple(p + shift for p in ps) for ps in partial) or tuple(() for _ in outs)
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


def _frozen(value: Any) -> Any:
    """A hashable stand-in for a rule's constant argument (``TypeError`` when there is none)."""
    if isinstance(value, (int, float, str, type(None))):
        return value
    if isinstance(value, (list, tuple)):
        return tuple(_frozen(v) for v in value)
    if hasattr(value, "asnumpy") or isinstance(value, np.ndarray):  # a shape or value given as a tensor
        arr = np.asarray(value.asnumpy() if hasattr(value, "asnumpy") else value)
        if arr.size > 64:
            raise TypeError("large array constant")
        return ("array", arr.dtype.str, arr.shape, arr.tobytes())
    hash(value)
    return value


def layouts(prim: "Primitive", strategy: Any, shapes: Sequence[Sequence[int]], out_shapes: Sequence[Sequence[int]],
            n: int, consts: dict) -> tuple[Any, OpLayouts]:
    """``(strategy, layouts)`` of ``prim`` for ``strategy`` (split tuples, checked here by
    :func:`check_strategy` and returned as tuples; or the input's Layout for an op that follows
    it), cached on the primitive per strategy, shapes, device count and constants (the cache is
    cleared by :meth:`Primitive.shard`).

    >>> from distinfer import ops
    >>> mm = ops.MatMul()
    >>> s, a = layouts(mm, [[2, 1], [1, 2]], [(4, 6), (6, 4)], [(4, 4)], 4, {})
    >>> s, a is layouts(mm, ((2, 1), (1, 2)), [(4, 6), (6, 4)], [(4, 4)], 4, {})[1], a.outputs[0].tensor_map
    (((2, 1), (1, 2)), True, (2, 0))
    """
    try:
        # Constants by value (a tensor or array constant, e.g. a shape, is frozen to its bytes).
        key = (strategy if isinstance(strategy, (tuple, Layout)) else _frozen(strategy), tuple(map(tuple, shapes)),
               tuple(map(tuple, out_shapes)), n, tuple((i, _frozen(v)) for i, v in consts.items()))
        hit = prim._rules.get(key)
    except TypeError:  # an unhashable constant: no caching for this call
        return _checked_rule(prim, strategy, shapes, out_shapes, n, consts)
    if hit is None:
        hit = prim._rules[key] = _checked_rule(prim, strategy, shapes, out_shapes, n, consts)
    return hit


@dataclass(frozen=True)
class Arranged:
    """A split strategy run over another arrangement of the devices: the rule's layouts with each of
    its device axes (the repeat axis included) replaced by the axes of ``dev_matrix`` listed for it
    in ``axes`` (outermost first; none for a size-1 axis). Every tensor of the op moves the same
    way, so each rank still holds matching blocks: the op computes the same, on other ranks.
    Sharding propagation uses it to run an op in a neighbour's device arrangement (MindSpore's
    strategies "under the neighbour's device matrix"); strategy files record ``strategy``.

    >>> from distinfer import ops
    >>> lay = apply_rule(ops.ReLU(), ((2, 1),), [(4, 6)], [(4, 6)], 4, {})  # rows by axis 0 of [2, 1, 2]
    >>> Arranged(((2, 1),), (2, 2), ((1,), (), (0,))).apply(lay).inputs[0].tensor_map  # rows by the last axis
    (0, -1)
    """

    strategy: tuple
    dev_matrix: tuple[int, ...]
    axes: tuple[tuple[int, ...], ...]

    def apply(self, lay: OpLayouts) -> OpLayouts:
        if len(self.axes) != len(lay.dev_matrix) or any(
                math.prod(self.dev_matrix[a] for a in group) != size for group, size in zip(self.axes, lay.dev_matrix)):
            raise StrategyError(f"the arrangement {self.axes} of {list(self.dev_matrix)} does not cover the device "
                                f"matrix {list(lay.dev_matrix)} of strategy {self.strategy}")

        def move(layout: Layout) -> Layout:
            dims = [tuple(a for q in layout.dim_axes(d) for a in self.axes[q]) for d in range(layout.ndim)]
            return Layout.from_axes(self.dev_matrix, [d if d else -1 for d in dims], layout.shape)

        def moved(layouts):
            return None if layouts is None else tuple(None if L is None else move(L) for L in layouts)

        partial = tuple(tuple(a for q in axes for a in self.axes[q]) for axes in lay.partial)
        return OpLayouts(self.dev_matrix, moved(lay.inputs), moved(lay.outputs), partial, lay.partial_op,
                         moved(lay.final))


def _checked_rule(prim, strategy, shapes, out_shapes, n, consts) -> tuple[Any, OpLayouts]:
    if isinstance(strategy, Arranged):
        inner, lay = _checked_rule(prim, strategy.strategy, shapes, out_shapes, n, consts)
        return dataclasses.replace(strategy, strategy=inner), strategy.apply(lay)
    if not isinstance(strategy, Layout):
        strategy = check_strategy(prim.name, strategy, shapes, n)
    lay = apply_rule(prim, strategy, shapes, list(out_shapes), n, consts)
    if prim.out_layouts is not None:  # the user's output Layouts: outputs are moved there at once
        lay = dataclasses.replace(lay, final=tuple(_user_layout(prim, "output", i, u, s, n)
                                                   for i, (u, s) in enumerate(zip(prim.out_layouts, out_shapes))))
    return strategy, lay


def _user_layout(prim, what: str, i: int, user: Any, shape: Sequence[int], n: int) -> Layout:
    """The block layout a user's ``distinfer.Layout`` gives tensor ``i`` of ``shape``."""
    lay = user.to_layout(tuple(shape))
    if lay.num_devices != n:
        raise StrategyError(f"{prim.name}.shard: {what} {i}'s {user} covers {lay.num_devices} devices, but the stage "
                            f"has {n}")
    return lay


def user_input_layouts(prim, shapes: Sequence[Sequence[int]], n: int) -> list[Layout]:
    """The block layouts of ``prim``'s inputs as given by ``.shard()`` with Layouts.

    >>> import distinfer as ms
    >>> lay = ms.Layout((2, 2), ("dp", "mp"))
    >>> mm = ms.ops.MatMul().shard((lay("mp", "None"), lay("None", "dp")))
    >>> [L.tensor_map for L in user_input_layouts(mm, [(4, 6), (6, 8)], 4)]
    [(0, -1), (-1, 1)]
    """
    return [_user_layout(prim, "input", i, u, s, n) for i, (u, s) in enumerate(zip(prim.in_layouts, shapes))]


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


def _has_layouts(op: str, label: str, strategy: Any) -> bool:
    """True when ``strategy`` is given as Layouts (all of them; a mix is an error)."""
    if not (isinstance(strategy, (tuple, list)) and strategy and any(_is_layout(s) for s in strategy)):
        return False
    if not all(_is_layout(s) for s in strategy):
        raise StrategyError(f"{op}.shard: {label} mixes Layouts and split tuples: {strategy!r}")
    return True


class Primitive:
    """Base of every op: ``.shard()``, attributes, and calling on Tensors.

    Subclasses set ``tensor_args`` (positions of tensor arguments; the others are constants) and
    implement :meth:`infer`, :meth:`rule` and :meth:`kernel` (and :meth:`bprop` for training).
    Strategies apply only in semi-auto and auto parallel modes; otherwise the op runs on the local data.

    A public subclass defined in ``distinfer.ops`` is an op: it registers itself in
    :mod:`distinfer.ops.registry` and declares its other facts as class attributes (``ms_aliases``,
    ``mindir``, ``amp``, ``onnx_op`` / ``to_onnx`` / ``onnx_refusal``).

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
    #: How MindSpore 2.10 writes the op in a MindIR file (a :class:`~distinfer.ops.mindspore_form.MsOp`:
    #: primitive name, constant node inputs, attributes); None: the op cannot be exported to MindIR.
    mindir: Any = None
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
    _BOOKKEEPING = frozenset({"name", "in_strategy", "out_strategy", "in_layouts", "out_layouts", "attrs",
                              "instance_name"})

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if not cls.__name__.startswith("_") and cls.__module__.startswith(__package__ + "."):
            registry.register(cls)

    def __init__(self, name: str | None = None) -> None:
        self.name = name or type(self).__name__
        self.in_strategy: tuple | None = None
        self.out_strategy: tuple | None = None
        self.in_layouts: tuple | None = None  # the Layouts in_strategy was given as, if it was
        self.out_layouts: tuple | None = None  # the Layouts out_strategy was given as, if it was
        self.attrs: dict[str, Any] = {}
        self.instance_name = ""
        self._rules: dict = {}  # layouts() cache: (strategy, shapes, out shapes, n, consts) -> OpLayouts

    def shard(self, in_strategy=None, out_strategy=None, **kwargs) -> "Primitive":
        """Set the input (and optionally output) strategy; returns the primitive for chaining.

        ``in_strategy`` is a split tuple per input, or a :class:`distinfer.Layout` per tensor input
        (not both): the op then takes the split counts of the Layouts, its parameters are laid out
        as the Layouts say, and inputs whose Layout places blocks differently from the op's rule are
        redistributed to the rule's layout before the kernel runs. ``out_strategy`` given as Layouts
        is where the outputs go once computed.
        """
        self.in_layouts = self.out_layouts = None
        if _has_layouts(self.name, "in_strategy", in_strategy):
            self.in_layouts = tuple(in_strategy)
            in_strategy = tuple(s.splits() for s in in_strategy)
        if _has_layouts(self.name, "out_strategy", out_strategy):
            self.out_layouts, out_strategy = tuple(out_strategy), None
        for label, s in (("in_strategy", in_strategy), ("out_strategy", out_strategy)):
            if s is not None and not _is_strategy_tuple(s):
                raise StrategyError(f"{self.name}.shard: {label} must be a tuple of tuples of ints such as "
                                    f"((2, 1), (1, 2)), got {s!r}")
        self.in_strategy = None if in_strategy is None else tuple(tuple(x) for x in in_strategy)
        self.out_strategy = None if out_strategy is None else tuple(tuple(x) for x in out_strategy)
        self.attrs["in_strategy"] = self.in_strategy
        self._rules = {}
        return self

    def add_prim_attr(self, name: str, value: Any) -> "Primitive":
        self.attrs[name] = value
        self._rules = {}
        return self

    def del_prim_attr(self, name: str) -> "Primitive":
        self.attrs.pop(name, None)
        self._rules = {}
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
        {'transpose_a': False, 'transpose_b': True}
        """
        return {k: v for k, v in vars(self).items() if k not in self._BOOKKEEPING and not k.startswith("_")}

    # ------------------------------------------------------------ per-op definitions
    def infer(self, shapes: list[tuple[int, ...]], dtypes: list, consts: dict) -> list[tuple[tuple[int, ...], Any]]:
        """Output ``(shape, dtype)`` list from input shapes/dtypes; raises on bad shapes."""
        raise NotImplementedError(self.name)

    def default_strategy(self, shapes: list[tuple[int, ...]], n: int, consts: dict) -> tuple:
        """MindSpore's batch-parallel strategy: dim 0 of every input split by the device count."""
        return tuple(tuple([batch_split(s[0], n)] + [1] * (len(s) - 1)) if s else () for s in shapes)

    def strategy_for(self, shapes: list[tuple[int, ...]], n: int, consts: dict,
                     current: Sequence[Layout | None]) -> Any:
        """The strategy of a call without ``.shard()`` or a loaded one, given the inputs' current
        layouts: MindSpore's default (:meth:`default_strategy`) here; ops that keep their input's
        layout return that Layout."""
        return self.default_strategy(shapes, n, consts)

    def rule(self, strategy: Any, shapes: list, out_shapes: list, n: int, consts: dict) -> OpLayouts:
        """Layouts for ``strategy``; raises :class:`StrategyError` naming op, strategy, shapes and n."""
        raise NotImplementedError(self.name)

    def kernel(self, ctx: "KernelContext", *xs: np.ndarray) -> Any:
        """Local computation on local blocks; returns one array or a tuple."""
        raise NotImplementedError(self.name)

    def bprop(self, ctx: "KernelContext", xs: list, out: Any, douts: list) -> list:
        """Local vector-Jacobian product: gradients of the local input blocks (None: no gradient)."""
        raise NotImplementedError(f"{self.name} has no gradient")

    follows_input = False  # shape ops keep their input's layout (their strategy is that Layout)


class FollowsInput:
    """Mixin (listed before :class:`Primitive`) for ops that keep their input's layout: without
    ``.shard()`` their strategy is the Layout input 0 arrives in, and :meth:`follow` says which
    layout the input must have and which the output gets."""

    follows_input = True

    def strategy_for(self, shapes, n, consts, current):
        return current[0] if current[0] is not None else replicated(tuple(shapes[0]), n)

    def rule(self, strategy, shapes, out_shapes, n, consts) -> OpLayouts:
        if not isinstance(strategy, Layout):
            return super().rule(strategy, shapes, out_shapes, n, consts)
        required, out = self.follow(strategy, tuple(out_shapes[0]), consts)
        return OpLayouts(required.dev_matrix, (required,), (out,), ((),))

    def follow(self, layout: Layout, out_shape: tuple[int, ...], consts: dict) -> tuple[Layout, Layout]:
        """(layout the input must have, layout of the output) when the input arrives as ``layout``."""
        raise NotImplementedError(type(self).__name__)


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
