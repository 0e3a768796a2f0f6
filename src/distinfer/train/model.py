"""``Model``: distributed predict, layout inference and (see :mod:`distinfer.train.trainer`) training.

Network inputs follow the dataset strategy (spec §10.4): with ``full_batch`` every rank feeds
the whole batch and ``predict`` returns the whole result on every rank; with ``data_parallel``
each rank feeds its own batch shard (the global batch is their concatenation along dim 0) and
gets back its own shard of the result; a tuple strategy gives each input pre-sliced.

>>> import numpy as np, distinfer as ms
>>> from distinfer import nn
>>> model = ms.Model(nn.Dense(4, 2))
>>> model.predict(ms.Tensor(np.ones((3, 4), np.float32))).shape
(3, 2)
"""
from __future__ import annotations

import logging
import math
from typing import Any, Sequence

from .. import context
from ..layout import Layout, replicated
from ..parallel import _executor as ex
from ..tensor import Tensor

log = logging.getLogger(__name__)

__all__ = ["Model", "layout_dict_entry"]

_SCALARS = (int, float, bool, str, type(None))


def layout_dict_entry(layout: Layout) -> list:
    """MindSpore's ``parameter_layout_dict`` value for a parameter laid out as ``layout`` (spec §4.7)."""
    norm = layout.normalized()
    opt_group = ""
    if layout.opt_group_size > 1:
        opt_group = f"{layout.opt_group_size}-opt-shard-group"
    return [list(norm.dev_matrix), norm.tensor_map_list(), list(layout.local_shape), 0, True, opt_group,
            list(layout.shape), list(layout.local_shape), False, False, 0, 0]


def _input_layout(shape: Sequence[int], index: int, n: int) -> Layout | None:
    """Layout of network input ``index`` of global ``shape`` under the dataset strategy."""
    strategy = context.get_auto_parallel_context("dataset_strategy")
    if strategy == "full_batch":
        return None
    if strategy == "data_parallel":
        if not shape:
            return None
        return Layout((n,), (0,) + (-1,) * (len(shape) - 1), tuple(shape))
    s = tuple(strategy[index]) if index < len(strategy) else (1,) * len(shape)
    if len(s) != len(shape):
        raise ValueError(f"dataset_strategy {strategy}: input {index} has shape {tuple(shape)} but its strategy {s} "
                         f"has {len(s)} entries")
    used = math.prod(s)
    if n % used:
        raise ValueError(f"dataset_strategy {strategy}: input {index}'s strategy {s} does not divide {n} devices")
    dev = tuple(s) + ((n // used,) if n > used else ())
    m = len(dev)
    return Layout(dev, tuple(m - 1 - d if v > 1 else -1 for d, v in enumerate(s)), tuple(shape))


def _distribute_inputs(inputs: Sequence[Any], n: int) -> list[Any]:
    """Wrap each rank's fed data as the global tensors it belongs to."""
    out = []
    full = context.get_auto_parallel_context("dataset_strategy") == "full_batch"
    for i, x in enumerate(inputs):
        if not isinstance(x, Tensor):
            out.append(x)
            continue
        local = x.asnumpy()
        if full:
            out.append(Tensor._make(local, local.shape, None, dtype=x.dtype))
            continue
        strategy = context.get_auto_parallel_context("dataset_strategy")
        if strategy == "data_parallel":
            shape = (local.shape[0] * n,) + tuple(local.shape[1:]) if local.ndim else ()
        else:
            s = tuple(strategy[i]) if i < len(strategy) else (1,) * local.ndim
            shape = tuple(d * v for d, v in zip(local.shape, s))
        layout = _input_layout(shape, i, n)
        out.append(Tensor._make(local, shape, layout, dtype=x.dtype))
    return out


def _output_layout(t: Tensor, n: int) -> Layout:
    """Where a network output goes: whole on every rank, or split along dim 0 (``_VirtualOutput``)."""
    if context.get_auto_parallel_context("dataset_strategy") == "full_batch" or not t.shape or t.shape[0] % n:
        return replicated(t.shape, n)
    return Layout((n,), (0,) + (-1,) * (len(t.shape) - 1), t.shape)


def _map_outputs(out: Any, fn) -> Any:
    if isinstance(out, Tensor):
        return fn(out)
    if isinstance(out, (tuple, list)):
        return type(out)(_map_outputs(o, fn) for o in out)
    return out


class Model:
    """``Model(network, loss_fn=None, optimizer=None, metrics=None, eval_network=None, ...)``."""

    def __init__(self, network, loss_fn=None, optimizer=None, metrics=None, eval_network=None, eval_indexes=None,
                 amp_level: str = "O0", boost_level: str = "O0", **kwargs: Any) -> None:
        self._network = network
        self._loss_fn = loss_fn
        self._optimizer = optimizer
        self._metrics = metrics
        self._eval_network = eval_network
        self._train_network = None
        self._current_epoch = 0
        self._current_step = 0

    @property
    def predict_network(self):
        return self._network

    @property
    def train_network(self):
        return self._train_network

    # ------------------------------------------------------------------- prediction
    def _check_predict_data(self, predict_data) -> None:
        if not context.is_sharded_mode():
            return
        for i, x in enumerate(predict_data):
            if not isinstance(x, (Tensor,) + _SCALARS):
                raise TypeError(f"For 'Model.predict', in semi-auto parallel mode every predict data must be a "
                                f"Tensor (or int, float, bool, str, None), but input {i} is {type(x).__name__}")

    def predict(self, *predict_data: Any, backend=None, config=None) -> Any:
        """Run the network for inference; outputs follow the dataset strategy (module doc)."""
        self._check_predict_data(predict_data)
        self._network.set_train(False)
        if not context.is_sharded_mode():
            return self._network(*predict_data)
        n = ex.stage_devices()
        rec = ex.Recorder(trainable_only=context.get_auto_parallel_context("strategy_ckpt_config")[
            "only_trainable_params"])
        with ex.recording(rec), ex.loaded_strategies(_loaded_strategy_items()):
            out = self._network(*_distribute_inputs(predict_data, n))
            out = _map_outputs(out, lambda t: ex.to_layout(t, _output_layout(t, n)))
        self._after_compile(rec)
        return _map_outputs(out, lambda t: Tensor(t.asnumpy()))

    def infer_predict_layout(self, *predict_data: Any, skip_backend_compile: bool = False) -> dict:
        """Each parameter's layout for this input, as ``{name: [dev_matrix, tensor_map, slice_shape, ...]}``.

        Runs the network once for shapes and layouts only (no arithmetic, no messages), slices
        the network's parameters to their local blocks, and writes the strategy file when
        ``strategy_ckpt_config["save_file"]`` is set.
        """
        if not context.is_sharded_mode():
            raise RuntimeError("infer_predict_layout needs parallel_mode 'semi_auto_parallel' or 'auto_parallel', "
                               f"got {context.parallel_mode()!r}")
        self._check_predict_data(predict_data)
        self._network.set_train(False)
        return self._layout_run(self._network, predict_data)

    def _layout_run(self, network, data) -> dict:
        rec = ex.Recorder(trainable_only=context.get_auto_parallel_context("strategy_ckpt_config")[
            "only_trainable_params"])
        with ex.abstract(), ex.recording(rec), ex.loaded_strategies(_loaded_strategy_items()):
            n = ex.stage_devices()
            inputs = [Tensor._make(None, x.shape, None, dtype=x.dtype) if isinstance(x, Tensor) else x
                      for x in _distribute_inputs(data, n)]
            network(*inputs)
        return self._after_compile(rec)

    def _after_compile(self, rec: "ex.Recorder") -> dict:
        """Record ``parameter_layout_dict`` and write the strategy file if asked (MindSpore does it at compile)."""
        layouts = {name: layout_dict_entry(p.layout) for name, p in self._network.parameters_and_names()
                   if p.layout is not None}
        self._network._parameter_layout_dict.clear()
        self._network._parameter_layout_dict.update(layouts)
        save_file = context.strategy_ckpt_file("save_file")
        if save_file:
            from ..parallel.strategy import save_strategy

            save_strategy(save_file, rec, self._network)
        return dict(layouts)


def _loaded_strategy_items() -> dict:
    """Operator strategies from ``strategy_ckpt_config["load_file"]`` (applied by key)."""
    path = context.strategy_ckpt_file("load_file")
    if not path:
        return {}
    from ..io.strategy_file import read_strategy

    return {key: tuple(tuple(s) for s in strat) for key, (_, strat) in read_strategy(path).items.items()}
