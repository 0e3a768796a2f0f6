"""``sync_pipeline_shared_parameters``: make a parameter used on several pipeline stages equal on all of them.

A parameter consumed by ops of two stages (an embedding table also read by the output head) is
materialised separately on each stage's ranks. They start equal (initial values are a function
of the seed, not of the rank), but a checkpoint loaded per stage or a stage-local update can make
them differ; MindSpore's answer is this call, after compiling, which copies the first stage's
value to the others. Every rank of the job must call it (it is collective over the world).

>>> import distinfer as ms
>>> from distinfer import nn
>>> ms.sync_pipeline_shared_parameters(nn.Dense(2, 2))  # one stage: nothing to do
"""
from __future__ import annotations

import contextlib
from collections import defaultdict

from .. import context
from ..communication import _backend
from ..layout import replicated
from ..nn.cell import Cell
from . import _executor as ex

__all__ = ["sync_pipeline_shared_parameters"]


def sync_pipeline_shared_parameters(net: Cell) -> None:
    """Copy each parameter held by several pipeline stages from the first of them to the others."""
    if not isinstance(net, Cell):
        raise TypeError(f"For 'sync_pipeline_shared_parameters', the argument 'net' should be a Cell, but got "
                        f"{type(net)}.")
    scope = getattr(net, "parallel_scope", None)  # an AutoParallel network carries its own stages
    with scope() if scope is not None else contextlib.nullcontext():
        if context.get_auto_parallel_context("pipeline_stages") < 2:
            return
        _sync(net)


def _sync(net: Cell) -> None:
    world = _backend.world()
    params = dict(net.parameters_and_names())
    mine, n, me = ex.my_stage(), ex.stage_devices(), ex.stage_rank()
    held = sorted(name for name, p in params.items() if p._local is not None)
    stages_of: dict[str, set[int]] = defaultdict(set)
    for stage, names in world.allgather_object((mine, held)):
        for name in names:
            stages_of[name].add(stage)
    for name in sorted(k for k, v in stages_of.items() if len(v) > 1 and mine in v):
        holders = sorted(stages_of[name])
        p = params[name]
        whole = p.asnumpy() if p.layout is None else ex.to_layout(p, replicated(p._shape, n)).asnumpy()
        if mine == holders[0]:
            world.exchange({s * n + me: [whole] for s in holders[1:]}, {})
        else:
            src = holders[0] * n + me
            p.set_data(world.exchange({}, {src: [(whole.shape, whole.dtype)]})[src][0])
