"""Writing the strategy file a traced run learned (``strategy_ckpt_config["save_file"]``)."""
from __future__ import annotations

import logging
import os

from ..io.strategy_file import ParamLayout, StrategyFile, write_strategy

log = logging.getLogger(__name__)

__all__ = ["save_strategy", "param_layout_of"]


def param_layout_of(layout) -> ParamLayout:
    """A parameter's recorded layout (normalised, with optimizer-shard fields).

    >>> from distinfer.layout import Layout
    >>> pl = param_layout_of(Layout((2, 2), (1, -1), (4, 6)))
    >>> pl.dev_matrix, pl.tensor_map, pl.opt_weight_shard_size
    ([2, 2], [1, -1], 0)
    >>> pl = param_layout_of(Layout((2, 4), (-1, -1), (8, 8), opt_shard_size=2))  # optimizer shard of 2
    >>> pl.opt_weight_shard_step, pl.opt_weight_shard_size
    (1, 2)
    """
    norm = layout.normalized()
    size = layout.opt_shard_size
    return ParamLayout(list(norm.dev_matrix), list(norm.tensor_map), opt_weight_shard_step=layout.opt_shard_step(),
                       opt_weight_shard_size=size if layout.opt_group_size > 1 else 0)


def save_strategy(path: str, recorder, network) -> None:
    """Write ``recorder``'s op strategies and ``network``'s parameter layouts to ``path``.

    Every rank calls it (it is collective over the world, as a compile is) and each returns only once
    the file is complete and visible to all: the lowest rank naming a path writes it (atomically),
    then the ranks meet at a barrier. So every rank may read the file as soon as it returns. Ranks
    of one pipeline stage hold the same strategy; with stages, give each rank its own path (e.g.
    ``src_strategy_{rank}.ckpt``) and merge them with ``merge_pipeline_strategys``. Parent
    directories are created.

    The example lays a Dense out on 4 simulated devices (a layout run needs no MPI), writes
    its strategy file and puts the default context back.

    >>> import os, tempfile, numpy as np, distinfer as ms
    >>> from distinfer import io, nn
    >>> from distinfer.parallel._executor import Recorder
    >>> ms.set_auto_parallel_context(parallel_mode="semi_auto_parallel", device_num=4, full_batch=True)
    >>> net = nn.Dense(8, 4); _ = net.matmul.shard(((1, 4), (1, 4)))
    >>> _ = ms.Model(net).infer_predict_layout(ms.Tensor(np.ones((2, 8), np.float32)))  # lays the parameters out
    >>> p = os.path.join(tempfile.mkdtemp(), "strategy.ckpt"); save_strategy(p, Recorder(), net)
    >>> ms.reset_auto_parallel_context()
    >>> {name: (pl.dev_matrix, pl.tensor_map) for name, pl in io.read_strategy(p).layouts.items()}
    {'weight': ([4], [-1, 0]), 'bias': ([2, 2], [-1])}
    """
    from ..communication import _backend

    world = _backend.world()
    target = os.path.abspath(path)
    writers = world.allgather_object(target)  # the same path on several ranks: the lowest one writes it
    if writers.index(target) == world.rank:
        _write_strategy(target, recorder, network)
    world.barrier()


def _write_strategy(path: str, recorder, network) -> None:
    only_trainable = recorder.trainable_only
    layouts = {}
    for name, p in network.parameters_and_names():
        clone = getattr(p, "_clone_of", None) is not None  # optimizer state shares its parameter's layout
        if p.layout is None or (only_trainable and not p.requires_grad and not clone):
            continue
        layouts[name] = param_layout_of(p.layout)
    items = {key: (stage, [list(s) for s in strat]) for key, (stage, strat) in recorder.strategies.items()}
    os.makedirs(os.path.dirname(path), exist_ok=True)
    write_strategy(path, StrategyFile(items=items, layouts=layouts))
    log.info("wrote strategy file %s (%d layouts, %d strategies)", path, len(layouts), len(items))
