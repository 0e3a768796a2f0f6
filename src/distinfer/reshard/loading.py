"""Loading blocks for a network: match its parameters to a source set, read their blocks, hand them over.

The network is anything with ``parameters_and_names()`` yielding ``(name, parameter)`` pairs
whose parameters have a ``shape`` (and a ``global_shape`` when sliced): the blocks come back as
``{name: Parameter}``, for ``load_param_into_net`` or for the caller (``return_param_dict``).
Every check (shapes, names, predict layouts, readable pieces) runs before a tensor byte is read,
and a rank reads only its own blocks, all into one allocation (:func:`read_into_arena`).

>>> import os, tempfile, numpy as np
>>> from distinfer.io import write_safetensors
>>> from distinfer.reshard.targets import SliceJob
>>> d = tempfile.mkdtemp(); write_safetensors(f"{d}/part0.safetensors", {"w": np.arange(6.0).reshape(3, 2)})
>>> job = SliceJob(d, {"w": [[2], [-1, 0], [], 0]}, None)
>>> unified_blocks(job, None, 1)["w"].asnumpy().tolist()     # no network: the predict strategy's names
[[1.0], [3.0], [5.0]]
>>> job.close()
"""
from __future__ import annotations

import logging
import math
from typing import Any, Optional, Sequence

import numpy as np

from ..errors import LayoutError
from ..layout import Layout
from ..tensor import Parameter, Tensor
from .planning import TrainStrategy
from .sources import SourceSet, block_shape, open_source, read_blocks
from .targets import SliceJob, predict_layout, predict_value_text

__all__ = ["read_into_arena", "rank_file_blocks", "unified_blocks"]

log = logging.getLogger(__name__)


def read_into_arena(source: SourceSet, jobs: Sequence[tuple[str, Optional[Layout]]], rank: int,
                    hint: int) -> list[np.ndarray]:
    """Read each ``(name, destination layout or None)`` block of ``rank`` from ``source``; the blocks, in order.

    All blocks live in one allocation: a big numpy allocation gets transparent huge pages, and
    first-touch page faults of many small 4 KiB-page allocations cost more than the reads
    themselves (~2 GB/s vs ~10 GB/s here). Each block is an aligned view of it.
    """
    shapes = []
    for name, dst in jobs:
        shape = block_shape(source, name, dst)
        dt = np.dtype(source.dtype(name))
        shapes.append((shape, dt, -(-math.prod(shape) * dt.itemsize // 64) * 64))
    arena = np.empty(sum(n for _, _, n in shapes), np.uint8)
    pos = 0
    reads = []
    for (name, dst), (shape, dt, n) in zip(jobs, shapes):
        reads.append((name, dst, arena[pos: pos + math.prod(shape) * dt.itemsize].view(dt).reshape(shape)))
        pos += n
    read_blocks(source, reads, rank, hint)
    return [out for _, _, out in reads]


def _full_shape(param: Any) -> tuple[int, ...]:
    return tuple(getattr(param, "global_shape", param.shape))


def _check_predict_names(predict: Optional[dict], net_names: set[str]) -> None:
    if predict and not set(predict) & net_names:
        raise ValueError(f"For 'load_distributed_checkpoint', no parameter of the network is in "
                         f"'predict_strategy' (it names {sorted(predict)[:4]}...): the predict strategy is for "
                         f"a different network")


def _parameters(names: Sequence[str], blocks: Sequence[np.ndarray]) -> dict[str, Parameter]:
    return {name: Parameter(Tensor(block), name=name) for name, block in zip(names, blocks)}


def rank_file_blocks(network: Any, files: Sequence[str], train: TrainStrategy, train_strategy_filename: str,
                     predict: Optional[dict], rank: int, strict_load: bool) -> dict[str, Parameter]:
    """``rank``'s block of every parameter of ``network`` from one pipeline stage's rank ``files``.

    Parameters in the strategy get the block of their ``predict`` layout (the full tensor
    without one); those not in the strategy or not in the files are reported (and refused with
    ``strict_load``).
    """
    hint = rank % train.stage_devices
    with open_source(train, dict(enumerate(files)), stage_local=True) as source:
        net_params = list(network.parameters_and_names()) if network is not None else []
        if net_params:
            _check_predict_names(predict, {n for n, _ in net_params})
        not_in_strategy = [n for n, _ in net_params if n not in train]
        not_in_ckpt: list[str] = []
        todo: list[tuple[str, Optional[Layout]]] = []
        for name, param in net_params:
            if name not in train:
                continue
            src = source.layout(name)
            if src is None:
                not_in_ckpt.append(name)
                continue
            if _full_shape(param) != src.shape:
                raise ValueError(f"For 'load_distributed_checkpoint', the network parameter {name!r} has shape "
                                 f"{_full_shape(param)} but the checkpoint files ({files[0]}, ...) under strategy "
                                 f"{train_strategy_filename} hold a tensor of shape {src.shape} (block "
                                 f"{src.local_shape})")
            dst = None
            if predict is not None and name in predict:
                try:
                    dst = predict_layout(name, predict[name], src.shape)
                except LayoutError as exc:
                    raise ValueError(f"For 'load_distributed_checkpoint', parameter {name!r} of shape {src.shape} "
                                     f"cannot take its predict layout {predict_value_text(predict[name])}: "
                                     f"{exc}") from None
            source.plan(name, dst, rank, hint)
            todo.append((name, dst))
        if not_in_strategy:
            log.warning("For 'load_distributed_checkpoint', %d parameters in network are not in the slice strategy, "
                        "they are not loaded: %s", len(not_in_strategy), not_in_strategy)
        if not_in_ckpt:
            log.warning("For 'load_distributed_checkpoint', %d parameters in network and slice strategy but not in "
                        "the checkpoint file, they are not loaded: %s", len(not_in_ckpt), not_in_ckpt)
        if strict_load and (not_in_strategy or not_in_ckpt):
            raise RuntimeError(f"For 'load_distributed_checkpoint', strict_load=True but these network parameters "
                               f"cannot be loaded: not in the slice strategy {not_in_strategy}, not in the "
                               f"checkpoint files {not_in_ckpt}")
        return _parameters([name for name, _ in todo], read_into_arena(source, todo, rank, hint))


def unified_blocks(job: SliceJob, network: Any, rank: int) -> dict[str, Parameter]:
    """``rank``'s blocks of a unified directory: for ``network``'s parameters (its full shapes
    checked), or without a network for the predict strategy's names; plus the hyper params."""
    if network is not None:
        params = list(network.parameters_and_names())
        _check_predict_names(job.predict, {n for n, _ in params})
        shapes: Optional[dict] = {n: _full_shape(p) for n, p in params}
        names = [n for n, _ in params]
    else:
        shapes, names = None, job.output_names()
    targets, missing = job.targets(rank, names, shapes)
    if missing:
        log.warning("For 'load_distributed_checkpoint', %d parameters are not in the unified checkpoint %s, "
                    "they are not loaded: %s", len(missing), job.unified_dir, missing)
    blocks = read_into_arena(job.uc, [(stored, lay) for _, stored, lay in targets], rank, rank)
    param_dict = _parameters([name for name, _, _ in targets], blocks)
    for n, v in job.uc.hyper_params().items():
        param_dict.setdefault(n, Parameter(Tensor(v), name=n))
    return param_dict
