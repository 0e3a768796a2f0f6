"""MatMul and BatchMatMul.

For ``MatMul`` with strategy ``((a, k), (k, c))`` (in each input's own dim order, so a
transposed input lists its dims transposed) the raw device matrix is ``[a, k, c]``: x is split
by (a, k), the weight by (k, c), the output by (a, c), and a split contraction ``k`` leaves the
output as a partial sum over that axis (MindSpore's forward AllReduce). BatchMatMul puts the
broadcast batch dims in front: ``[*batch, a, k, c]``.

``out_strategy`` for MatMul may split output dim 0 by ``a * k`` (MindSpore's forward
ReduceScatter); the executor then reduces the partial sum straight into that layout.
"""
from __future__ import annotations

import dataclasses

import numpy as np

from .._cpu import flushing, matmul
from ..errors import StrategyError
from .mindspore_form import MsOp, flag
from .primitive import Primitive, batch_split, build

_LOW = ("float16", "bfloat16")  # by name: bfloat16's numpy type is loaded only when used


@flushing  # subnormal operands and products are zero, as in MindSpore's matmul kernels
def _mm(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``np.matmul`` (a large 2-D product split over the compute threads, see :func:`distinfer._cpu.matmul`);
    float16/bfloat16 operands are multiplied in float32 and the product rounded back, as
    low-precision matrix units accumulate (numpy's own float16 matmul has no BLAS and runs ~200x
    slower than float32 here)."""
    low = a.dtype.name in _LOW and b.dtype == a.dtype
    x, y = (a.astype(np.float32), b.astype(np.float32)) if low else (a, b)
    out = matmul(x, y) if x.ndim == 2 and y.ndim == 2 else np.matmul(x, y)
    return out.astype(a.dtype) if low else out


__all__ = ["MatMul", "BatchMatMul"]


def _to_onnx(self, g) -> None:
    """ONNX for both matmuls: ``Gemm`` without bias for 2-D inputs (as MindSpore exports MatMul), else
    ``MatMul`` with a ``Transpose`` of the last two dims where a transpose flag is set."""
    x, w = g.inputs
    if len(g.in_shapes[0]) == 2 and len(g.in_shapes[1]) == 2:
        g.one("Gemm", [x, w], g.outputs[0], transA=int(self.transpose_a), transB=int(self.transpose_b))
        return

    def t(v, ndim, flag):
        if not flag:
            return v
        perm = list(range(ndim))
        perm[-2], perm[-1] = perm[-1], perm[-2]
        return g.one("Transpose", [v], perm=perm)
    g.one("MatMul", [t(x, len(g.in_shapes[0]), self.transpose_a), t(w, len(g.in_shapes[1]), self.transpose_b)],
          g.outputs[0])


class MatMul(Primitive):
    """``MatMul(transpose_a=False, transpose_b=False)(x, w)`` for 2-D inputs."""

    amp = "white"
    # MindSpore 2.x writes the transpose flags as node inputs 2 and 3.
    mindir = MsOp(2, (flag("transpose_a"), flag("transpose_b")))
    to_onnx = _to_onnx

    def __init__(self, transpose_a: bool = False, transpose_b: bool = False) -> None:
        super().__init__()
        self.transpose_a, self.transpose_b = transpose_a, transpose_b
        self.attrs.update(transpose_a=transpose_a, transpose_b=transpose_b)

    def _mkn(self, xs, ws):
        m, k = (xs[1], xs[0]) if self.transpose_a else (xs[0], xs[1])
        k2, n = (ws[1], ws[0]) if self.transpose_b else (ws[0], ws[1])
        return m, k, k2, n

    def infer(self, shapes, dtypes, consts):
        xs, ws = shapes
        if len(xs) != 2 or len(ws) != 2:
            raise ValueError(f"MatMul: inputs must be 2-D, got shapes {tuple(xs)} and {tuple(ws)}")
        m, k, k2, n = self._mkn(xs, ws)
        if k != k2:
            raise ValueError(f"MatMul: contraction sizes differ: {tuple(xs)} x {tuple(ws)} "
                             f"(transpose_a={self.transpose_a}, transpose_b={self.transpose_b})")
        if dtypes[0] != dtypes[1]:
            raise TypeError(f"MatMul: input dtypes differ: {dtypes[0]} and {dtypes[1]}")
        return [((m, n), dtypes[0])]

    def default_strategy(self, shapes, n, consts):
        xs = shapes[0]
        split = batch_split(xs[1] if self.transpose_a else xs[0], n)
        return (((1, split) if self.transpose_a else (split, 1)), (1, 1))

    def rule(self, strategy, shapes, out_shapes, n, consts):
        sx, sw = strategy
        a, k, k2, c = self._mkn(sx, sw)
        if k != k2:
            raise StrategyError(f"MatMul: the contraction dim is split {k} ways in input 0 but {k2} ways in input 1 "
                                f"(strategy {strategy}, shapes {[tuple(s) for s in shapes]}, "
                                f"transpose_a={self.transpose_a}, transpose_b={self.transpose_b}, {n} devices)")
        x_dims = [1, 0] if self.transpose_a else [0, 1]
        w_dims = [2, 1] if self.transpose_b else [1, 2]
        out = build(n, [a, k, c], [x_dims, w_dims], shapes, [[0, 2]], out_shapes,
                    partial=[[1] if k > 1 else []], op=self.name)
        if self.out_strategy:
            out = dataclasses.replace(out, final=(self._out_layout(out, a, k, c, strategy, n),))
        return out

    def _out_layout(self, lay, a, k, c, strategy, n):
        (o0, o1), = self.out_strategy
        if o1 != c or o0 not in (a, a * k):
            raise StrategyError(f"MatMul: out_strategy {self.out_strategy} must be (({a}, {c}),) or (({a * k}, {c}),) "
                                f"for in_strategy {strategy} ({n} devices)")
        base = lay.outputs[0]
        m = len(base.dev_matrix)
        dim0 = (m - 1, m - 2) if o0 == a * k and k > 1 else m - 1
        from ..layout import Layout
        return Layout(base.dev_matrix, (dim0, base.tensor_map[1]), base.shape)

    def kernel(self, ctx, x, w):
        return _mm(x.T if self.transpose_a else x, w.T if self.transpose_b else w)

    def bprop(self, ctx, xs, out, douts):
        x, w = xs
        g = douts[0]
        xm = x.T if self.transpose_a else x
        wm = w.T if self.transpose_b else w
        dx = _mm(g, wm.T)
        dw = _mm(xm.T, g)
        return [dx.T if self.transpose_a else dx, dw.T if self.transpose_b else dw]


class BatchMatMul(Primitive):
    """``BatchMatMul(transpose_a=False, transpose_b=False)(x, w)``; batch dims broadcast."""

    amp = "white"
    # MindSpore 2.x writes the transpose flags as node inputs 2 and 3.
    mindir = MsOp(2, (flag("transpose_a"), flag("transpose_b")))
    to_onnx = _to_onnx

    def __init__(self, transpose_a: bool = False, transpose_b: bool = False) -> None:
        super().__init__()
        self.transpose_a, self.transpose_b = transpose_a, transpose_b
        self.attrs.update(transpose_a=transpose_a, transpose_b=transpose_b)

    def _mkn(self, xs, ws):
        m, k = (xs[-1], xs[-2]) if self.transpose_a else (xs[-2], xs[-1])
        k2, n = (ws[-1], ws[-2]) if self.transpose_b else (ws[-2], ws[-1])
        return m, k, k2, n

    def infer(self, shapes, dtypes, consts):
        xs, ws = shapes
        if len(xs) < 2 or len(ws) < 2:
            raise ValueError(f"BatchMatMul: inputs need at least 2 dims, got {tuple(xs)} and {tuple(ws)}")
        m, k, k2, n = self._mkn(xs, ws)
        if k != k2:
            raise ValueError(f"BatchMatMul: contraction sizes differ: {tuple(xs)} x {tuple(ws)} "
                             f"(transpose_a={self.transpose_a}, transpose_b={self.transpose_b})")
        try:
            batch = tuple(np.broadcast_shapes(tuple(xs[:-2]), tuple(ws[:-2])))
        except ValueError:
            raise ValueError(f"BatchMatMul: batch dims of {tuple(xs)} and {tuple(ws)} do not broadcast") from None
        return [(batch + (m, n), dtypes[0])]

    def default_strategy(self, shapes, n, consts):
        out = []
        for s in shapes:
            lead = len(s) - 2
            split = batch_split(s[0], n) if lead > 0 and s[0] != 1 else 1
            out.append(tuple([split] + [1] * (len(s) - 1)) if lead > 0 else tuple([1] * len(s)))
        if len(shapes[0]) == 2:  # no batch dim on x: split its rows instead
            out[0] = (batch_split(shapes[0][0], n), 1) if not self.transpose_a else (1, batch_split(shapes[0][1], n))
        return tuple(out)

    def rule(self, strategy, shapes, out_shapes, n, consts):
        sx, sw = strategy
        a, k, k2, c = self._mkn(sx, sw)
        if k != k2:
            raise StrategyError(f"BatchMatMul: the contraction dim is split {k} ways in input 0 but {k2} ways in "
                                f"input 1 (strategy {strategy}, shapes {[tuple(s) for s in shapes]}, {n} devices)")
        nb = len(out_shapes[0]) - 2
        batch_strat = [1] * nb
        for i, (s, shape) in enumerate(zip(strategy, shapes)):
            lead = len(shape) - 2
            for t in range(lead):
                d = nb - lead + t
                if shape[t] == 1 and s[t] != 1:
                    raise StrategyError(f"BatchMatMul: broadcast batch dim {t} of input {i} (shape {tuple(shape)}) "
                                        f"cannot be split (strategy {strategy}, {n} devices)")
                if shape[t] != 1:
                    if batch_strat[d] not in (1, s[t]) or (batch_strat[d] != 1 and s[t] == 1):
                        raise StrategyError(f"BatchMatMul: batch dim {d} is split differently by the two inputs "
                                            f"(strategy {strategy}, shapes {[tuple(x) for x in shapes]}, {n} devices)")
                    batch_strat[d] = max(batch_strat[d], s[t])
        pa, pk, pc = nb, nb + 1, nb + 2

        def dims(shape, s, tail):
            lead = len(shape) - 2
            return [nb - lead + t if s[t] > 1 else -1 for t in range(lead)] + tail

        x_dims = dims(shapes[0], sx, [pk, pa] if self.transpose_a else [pa, pk])
        w_dims = dims(shapes[1], sw, [pc, pk] if self.transpose_b else [pk, pc])
        out_dims = [d if batch_strat[d] > 1 else -1 for d in range(nb)] + [pa, pc]
        return build(n, batch_strat + [a, k, c], [x_dims, w_dims], shapes, [out_dims], out_shapes,
                     partial=[[pk] if k > 1 else []], op=self.name)

    def kernel(self, ctx, x, w):
        xm = np.swapaxes(x, -1, -2) if self.transpose_a else x
        wm = np.swapaxes(w, -1, -2) if self.transpose_b else w
        return _mm(xm, wm)

    def bprop(self, ctx, xs, out, douts):
        from ._elementwise import _unbroadcast

        x, w = xs
        g = douts[0]
        xm = np.swapaxes(x, -1, -2) if self.transpose_a else x
        wm = np.swapaxes(w, -1, -2) if self.transpose_b else w
        dxm = _mm(g, np.swapaxes(wm, -1, -2))
        dwm = _mm(np.swapaxes(xm, -1, -2), g)
        dx = np.swapaxes(dxm, -1, -2) if self.transpose_a else dxm
        dw = np.swapaxes(dwm, -1, -2) if self.transpose_b else dwm
        return [_unbroadcast(dx, x.shape), _unbroadcast(dw, w.shape)]
