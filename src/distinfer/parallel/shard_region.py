"""``Cell.shard`` and ``ms.shard`` (``mindspore.parallel.shard``): layouts at the boundary of a
cell or function; the ops inside without a strategy of their own are derived by sharding
propagation.

A :class:`ShardRegion` holds what was asked: a layout per input (``in_strategy``: split tuples
or ``ms.Layout`` objects; ``None`` leaves an input as it comes), per output (``out_strategy``)
and per named parameter (``parameter_plan``). A call of the region moves each input to its
layout with a :class:`Reshard` op, runs the body, and moves the outputs; the Reshard ops are
configured ops for propagation, so the ops they feed take matching strategies. In
semi_auto_parallel a region is a graph of its own (only the ops inside are propagated); in
auto_parallel it is part of the enclosing graph. In other parallel modes the body runs as it is.

The argument checks are MindSpore's (TypeError for a wrong type, ValueError for a parameter
strategy that does not fit its parameter), as are the warnings for parameters it ignores.

>>> import numpy as np, distinfer as ms
>>> ms.set_auto_parallel_context(parallel_mode="semi_auto_parallel", device_num=4, full_batch=True)
>>> add = ms.shard(ms.ops.add, in_strategy=((4, 1), (4, 1)))
>>> x = ms.Tensor(np.ones((8, 2), np.float32))
>>> with ms.parallel._executor.abstract():  # a layout-only run needs no MPI
...     y = add(x, x)
>>> y.shape, y.layout.splits
((8, 2), (4, 1))
>>> ms.reset_auto_parallel_context()
"""
from __future__ import annotations

import logging
import weakref
from typing import Any, Callable, Sequence

from .. import context
from ..layout import Layout
from ..ops.primitive import FollowsInput, Primitive
from ..tensor import Parameter, Tensor
from . import _executor as ex
from . import propagation
from .shard_layout import Layout as UserLayout

log = logging.getLogger(__name__)

__all__ = ["shard", "shard_cell", "ShardRegion", "Reshard"]


class Reshard(FollowsInput, Primitive):
    """Moves its input to a fixed layout: ``strategy`` is a split tuple or an ``ms.Layout``
    (``what`` names it in errors: ``"in_strategy"`` entry 0, ...)."""

    tensor_args = (0,)
    pins_layout = True  # for propagation: a configured op whatever arrives

    def __init__(self, strategy: Any, what: str = "in_strategy", index: int = 0) -> None:
        super().__init__("Reshard")
        self.target, self.what, self.index = strategy, what, index

    def layout_for(self, shape: tuple[int, ...], n: int) -> Layout:
        """The block layout of a tensor of ``shape`` over ``n`` devices."""
        if isinstance(self.target, UserLayout):
            layout = self.target.to_layout(shape)
            if layout.num_devices != n:
                raise RuntimeError(f"For 'Shard', {self.what}[{self.index}] {self.target} covers {layout.num_devices} "
                                   f"devices, but the stage has {n}")
            return layout
        splits = tuple(self.target)
        if len(splits) != len(shape):
            raise RuntimeError(f"For 'Shard', input dimension: {len(shape)} is not equal to {self.what} dimension: "
                               f"{len(splits)} at index {self.index} (shape {shape}, strategy {splits})")
        used = 1
        for v in splits:
            used *= v
        if used > n or n % used:
            raise RuntimeError(f"For 'Shard', {self.what}[{self.index}] {splits} requires {used} devices, which "
                               f"{'exceeds' if used > n else 'does not divide'} the {n} devices of the stage")
        for d, (v, size) in enumerate(zip(splits, shape)):
            if v < 1 or size % v:
                raise RuntimeError(f"For 'Shard', {self.what}[{self.index}] {splits} splits axis {d} of shape {shape} "
                                   f"{v} ways, but {size} is not divisible by {v}")
        return Layout.from_splits(splits, shape, n)

    def infer(self, shapes, dtypes, consts):
        return [(tuple(shapes[0]), dtypes[0])]

    def follow(self, layout, out_shape, consts):
        target = self.layout_for(tuple(out_shape), layout.num_devices)
        return target, target

    def kernel(self, ctx, x):
        return x

    def bprop(self, ctx, xs, out, douts):
        return [douts[0]]


# ------------------------------------------------------------------------ argument checks
def _strategy_kind(strategy: tuple, label: str) -> str | None:
    """MindSpore's check of in_strategy/out_strategy items: all split tuples of ints or all
    Layouts (``None`` entries aside); returns "tuple", "layout" or None (all None)."""
    kinds = set()
    for s in strategy:
        if s is None:
            continue
        if isinstance(s, UserLayout):
            s.to_dict()  # a Layout without its tensor map is a ValueError here, as in MindSpore
            kinds.add("layout")
        elif isinstance(s, tuple):
            if not all(isinstance(x, int) and not isinstance(x, bool) for x in s):
                raise TypeError("The tuple strategy for each dimension should be tuple(int).")
            kinds.add("tuple")
        else:
            raise TypeError(f"The '{label}' should be a tuple(tuple(int)) or tuple(mindspore.parallel.Layout), "
                            f"but got {type(s).__name__}")
    if len(kinds) > 1:
        raise TypeError("For 'Shard', the strategy can only pass in consistent type for all dimensions.")
    return kinds.pop() if kinds else None


def _check_args(in_strategy, out_strategy, device, level) -> None:
    if not isinstance(in_strategy, tuple):
        raise TypeError(f"For 'Shard', the 'in_strategy' should be a tuple, but got {type(in_strategy).__name__}.")
    _strategy_kind(in_strategy, "in_strategy")
    if not isinstance(out_strategy, (type(None), tuple)):
        raise TypeError(f"For 'Shard', the 'out_strategy' should be None or tuple, but got "
                        f"{type(out_strategy).__name__}.")
    if out_strategy is not None:
        _strategy_kind(out_strategy, "out_strategy")
    if not isinstance(device, str):
        raise TypeError(f"For 'Shard', the 'device' should be a string, but got {type(device).__name__}")
    if isinstance(level, bool) or not isinstance(level, int):
        raise TypeError(f"For 'Shard', the 'level' should be an integer, but got {type(level).__name__}")


# The parameter_plan entry already given to each parameter (MindSpore keeps the first).
_PINNED: "weakref.WeakKeyDictionary[Parameter, Any]" = weakref.WeakKeyDictionary()


def _parameter_plan(fn, parameter_plan) -> dict[Parameter, Any]:
    """``{Parameter: strategy}`` for ``parameter_plan`` (names as ``self.block.dense.weight``)."""
    if parameter_plan is None:
        return {}
    if not isinstance(parameter_plan, dict):
        raise TypeError(f"For 'Shard', the 'parameter_plan' should be a dict or None, but got "
                        f"{type(parameter_plan).__name__}")
    if not _is_cell(fn):
        raise TypeError(f"If parameter_plan is set, type of fn must be mindspore.nn.Cell, but got {type(fn)}")
    for k, v in parameter_plan.items():
        if not isinstance(k, str) or not isinstance(v, (tuple, UserLayout)):
            raise TypeError(f"For 'Shard', the type of each key and value in 'parameter_plan' must be str and "
                            f"tuple/Layout, but got {type(k).__name__} and {type(v).__name__}")
    by_name = {p.name: p for p in fn.trainable_params()}
    out = {}
    for name, strategy in parameter_plan.items():
        param = by_name.get(name.replace("self.", ""))
        if param is None:
            log.warning("%s is not exist, ignored its setting.", name)
            continue
        if isinstance(strategy, tuple):
            _check_parameter_strategy(name, param.global_shape, strategy)
        else:
            strategy.to_dict()
        if param in _PINNED:
            log.warning("The layout of parameter '%s' has been set to %s, current setting will be ignored.", name,
                        _PINNED[param])
            continue
        _PINNED[param] = strategy
        out[param] = strategy
    return out


def _check_parameter_strategy(name: str, shape: Sequence[int], strategy: tuple) -> None:
    if len(strategy) != len(shape):
        raise ValueError(f"For {name}, the length of param_strategy: {len(strategy)}, is not equal to param_shape "
                         f"len: {len(shape)}.")
    for i, (size, v) in enumerate(zip(shape, strategy)):
        if not isinstance(v, int) or v < 1 or size % v:
            raise ValueError(f"For '{name}', the param_shape is {tuple(shape)} and the setting param_strategy is "
                             f"{strategy}. The param_shape[{i}]: {size} cannot be divisible by param_strategy[{i}]: "
                             f"{v}.")


# ------------------------------------------------------------------------------ regions
class ShardRegion:
    """The layouts a ``shard`` call asked for around ``fn`` (see the module doc)."""

    def __init__(self, fn, in_strategy, out_strategy=None, parameter_plan=None) -> None:
        self.fn = fn
        self.in_strategy = in_strategy
        self.out_strategy = out_strategy
        self.params = _parameter_plan(fn, parameter_plan)
        self._in = [None if s is None else Reshard(s, "in_strategy", i) for i, s in enumerate(in_strategy)]
        self._out = None if out_strategy is None else \
            [None if s is None else Reshard(s, "out_strategy", i) for i, s in enumerate(out_strategy)]

    def _move(self, values: Sequence, ops: list, what: str) -> list:
        if len(values) != len(ops):
            raise RuntimeError(f"For 'Shard', the {'input' if what == 'in_strategy' else 'output'} number "
                               f"{len(values)} is not equal to the {what} number {len(ops)}")
        return [op(v) if op is not None and isinstance(v, Tensor) else v for v, op in zip(values, ops)]

    def run(self, body: Callable, args: Sequence, kwargs: dict) -> Any:
        """``body(*args, **kwargs)`` with the region's layouts applied around it."""
        args = self._move(list(args), self._in, "in_strategy")
        tracer = ex._State.tracer
        if tracer is not None:
            with tracer.region(self.params):
                out = body(*args, **kwargs)
        else:
            out = body(*args, **kwargs)
        if self._out is None:
            return out
        if isinstance(out, tuple):
            return tuple(self._move(list(out), self._out, "out_strategy"))
        return self._move([out], self._out, "out_strategy")[0]


def _is_cell(fn) -> bool:
    """A ``nn.Cell``, known by its shard slot (nn.cell imports this module, so not the reverse)."""
    return hasattr(fn, "_shard_region") and callable(getattr(fn, "construct", None))


def _one_device() -> bool:
    return context.get_auto_parallel_context("device_num") == 1


def shard_cell(cell, in_strategy, out_strategy=None, parameter_plan=None, device: str = "Ascend", level: int = 0):
    """``Cell.shard``: attach a :class:`ShardRegion` to ``cell``; returns a function calling it."""

    def shard_fn(*args: Any, **kwargs: Any) -> Any:
        return cell(*args, **kwargs)

    if _one_device():
        return shard_fn
    _check_args(in_strategy, out_strategy, device, level)
    region = ShardRegion(cell, in_strategy, out_strategy, parameter_plan)
    if cell._shard_region is not None:
        log.warning("For '%s', 'Shard' has been configured more than once. The existing in_strategy is %s and the "
                    "existing out_strategy is %s. The new in_strategy %s and out_strategy %s may not take effect. It is "
                    "recommended to configure 'Shard' only once.", type(cell).__name__, cell._shard_region.in_strategy,
                    cell._shard_region.out_strategy, in_strategy, out_strategy)
    object.__setattr__(cell, "_shard_region", region)
    return shard_fn


def shard(fn, in_strategy, out_strategy=None, parameter_plan=None, device: str = "Ascend", level: int = 0):
    """``ms.shard`` / ``mindspore.parallel.shard``: ``fn`` (a Cell or a function) with its inputs laid
    out as ``in_strategy`` says and its outputs as ``out_strategy`` says; the ops inside without a
    strategy are derived by sharding propagation. ``parameter_plan`` (``fn`` a Cell) lays out named
    parameters. Returns the function to call; with one device, ``fn`` itself (as in MindSpore).

    >>> import numpy as np, distinfer as ms
    >>> ms.set_auto_parallel_context(device_num=8)
    >>> ms.shard(ms.ops.relu, in_strategy=((2, 1),), level="0")
    Traceback (most recent call last):
    ...
    TypeError: For 'Shard', the 'level' should be an integer, but got str
    >>> ms.reset_auto_parallel_context()
    """
    if _one_device():
        return fn
    if not _is_cell(fn):
        log.warning("'fn' is not a mindspore.nn.Cell, and its definition cannot involve Parameter; otherwise, the "
                    "result may be incorrect.")
    _check_args(in_strategy, out_strategy, device, level)
    region = ShardRegion(fn, in_strategy, out_strategy, parameter_plan)
    call = fn

    def shard_fn(*args: Any, **kwargs: Any) -> Any:
        if not context.is_sharded_mode():
            return call(*args, **kwargs)
        body = lambda *a, **kw: region.run(call, a, kw)  # noqa: E731
        if propagation._boundary(shard_fn, region):
            return propagation.planned_call(shard_fn, body, args, kwargs)
        return body(*args, **kwargs)

    shard_fn.region = region
    return shard_fn
