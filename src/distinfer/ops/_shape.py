"""Shape ops: Reshape, Flatten, Transpose, ExpandDims, Squeeze, Concat, Split.

Reshape-like ops take no strategy: they keep their input's layout where the new shape allows
it, and otherwise first make the offending dims whole. For a reshape, dims are grouped where
the running products of the old and new shapes meet; within a group only the first non-1 input
dim may be split, and it carries its split to the first non-1 output dim when that dim is
divisible by the split (a contiguous block stays contiguous). Transpose without a strategy
permutes the map.
"""
from __future__ import annotations

import math

import numpy as np

from ..errors import StrategyError
from ..layout import Layout
from .mindspore_form import GetItem, Input, MsOp, axes, integer, local_shape
from .primitive import FollowsInput, Primitive, build

__all__ = ["Reshape", "Flatten", "Transpose", "ExpandDims", "Squeeze", "Concat", "Split", "TensorGetItem",
           "reshape_layout", "encode_index"]


def _groups(src: tuple[int, ...], dst: tuple[int, ...]) -> list[tuple[list[int], list[int]]]:
    """Pairs of (input dims, output dims) covering equal contiguous element ranges."""
    cs = np.cumprod(src).tolist() if src else []
    cd = np.cumprod(dst).tolist() if dst else []
    bounds = sorted(set(cs) & set(cd))
    out = []
    for g, b in enumerate(bounds):
        lo = bounds[g - 1] if g else 0
        ins = [i for i, c in enumerate(cs) if lo < c <= b or (c == b and i not in sum((x[0] for x in out), []))]
        outs = [j for j, c in enumerate(cd) if lo < c <= b or (c == b and j not in sum((x[1] for x in out), []))]
        out.append((ins, outs))
    return out


def reshape_layout(layout: Layout, dst: tuple[int, ...]) -> tuple[Layout, Layout]:
    """(required input layout, output layout) for reshaping ``layout.shape`` to ``dst``."""
    src = layout.shape
    tm = list(layout.tensor_map)
    out_tm: list = [-1] * len(dst)
    if math.prod(src) == 0:
        return Layout(layout.dev_matrix, [-1] * len(src), src), Layout(layout.dev_matrix, out_tm, dst)
    for ins, outs in _groups(src, dst):
        split = [d for d in ins if tm[d] != -1]
        if not split:
            continue
        first_i = next((d for d in ins if src[d] > 1), None)
        first_j = next((d for d in outs if dst[d] > 1), None)
        s = layout.splits[split[0]]
        if split == [first_i] and first_j is not None and dst[first_j] % s == 0:
            out_tm[first_j] = tm[first_i]
        else:
            for d in split:
                tm[d] = -1
    return Layout(layout.dev_matrix, tm, src), Layout(layout.dev_matrix, out_tm, dst)


class _FollowInput(FollowsInput, Primitive):
    """Shape op that keeps its input's layout (no strategy)."""

    tensor_args = (0,)

    def shard(self, in_strategy=None, out_strategy=None, **kw):
        if in_strategy is not None and type(self) is not Transpose:
            raise StrategyError(f"{self.name} takes no strategy: it keeps its input's layout")
        return super().shard(in_strategy, out_strategy)


class Reshape(_FollowInput):
    """``Reshape()(x, shape)``; one ``-1`` may be inferred."""

    mindir = MsOp(1, (Input("shape", arg=1, encode=local_shape),))

    def infer(self, shapes, dtypes, consts):
        src = tuple(shapes[0])
        shape = list(consts[1].asnumpy().tolist() if hasattr(consts[1], "asnumpy") else consts[1])
        total = math.prod(src)
        if shape.count(-1) > 1:
            raise ValueError(f"Reshape: at most one -1 allowed in {tuple(shape)}")
        if -1 in shape:
            rest = math.prod(s for s in shape if s != -1)
            if rest == 0 or total % rest:
                raise ValueError(f"Reshape: cannot reshape {src} to {tuple(shape)}")
            shape[shape.index(-1)] = total // rest
        if math.prod(shape) != total:
            raise ValueError(f"Reshape: cannot reshape {src} ({total} elements) to {tuple(shape)}")
        return [(tuple(int(s) for s in shape), dtypes[0])]

    def follow(self, layout, out_shape, consts):
        return reshape_layout(layout, out_shape)

    def kernel(self, ctx, x):
        return x.reshape(tuple(b - a for a, b in ctx.out_boxes[0]))

    def bprop(self, ctx, xs, out, douts):
        return [douts[0].reshape(xs[0].shape)]

    def to_onnx(self, g):
        g.one("Reshape", [g.inputs[0], g.const(np.array(g.out_shapes[0], np.int64), "shape")], g.outputs[0])


class Flatten(_FollowInput):
    """``Flatten()(x)``: ``[N, ...] -> [N, prod(...)]``."""

    mindir = MsOp(1)

    def infer(self, shapes, dtypes, consts):
        s = tuple(shapes[0])
        if not s:
            raise ValueError("Flatten: input must have at least 1 dim")
        return [((s[0], math.prod(s[1:])), dtypes[0])]

    def follow(self, layout, out_shape, consts):
        return reshape_layout(layout, out_shape)

    def kernel(self, ctx, x):
        return x.reshape(x.shape[0], -1)

    def bprop(self, ctx, xs, out, douts):
        return [douts[0].reshape(xs[0].shape)]

    def to_onnx(self, g):
        g.one("Flatten", g.inputs, g.outputs[0], axis=1)


class Transpose(_FollowInput):
    """``Transpose()(x, perm)``; with a strategy it splits x as given, else it keeps x's layout."""

    mindir = MsOp(1, (Input("input_perm", arg=1, encode=axes),))

    def infer(self, shapes, dtypes, consts):
        perm = tuple(consts[1])
        if sorted(perm) != list(range(len(shapes[0]))):
            raise ValueError(f"Transpose: perm {perm} is not a permutation of the {len(shapes[0])} dims")
        return [(tuple(shapes[0][p] for p in perm), dtypes[0])]

    def rule(self, strategy, shapes, out_shapes, n, consts):
        if isinstance(strategy, Layout):
            return super().rule(strategy, shapes, out_shapes, n, consts)
        s = strategy[0]
        perm = tuple(consts[1])
        x_dims = [d if v > 1 else -1 for d, v in enumerate(s)]
        return build(n, s, [x_dims], shapes, [[x_dims[p] for p in perm]], out_shapes, op=self.name)

    def follow(self, layout, out_shape, consts):
        perm = tuple(consts[1])
        return layout, Layout(layout.dev_matrix, [layout.tensor_map[p] for p in perm], out_shape)

    def kernel(self, ctx, x):
        return np.ascontiguousarray(np.transpose(x, tuple(ctx.consts[1])))

    def bprop(self, ctx, xs, out, douts):
        return [np.transpose(douts[0], np.argsort(tuple(ctx.consts[1])))]

    def to_onnx(self, g):
        g.one("Transpose", g.inputs, g.outputs[0], perm=[int(v) for v in g.consts[1]])


class ExpandDims(_FollowInput):
    """``ExpandDims()(x, axis)``."""

    mindir = MsOp(1, (Input("axis", arg=1, encode=lambda v, call: int(v)),))

    def infer(self, shapes, dtypes, consts):
        s = list(shapes[0])
        a = consts[1]
        if not -len(s) - 1 <= a <= len(s):
            raise ValueError(f"ExpandDims: axis {a} out of range for shape {tuple(s)}")
        s.insert(a % (len(s) + 1), 1)
        return [(tuple(s), dtypes[0])]

    def follow(self, layout, out_shape, consts):
        tm = list(layout.tensor_map)
        tm.insert(consts[1] % (len(tm) + 1), -1)
        return layout, Layout(layout.dev_matrix, tm, out_shape)

    def kernel(self, ctx, x):
        return np.expand_dims(x, ctx.consts[1] % (x.ndim + 1))

    def bprop(self, ctx, xs, out, douts):
        return [douts[0].reshape(xs[0].shape)]

    def to_onnx(self, g):
        axis = int(g.consts[1]) % (len(g.in_shapes[0]) + 1)
        g.one("Unsqueeze", [g.inputs[0], g.const(np.array([axis], np.int64), "axes")], g.outputs[0])


class Squeeze(_FollowInput):
    """``Squeeze(axis=())(x)``: removes the given size-1 dims (all of them by default)."""

    mindir = MsOp(1, (Input("axis", attr="axis", encode=axes),))

    def __init__(self, axis=()) -> None:
        super().__init__()
        self.axis = (axis,) if isinstance(axis, int) else tuple(axis)

    def _axes(self, shape):
        if not self.axis:
            return tuple(d for d, s in enumerate(shape) if s == 1)
        axes = tuple(a % len(shape) for a in self.axis)
        for a in axes:
            if shape[a] != 1:
                raise ValueError(f"Squeeze: dim {a} of shape {tuple(shape)} is not 1")
        return axes

    def infer(self, shapes, dtypes, consts):
        axes = self._axes(shapes[0])
        return [(tuple(s for d, s in enumerate(shapes[0]) if d not in axes), dtypes[0])]

    def follow(self, layout, out_shape, consts):
        axes = self._axes(layout.shape)
        return layout, Layout(layout.dev_matrix, [e for d, e in enumerate(layout.tensor_map) if d not in axes], out_shape)

    def kernel(self, ctx, x):
        return np.squeeze(x, axis=self._axes(ctx.in_shapes[0])) if x.ndim else x

    def bprop(self, ctx, xs, out, douts):
        return [douts[0].reshape(xs[0].shape)]

    def to_onnx(self, g):
        axes = self._axes(g.in_shapes[0])
        g.one("Squeeze", [g.inputs[0], g.const(np.array(axes, np.int64), "axes")], g.outputs[0])


class Concat(Primitive):
    """``Concat(axis=0)((x1, x2, ...))``; the axis must not be split."""

    mindir = MsOp(0, (integer("axis"),), tuple_input=True)

    def __init__(self, axis: int = 0) -> None:
        super().__init__()
        self.axis = axis
        self.attrs["axis"] = axis

    def __call__(self, xs):
        return super().__call__(*xs)

    def infer(self, shapes, dtypes, consts):
        a = self.axis % len(shapes[0])
        for s in shapes[1:]:
            if len(s) != len(shapes[0]) or any(x != y for d, (x, y) in enumerate(zip(s, shapes[0])) if d != a):
                raise ValueError(f"Concat: shapes {[tuple(x) for x in shapes]} differ outside axis {a}")
        out = list(shapes[0])
        out[a] = sum(s[a] for s in shapes)
        return [(tuple(out), dtypes[0])]

    def default_strategy(self, shapes, n, consts):
        s = list(super().default_strategy(shapes, n, consts)[0])
        s[self.axis % len(s)] = 1
        if self.axis % len(s) == 0:
            s = [1] * len(s)
        return tuple(tuple(s) for _ in shapes)

    def rule(self, strategy, shapes, out_shapes, n, consts):
        a = self.axis % len(shapes[0])
        if any(s != strategy[0] for s in strategy) or strategy[0][a] != 1:
            raise StrategyError(f"Concat: every input needs the same strategy with axis {a} unsplit, got {strategy} "
                                f"(shapes {[tuple(s) for s in shapes]}, {n} devices)")
        dims = [d if v > 1 else -1 for d, v in enumerate(strategy[0])]
        return build(n, strategy[0], [dims] * len(shapes), shapes, [dims], out_shapes, op=self.name)

    def kernel(self, ctx, *xs):
        return np.concatenate(xs, axis=self.axis)

    def bprop(self, ctx, xs, out, douts):
        idx = np.cumsum([x.shape[self.axis] for x in xs])[:-1]
        return list(np.split(douts[0], idx, axis=self.axis))

    def to_onnx(self, g):
        g.one("Concat", g.inputs, g.outputs[0], axis=int(self.axis))


class Split(Primitive):
    """``Split(axis=0, output_num=1)(x)``: equal pieces; the axis must not be split."""

    mindir = MsOp(1, (integer("axis"), integer("output_num")), tuple_output=True)

    tensor_args = (0,)

    def __init__(self, axis: int = 0, output_num: int = 1) -> None:
        super().__init__()
        self.axis, self.output_num = axis, output_num
        self.attrs.update(axis=axis, output_num=output_num)

    def infer(self, shapes, dtypes, consts):
        s = list(shapes[0])
        a = self.axis % len(s)
        if s[a] % self.output_num:
            raise ValueError(f"Split: dim {a} of shape {tuple(s)} is not divisible by output_num {self.output_num}")
        s[a] //= self.output_num
        return [(tuple(s), dtypes[0])] * self.output_num

    def default_strategy(self, shapes, n, consts):
        s = list(super().default_strategy(shapes, n, consts)[0])
        if self.axis % len(s) == 0:
            s = [1] * len(s)
        return (tuple(s),)

    def rule(self, strategy, shapes, out_shapes, n, consts):
        a = self.axis % len(shapes[0])
        if strategy[0][a] != 1:
            raise StrategyError(f"Split: axis {a} cannot be split, got strategy {strategy} (shape {tuple(shapes[0])}, "
                                f"{n} devices)")
        dims = [d if v > 1 else -1 for d, v in enumerate(strategy[0])]
        return build(n, strategy[0], [dims], shapes, [dims] * self.output_num, out_shapes, op=self.name)

    def kernel(self, ctx, x):
        return tuple(np.ascontiguousarray(p) for p in np.split(x, self.output_num, axis=self.axis))

    def bprop(self, ctx, xs, out, douts):
        parts = [d if d is not None else np.zeros_like(o) for d, o in zip(douts, out)]
        return [np.concatenate(parts, axis=self.axis)]

    def to_onnx(self, g):
        size = g.out_shapes[0][self.axis % len(g.in_shapes[0])]
        g.node("Split", [g.inputs[0], g.const(np.array([size] * self.output_num, np.int64), "split")], g.outputs,
               axis=int(self.axis))


def encode_index(index, ndim: int) -> tuple:
    """Basic numpy indexing as a tuple of plain entries, one per input dim or new axis:
    ``("s", start, stop, step)``, ``("i", k)`` or ``("n",)`` (a new axis). Ellipsis is expanded."""
    items = index if isinstance(index, tuple) else (index,)
    if sum(1 for i in items if i is Ellipsis) > 1:
        raise IndexError("an index can only have a single ellipsis ('...')")
    used = sum(1 for i in items if i is not None and i is not Ellipsis)
    if used > ndim:
        raise IndexError(f"too many indices: {used} for a tensor of {ndim} dims")
    out: list[tuple] = []
    for item in items:
        if item is Ellipsis:
            out += [("s", None, None, None)] * (ndim - used)
        elif item is None:
            out.append(("n",))
        elif isinstance(item, slice):
            out.append(("s", item.start, item.stop, item.step))
        elif isinstance(item, (int, np.integer)) and not isinstance(item, bool):
            out.append(("i", int(item)))
        else:
            raise IndexError(f"only integers, slices, None and ... index a distributed Tensor, got {item!r}")
    out += [("s", None, None, None)] * (ndim - sum(1 for e in out if e[0] != "n"))
    return tuple(out)


def _decode_index(entries: tuple) -> tuple:
    return tuple(slice(e[1], e[2], e[3]) if e[0] == "s" else (int(e[1]) if e[0] == "i" else None) for e in entries)


class TensorGetItem(_FollowInput):
    """``x[index]`` for basic indexing (ints, slices, None, ...) on a possibly laid-out tensor.

    Dims cut by the index are made whole first; the others keep their split. The index is passed
    as :func:`encode_index` entries.
    """

    mindir = GetItem(1, tuple(Input(n) for n in ("begin", "end", "strides", "begin_mask", "end_mask", "ellipsis_mask",
                                                 "new_axis_mask", "shrink_axis_mask")), name="StridedSlice")

    def _dims(self, shape, entries):
        """Per entry: the input dim it reads (None for a new axis) and whether it keeps that dim whole."""
        d, out = 0, []
        for e in entries:
            if e[0] == "n":
                out.append((None, True))
                continue
            whole = e[0] == "s" and slice(e[1], e[2], e[3]).indices(shape[d]) == (0, shape[d], 1)
            out.append((d, whole))
            d += 1
        return out

    def infer(self, shapes, dtypes, consts):
        probe = np.empty(tuple(shapes[0]), dtype=np.uint8)  # numpy does the shape arithmetic
        return [(tuple(probe[_decode_index(consts[1])].shape), dtypes[0])]

    def follow(self, layout, out_shape, consts):
        entries = consts[1]
        tm = list(layout.tensor_map)
        out_tm = []
        for (d, whole), e in zip(self._dims(layout.shape, entries), entries):
            if d is not None and not whole:
                tm[d] = -1
            if e[0] != "i":
                out_tm.append(-1 if d is None else tm[d])
        return Layout(layout.dev_matrix, tm, layout.shape), Layout(layout.dev_matrix, out_tm, out_shape)

    def kernel(self, ctx, x):
        return np.ascontiguousarray(x[_decode_index(ctx.consts[1])])

    def bprop(self, ctx, xs, out, douts):
        grad = np.zeros_like(xs[0])
        grad[_decode_index(ctx.consts[1])] = douts[0]
        return [grad]

    def to_onnx(self, g):
        """One ``Slice`` over the indexed dims, then a ``Reshape`` drops int-indexed dims and adds new axes."""
        shape = g.in_shapes[0]
        starts, ends, axes, steps = [], [], [], []
        d = 0
        for e in g.consts[1]:
            if e[0] == "n":
                continue
            if e[0] == "i":
                k = e[1] % shape[d]
                start, stop, step = k, k + 1, 1
            else:
                start, stop, step = slice(e[1], e[2], e[3]).indices(shape[d])
                if step < 0 and stop < 0:
                    stop = -(2 ** 63)  # ONNX: before the first element when walking backwards
            starts.append(start), ends.append(stop), axes.append(d), steps.append(step)
            d += 1
        sliced = g.one("Slice", [g.inputs[0]] + [g.const(np.array(v, np.int64), stem) for v, stem in
                                                  ((starts, "starts"), (ends, "ends"), (axes, "axes"),
                                                   (steps, "steps"))])
        g.one("Reshape", [sliced, g.const(np.array(g.out_shapes[0], np.int64), "shape")], g.outputs[0])
