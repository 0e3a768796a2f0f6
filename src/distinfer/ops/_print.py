"""``ops.Print``: print strings and tensors from inside a network, as MindSpore's graph-mode Print does.

Each argument goes on its own line: strings and numbers as they are, tensors as their ``repr``
(``Tensor(shape=[...], dtype=..., value=...)``). Print is an op like any other, so it runs where its
inputs live: in semi-auto parallel each rank prints its block of a tensor (batch-split by default,
like every op without ``.shard()``; pending partial sums are reduced first), a pipeline stage
prints only on its own ranks, and a layout-only run prints nothing.

>>> import numpy as np, distinfer as ms
>>> ms.ops.Print()("out is:", ms.Tensor(np.array([1.0, 2.0], np.float32)))
out is:
Tensor(shape=[2], dtype=Float32, value= [ 1.00000000e+00,  2.00000000e+00])
"""
from __future__ import annotations

from typing import Any

import numpy as np

from .. import _format
from .. import dtype as mstype
from ..layout import Layout, replicated
from .primitive import KernelContext, OpLayouts, Primitive

__all__ = ["Print"]


class Print(Primitive):
    """``ops.Print()``: print its arguments (strings, numbers, Tensors), one per line; returns None."""

    onnx_refusal = "it prints while the network runs; an ONNX graph has no side effects"

    def __call__(self, *args: Any) -> None:
        if not args:
            raise ValueError("For 'Print', at least one input is required.")
        super().__call__(*args)
        return None

    def infer(self, shapes, dtypes, consts):
        return [((), mstype.int32)]

    def rule(self, strategy, shapes, out_shapes, n, consts) -> OpLayouts:
        ins = [Layout.from_splits(s, shape, n) if shape else replicated(shape, n) for s, shape in zip(strategy, shapes)]
        return OpLayouts((n,), tuple(ins), (replicated((), n),), ((),))

    def kernel(self, ctx: KernelContext, *blocks: np.ndarray) -> np.ndarray:
        tensors = iter(zip(blocks, ctx.in_shapes))
        lines = []
        for i in range(len(blocks) + len(ctx.consts)):
            if i in ctx.consts:
                lines.append(str(ctx.consts[i]))
                continue
            block, _ = next(tensors)
            lines.append(_format.tensor_repr(block, str(mstype.from_numpy(block.dtype))))
        print("\n".join(lines), flush=True)
        return np.zeros((), np.int32)
