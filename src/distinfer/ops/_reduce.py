"""Reductions: ReduceSum, ReduceMean, ReduceMax (``keep_dims`` as MindSpore).

Reducing a split dim leaves a partial result over that device axis (a sum, or a max for
ReduceMax) that the executor completes with an AllReduce. ReduceMean divides the local sum by
the *global* count, so its partial sums add up to the true mean.
"""
from __future__ import annotations

import math

import numpy as np

from .. import dtype as mstype
from .mindspore_form import Input, MsOp, axes, flag, integer
from .primitive import Primitive, build

__all__ = ["ReduceSum", "ReduceMean", "ReduceMax", "ReduceMin", "ArgMaxWithValue"]


def _axes(axis, ndim: int) -> tuple[int, ...]:
    if axis is None or axis == () or axis == []:
        return tuple(range(ndim))
    if isinstance(axis, int):
        axis = (axis,)
    out = []
    for a in axis:
        if not -ndim <= a < max(ndim, 1):
            raise ValueError(f"reduce axis {a} is out of range for a tensor of {ndim} dims")
        out.append(a % ndim if ndim else 0)
    return tuple(sorted(set(out)))


# MindSpore's reductions take the axes and keep_dims as node inputs.
_REDUCE_INPUTS = (Input("axis", arg=1, encode=axes), flag("keep_dims"))


class _Reduce(Primitive):
    tensor_args = (0,)
    mindir = MsOp(1, _REDUCE_INPUTS)
    partial_op = "sum"
    # ONNX: the reduction of the same name; opset 13 made ReduceSum's axes an input, the others keep
    # them as an attribute until opset 18 (the writer's opset is 17).
    _onnx_name = ""
    _onnx_axes_input = False

    def __init__(self, keep_dims: bool = False) -> None:
        super().__init__()
        self.keep_dims = keep_dims
        self.attrs["keep_dims"] = keep_dims

    def __call__(self, x, axis=()):
        return super().__call__(x, axis)

    def infer(self, shapes, dtypes, consts):
        shape = shapes[0]
        axes = _axes(consts[1], len(shape))
        out = tuple(1 if d in axes else s for d, s in enumerate(shape)) if self.keep_dims else \
            tuple(s for d, s in enumerate(shape) if d not in axes)
        return [(out, dtypes[0])]

    def rule(self, strategy, shapes, out_shapes, n, consts):
        s = strategy[0]
        axes = _axes(consts[1], len(shapes[0]))
        x_dims = [d if v > 1 else -1 for d, v in enumerate(s)]
        if self.keep_dims:
            out_dims = [-1 if d in axes else p for d, p in enumerate(x_dims)]
        else:
            out_dims = [p for d, p in enumerate(x_dims) if d not in axes]
        partial = [d for d in axes if s[d] > 1]
        return build(n, s or [1], [x_dims], shapes, [out_dims], out_shapes, partial=[partial],
                     partial_op=self.partial_op, op=self.name)

    def kernel(self, ctx, x):
        # numpy returns a scalar, not a 0-d array, when every axis is reduced; blocks are arrays.
        return np.asarray(self.reduce(x, _axes(ctx.consts[1], x.ndim), ctx))

    def reduce(self, x, axes, ctx):
        raise NotImplementedError

    def to_onnx(self, g):
        axes = list(_axes(g.consts[1], len(g.in_shapes[0])))
        keep = int(bool(self.keep_dims))
        if self._onnx_axes_input:
            g.one(self._onnx_name, [g.inputs[0], g.const(np.array(axes, np.int64), "axes")], g.outputs[0],
                  keepdims=keep)
        else:
            g.one(self._onnx_name, g.inputs, g.outputs[0], axes=axes, keepdims=keep)


class ReduceSum(_Reduce):
    mindir = MsOp(1, _REDUCE_INPUTS + (Input("skip_mode", value=False),))

    _onnx_name, _onnx_axes_input = "ReduceSum", True

    def reduce(self, x, axes, ctx):
        return np.sum(x, axis=axes, keepdims=self.keep_dims)

    def bprop(self, ctx, xs, out, douts):
        x = xs[0]
        axes = _axes(ctx.consts[1], x.ndim)
        g = douts[0] if self.keep_dims else np.expand_dims(douts[0], axes)
        return [np.broadcast_to(g, x.shape).copy()]


class ReduceMean(_Reduce):
    _onnx_name = "ReduceMean"

    def _count(self, ctx, axes):
        return math.prod(ctx.in_shapes[0][a] for a in axes)

    def reduce(self, x, axes, ctx):
        total = np.sum(x, axis=axes, keepdims=self.keep_dims, dtype=np.float64 if x.dtype.kind == "f" else None)
        return (total / self._count(ctx, axes)).astype(x.dtype)

    def bprop(self, ctx, xs, out, douts):
        x = xs[0]
        axes = _axes(ctx.consts[1], x.ndim)
        g = douts[0] if self.keep_dims else np.expand_dims(douts[0], axes)
        return [(np.broadcast_to(g, x.shape) / self._count(ctx, axes)).astype(x.dtype)]


class ReduceMax(_Reduce):
    _onnx_name = "ReduceMax"
    partial_op = "max"

    def reduce(self, x, axes, ctx):
        return np.max(x, axis=axes, keepdims=self.keep_dims)


class ReduceMin(_Reduce):
    _onnx_name = "ReduceMin"
    partial_op = "min"

    def reduce(self, x, axes, ctx):
        return np.min(x, axis=axes, keepdims=self.keep_dims)


class ArgMaxWithValue(Primitive):
    """``ArgMaxWithValue(axis=0, keep_dims=False)(x)`` -> (index, value); the axis must be whole."""

    mindir = MsOp(1, (integer("axis"), flag("keep_dims")), out_dtypes=(mstype.int64, None), tuple_output=True)

    def __init__(self, axis: int = 0, keep_dims: bool = False) -> None:
        super().__init__()
        self.axis, self.keep_dims = axis, keep_dims

    def infer(self, shapes, dtypes, consts):
        from .. import dtype as mstype

        shape = shapes[0]
        a = self.axis % len(shape)
        out = tuple(1 if d == a else s for d, s in enumerate(shape)) if self.keep_dims else \
            tuple(s for d, s in enumerate(shape) if d != a)
        return [(out, mstype.int32), (out, dtypes[0])]

    def default_strategy(self, shapes, n, consts):
        s = list(super().default_strategy(shapes, n, consts)[0])
        s[self.axis % len(s)] = 1
        return (tuple(s),)

    def rule(self, strategy, shapes, out_shapes, n, consts):
        from ..errors import StrategyError

        s = strategy[0]
        a = self.axis % len(s)
        if s[a] != 1:
            raise StrategyError(f"ArgMaxWithValue: axis {a} cannot be split (strategy {strategy}, shape {tuple(shapes[0])})")
        x_dims = [d if v > 1 else -1 for d, v in enumerate(s)]
        out_dims = [-1 if d == a else p for d, p in enumerate(x_dims)] if self.keep_dims else \
            [p for d, p in enumerate(x_dims) if d != a]
        return build(n, s, [x_dims], shapes, [out_dims, out_dims], out_shapes, op=self.name)

    def kernel(self, ctx, x):
        idx = np.argmax(x, axis=self.axis)
        val = np.max(x, axis=self.axis)
        if self.keep_dims:
            idx, val = np.expand_dims(idx, self.axis), np.expand_dims(val, self.axis)
        return idx.astype(np.int32), val

    def to_onnx(self, g):
        axis, keep = self.axis % len(g.in_shapes[0]), int(bool(self.keep_dims))
        idx = g.one("ArgMax", g.inputs, axis=axis, keepdims=keep)  # int64, the first maximum as numpy
        g.one("Cast", [idx], g.outputs[0], to=g.onnx_dtype(g.out_dtypes[0]))
        g.one("ReduceMax", g.inputs, g.outputs[1], axes=[axis], keepdims=keep)
