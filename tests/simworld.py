"""A world of ``n`` ranks simulated in one process, for checking op rules under plain pytest.

:func:`forward` does what the executor does on every rank, without MPI: it derives the op's
layouts from a strategy, slices the full numpy inputs into each rank's blocks, runs the local
kernel rank by rank, completes pending partial results by reducing the blocks of each
communication group, and assembles the full outputs with the planner (checking on the way that
ranks holding the same block computed the same values). :func:`backward` does the same for the
op's local gradients, which are partial over the device axes the output is split or partial over
and the input is not (the rule autograd relies on). Real communication (message counts,
collectives, faults) stays with the mpirun tests.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from distinfer import dtype as mstype
from distinfer.layout import Layout, replicated
from distinfer.ops.primitive import KernelContext, OpLayouts, layouts
from distinfer.plan import assemble, extract, make_plan

_REDUCE = {"sum": np.add, "max": np.maximum, "min": np.minimum}


@dataclass
class Run:
    """One simulated call: its layouts, and per rank the kernel context, input blocks and outputs."""

    lay: OpLayouts
    ctxs: list[KernelContext]
    locals_: list[list[np.ndarray]]
    outs: list[list[np.ndarray]]
    outputs: list[np.ndarray]  # the assembled full outputs


def _split_args(prim, args: Sequence[Any]) -> tuple[list[np.ndarray], dict[int, Any]]:
    tensors, consts = [], {}
    for i, a in enumerate(args):
        if (isinstance(a, np.ndarray) if prim.tensor_args is None else i in prim.tensor_args):
            tensors.append(np.asarray(a))
        else:
            consts[i] = a
    return tensors, consts


def _as_list(out) -> list:
    return list(out) if isinstance(out, (tuple, list)) else [out]


def _assemble(blocks: list[np.ndarray], layout: Layout, partial: tuple[int, ...], op: str) -> np.ndarray:
    """The full tensor from every rank's block: partial results reduced over their groups first;
    ranks holding the same block must agree."""
    blocks = list(blocks)
    if partial:
        for group in layout.groups(partial):
            total = blocks[group[0]]
            for r in group[1:]:
                total = _REDUCE[op](total, blocks[r])
            for r in group:
                blocks[r] = total
    n = layout.num_devices
    plan = make_plan(layout, replicated(layout.shape, 1))
    full = assemble(plan, 0, lambda p: extract(blocks[p.src], layout, p.src, p.box), dtype=blocks[0].dtype)
    for r in range(n):
        if blocks[r].shape != layout.local_shape:
            raise AssertionError(f"rank {r}'s block has shape {blocks[r].shape}, its layout says {layout.local_shape}")
        if not np.array_equal(blocks[r], layout.slice(full, r), equal_nan=True):
            raise AssertionError(f"rank {r}'s block differs from the replica chosen for the same block ({layout})")
    return full


def forward(prim, args: Sequence[Any], strategy: Any, n: int) -> Run:
    """Run ``prim(*args)`` on ``n`` simulated ranks. ``args`` are the call's arguments (numpy arrays
    for tensors); ``strategy`` is a split tuple per tensor input, a Layout (ops that follow their
    input), or None for the op's default."""
    arrays, consts = _split_args(prim, args)
    shapes = [a.shape for a in arrays]
    specs = prim.infer(shapes, [mstype.from_numpy(a.dtype) for a in arrays], consts)
    out_shapes, out_dtypes = [s for s, _ in specs], [d for _, d in specs]
    if strategy is None:
        strategy = prim.strategy_for(shapes, n, consts, [None] * len(arrays))
    if isinstance(strategy, tuple) and len(strategy) == len(args) and consts:
        strategy = tuple(s for i, s in enumerate(strategy) if i not in consts)  # MindSpore's () for scalars
    _, lay = layouts(prim, strategy, shapes, out_shapes, n, consts)
    ctxs, locals_, outs = [], [], []
    for r in range(n):
        mine = [np.array(L.slice(a, r), order="C") for a, L in zip(arrays, lay.inputs)]
        ctx = KernelContext(consts, [L.box(r) for L in lay.inputs], [L.box(r) for L in lay.outputs], shapes,
                            out_shapes, out_dtypes, lay)
        out = [np.asarray(o) for o in _as_list(prim.kernel(ctx, *mine))]
        ctxs.append(ctx)
        locals_.append(mine)
        outs.append(out)
    partial = lay.partial or tuple(() for _ in out_shapes)
    fulls = [_assemble([outs[r][j] for r in range(n)], L, partial[j], lay.partial_op)
             for j, L in enumerate(lay.outputs)]
    return Run(lay, ctxs, locals_, outs, fulls)


def _used(layout: Layout | None) -> set[int]:
    return set(layout.used_axes) if layout is not None else set()


def backward(prim, run: Run, douts: Sequence[np.ndarray | None]) -> list[np.ndarray | None]:
    """Full input gradients of a simulated call, given full output gradients: each rank's bprop
    sees its blocks of ``douts`` (laid out as the outputs), its input gradients are partial over
    the axes its outputs are split or partial over but its input is not, and are reduced and
    assembled like outputs."""
    lay, n = run.lay, len(run.ctxs)
    out_axes: set[int] = set()
    for j, d in enumerate(douts):
        if d is not None:
            out_axes |= _used(lay.outputs[j]) | set(lay.partial[j] if lay.partial else ())
    per_rank = []
    for r in range(n):
        mine = [None if d is None else np.array(L.slice(d, r), order="C") for d, L in zip(douts, lay.outputs)]
        out = run.outs[r][0] if len(run.outs[r]) == 1 else run.outs[r]
        per_rank.append(prim.bprop(run.ctxs[r], run.locals_[r], out, mine))
    grads: list[np.ndarray | None] = []
    for i, L in enumerate(lay.inputs):
        blocks = [g[i] for g in per_rank]
        if blocks[0] is None:
            grads.append(None)
            continue
        partial = tuple(sorted(out_axes - _used(L)))
        grads.append(_assemble([np.asarray(b) for b in blocks], L, partial, "sum"))
    return grads
