"""Network inputs as the dataset strategy lays them out (MindSpore's ``_VirtualDataset``).

With ``full_batch`` every rank feeds the whole batch; with ``data_parallel`` each rank feeds its own
shard and the global batch is their concatenation along dim 0; a tuple strategy (split tuples or
Layouts) gives each input pre-sliced. ``Model`` lays its inputs out this way, and so does a graph
called directly in auto_parallel (sharding propagation), as MindSpore does for a compiled call.

>>> import numpy as np, distinfer as ms
>>> ms.set_auto_parallel_context(dataset_strategy="data_parallel")
>>> (x,) = distribute_inputs([ms.Tensor(np.ones((2, 3), np.float32))], 4)
>>> x.shape, x.layout.tensor_map
((8, 3), (0, -1))
>>> ms.reset_auto_parallel_context()
"""
from __future__ import annotations

from typing import Any, Sequence

from .. import context
from ..errors import LayoutError
from ..layout import Layout
from ..tensor import Parameter, Tensor

__all__ = ["input_layout", "distribute_inputs"]


def input_layout(shape: Sequence[int], index: int, n: int) -> Layout | None:
    """Layout of network input ``index`` of global ``shape`` under the dataset strategy."""
    strategy = context.get_auto_parallel_context("dataset_strategy")
    if strategy == "full_batch":
        return None
    if strategy == "data_parallel":
        if not shape:
            return None
        return Layout((n,), (0,) + (-1,) * (len(shape) - 1), tuple(shape))
    if index < len(strategy) and hasattr(strategy[index], "to_layout"):  # a distinfer.Layout
        lay = strategy[index].to_layout(shape)
        if lay.num_devices != n:
            raise ValueError(f"dataset_strategy: input {index}'s {strategy[index]} covers {lay.num_devices} devices, "
                             f"but the stage has {n}")
        return lay
    s = tuple(strategy[index]) if index < len(strategy) else (1,) * len(shape)
    try:
        return Layout.from_splits(s, shape, n)
    except LayoutError as exc:
        raise ValueError(f"dataset_strategy {strategy}: input {index} of shape {tuple(shape)}: {exc}") from None


def distribute_inputs(inputs: Sequence[Any], n: int) -> list[Any]:
    """Wrap each rank's fed data as the global tensors it belongs to (Tensors already laid out, and
    Parameters, pass as they are)."""
    out = []
    full = context.get_auto_parallel_context("dataset_strategy") == "full_batch"
    for i, x in enumerate(inputs):
        if not isinstance(x, Tensor) or isinstance(x, Parameter) or x.layout is not None:
            out.append(x)  # not data, or already laid out
            continue
        if full:
            out.append(x)  # the whole batch, on every rank
            continue
        local, mine = x.local, x.global_shape  # (no data in a layout-only run: shapes still hold)
        strategy = context.get_auto_parallel_context("dataset_strategy")
        if strategy == "data_parallel":
            shape = (mine[0] * n,) + tuple(mine[1:]) if mine else ()
        else:
            s = (1,) * len(mine) if i >= len(strategy) else strategy[i].splits() if hasattr(
                strategy[i], "splits") else tuple(strategy[i])
            shape = tuple(d * v for d, v in zip(mine, s))
        layout = input_layout(shape, i, n)
        out.append(Tensor._make(local, shape, layout, dtype=x.dtype))
    return out
