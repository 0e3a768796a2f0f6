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

import contextlib
import functools
import logging
import math
from typing import Any

from .. import context
from ..common.api import graph_scope
from ..errors import check_type
from ..layout import Layout, replicated
from ..parallel import _executor as ex
from ..parallel.inputs import distribute_inputs as _distribute_inputs
from ..tensor import Tensor

log = logging.getLogger(__name__)

__all__ = ["Model", "layout_dict_entry"]

_SCALARS = (int, float, bool, str, type(None))


def layout_dict_entry(layout: Layout) -> list:
    """MindSpore's ``parameter_layout_dict`` value for a parameter laid out as ``layout`` (spec §4.7).

    >>> from distinfer.layout import Layout
    >>> entry = layout_dict_entry(Layout((2, 2), (1, -1), (4, 6)))  # rows split over device axis 1 (size 2)
    >>> entry[:3], entry[6]  # dev_matrix, tensor_map, slice shape; full shape
    ([[2, 2], [1, -1], [2, 6]], [4, 6])
    >>> layout_dict_entry(Layout((4,), (-1, -1), (8, 8), opt_shard_size=-1))[5]  # optimizer-sharded on 4 devices
    '4-opt-shard-group'
    """
    norm = layout.normalized()
    opt_group = ""
    if layout.opt_group_size > 1:
        opt_group = f"{layout.opt_group_size}-opt-shard-group"
    return [list(norm.dev_matrix), norm.tensor_map_list(), list(layout.local_shape), 0, True, opt_group,
            list(layout.shape), list(layout.local_shape), False, False, 0, 0]


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


def _in_network_scope(method):
    """Run a Model method as a graph (nested ``ms.jit`` calls are plain calls), inside its network's
    own parallel configuration if it has one (``AutoParallel``)."""
    @functools.wraps(method)
    def run(self, *args: Any, **kwargs: Any) -> Any:
        scope = getattr(self._network, "parallel_scope", None)
        with graph_scope(), scope() if scope is not None else contextlib.nullcontext():
            return method(self, *args, **kwargs)
    return run


class _TrainMixin:
    """Model.train / eval / infer_train_layout (kept apart from prediction for readability)."""

    def _build_train_network(self):
        from ..amp import build_train_network

        if self._train_network is None:
            if self._optimizer is None:
                raise ValueError("Model.train needs an optimizer (Model(network, loss_fn, optimizer))")
            self._train_network = build_train_network(self._network, self._optimizer, self._loss_fn,
                                                      level=self._amp_level,
                                                      loss_scale_manager=self._loss_scale_manager,
                                                      keep_batchnorm_fp32=self._keep_batchnorm_fp32)
        return self._train_network

    def _feed(self, batch):
        batch = [Tensor(b) if not isinstance(b, Tensor) else b for b in batch]
        if context.is_sharded_mode():
            return _distribute_inputs(batch, ex.stage_devices())
        return batch

    @_in_network_scope
    def train(self, epoch: int, train_dataset, callbacks=None, dataset_sink_mode: bool = False, sink_size: int = -1,
              initial_epoch: int = 0) -> None:
        """Train for ``epoch`` epochs over ``train_dataset`` (batches of ``(data, label)``)."""
        from types import SimpleNamespace

        from .callback import RunContext

        check_type("Model.train", "dataset_sink_mode", dataset_sink_mode, (bool,), "a bool")
        _check_sink_size("Model.train", sink_size)
        _check_epochs(epoch, initial_epoch)
        cbs = _callback_list(callbacks)
        batch_num = _dataset_size(train_dataset)
        train_net = self._build_train_network()
        cb = SimpleNamespace(train_network=train_net, network=self._network, optimizer=self._optimizer,
                             epoch_num=epoch, batch_num=batch_num, cur_epoch_num=initial_epoch,
                             cur_step_num=initial_epoch * batch_num, net_outputs=None,
                             parallel_mode=context.parallel_mode(),
                             device_number=context.get_auto_parallel_context("device_num"), list_callback=cbs)
        run = RunContext(cb)
        with contextlib.ExitStack() as stack:
            cbs[:] = [stack.enter_context(c) for c in cbs]
            self._train_loop(train_net, train_dataset, cb, run, initial_epoch, epoch)

    def _train_loop(self, train_net, train_dataset, cb, run, initial_epoch: int, epoch: int) -> None:
        """Epochs and steps with the callbacks' hooks in MindSpore's order."""
        cbs = cb.list_callback
        for c in cbs:
            c.on_train_begin(run)
        iterator = train_dataset.create_tuple_iterator(num_epochs=epoch - initial_epoch)
        for e in _epochs(initial_epoch, epoch):
            cb.cur_epoch_num = e + 1
            for c in cbs:
                c.on_train_epoch_begin(run)
            for batch in iterator:
                for c in cbs:
                    c.on_train_step_begin(run)
                cb.net_outputs = self._train_step(train_net, self._feed(batch))
                cb.cur_step_num += 1
                for c in cbs:
                    c.on_train_step_end(run)
                if run.get_stop_requested():
                    break
            for c in cbs:
                c.on_train_epoch_end(run)
            if run.get_stop_requested():
                break
        for c in cbs:
            c.on_train_end(run)

    def _train_step(self, train_net, inputs):
        if not context.is_sharded_mode() or self._strategy_saved:
            return train_net(*inputs)
        rec = ex.Recorder(trainable_only=context.get_auto_parallel_context("strategy_ckpt_config")[
            "only_trainable_params"])
        with ex.recording(rec), ex.loaded_strategies(self._file_strategies()):
            loss = train_net(*inputs)
        self._after_compile(rec, train_net)
        self._strategy_saved = True
        return loss

    @_in_network_scope
    def infer_train_layout(self, train_dataset, dataset_sink_mode: bool = True, sink_size: int = -1) -> dict:
        """Layouts of the training network's parameters (and optimizer state) for the first batch."""
        if not context.is_sharded_mode():
            raise RuntimeError("infer_train_layout needs parallel_mode 'semi_auto_parallel' or 'auto_parallel'")
        check_type("infer_train_layout", "dataset_sink_mode", dataset_sink_mode, (bool,), "a bool")
        if not dataset_sink_mode:
            raise ValueError("For 'infer_train_layout', only dataset sink mode is supported (as in MindSpore): "
                             "'dataset_sink_mode' must be True")
        _check_sink_size("infer_train_layout", sink_size)
        _dataset_size(train_dataset)
        train_net = self._build_train_network()
        batch = next(iter(train_dataset.create_tuple_iterator(num_epochs=1)))
        rec = ex.Recorder(trainable_only=context.get_auto_parallel_context("strategy_ckpt_config")[
            "only_trainable_params"])
        with ex.abstract(), ex.recording(rec), ex.loaded_strategies(self._file_strategies()):
            inputs = [Tensor._make(None, x.shape, x.layout, dtype=x.dtype) for x in self._feed(batch)]
            train_net.network(*inputs)
            self._optimizer._adopt_layouts()
        return self._after_compile(rec, train_net)

    @_in_network_scope
    def eval(self, valid_dataset, callbacks=None, dataset_sink_mode: bool = False) -> dict:
        """Metrics over ``valid_dataset``; supports "accuracy"/"acc" and "loss"."""
        from .metrics import evaluate

        check_type("Model.eval", "dataset_sink_mode", dataset_sink_mode, (bool,), "a bool")
        return evaluate(self, valid_dataset)


def _check_sink_size(api: str, sink_size: Any) -> None:
    """MindSpore's rule: an int, -1 (the whole dataset) or positive."""
    if isinstance(sink_size, bool) or not isinstance(sink_size, int):
        raise TypeError(f"For '{api}', the argument 'sink_size' must be an int, but got "
                        f"{type(sink_size).__name__} ({sink_size!r:.80})")
    if sink_size < -1 or sink_size == 0:
        raise ValueError(f"For '{api}', the argument 'sink_size' must be -1 or positive, but got {sink_size}")


def _dataset_size(dataset: Any) -> int:
    """The dataset's batch count; an empty dataset is a ValueError, as in MindSpore."""
    size = dataset.get_dataset_size()
    if size == 0:
        raise ValueError("There is no valid data in the dataset (get_dataset_size() is 0); check the dataset "
                         "files and batch size")
    return size


def _check_epochs(epoch: int, initial_epoch: int) -> None:
    """MindSpore's checks: TypeError for a non-int (bool included), ValueError unless 0 <= initial < epoch."""
    for name, value in (("epoch", epoch), ("initial_epoch", initial_epoch)):
        if not isinstance(value, int) or isinstance(value, bool):
            raise TypeError(f"Model.train: '{name}' must be an int, but got {type(value).__name__} ({value!r})")
    if epoch < 1 or not 0 <= initial_epoch < epoch:
        raise ValueError(f"Model.train: 'epoch' must be a positive int above 'initial_epoch', got epoch={epoch}, "
                         f"initial_epoch={initial_epoch}")


def _callback_list(callbacks) -> list:
    """``callbacks`` (None, a Callback or a list of them) as a list; TypeError for anything else."""
    from .callback import Callback

    if callbacks is None:
        return []
    items = list(callbacks) if isinstance(callbacks, (list, tuple)) else [callbacks]
    for i, c in enumerate(items):
        if not isinstance(c, Callback):
            raise TypeError(f"Model.train: callbacks must be Callback objects (or a list of them), but item {i} "
                            f"is {type(c).__name__}")
    return items


def _first_bad_leaf(value: Any) -> Any:
    """The first leaf of nested lists, tuples and dicts that is not a Tensor or scalar (None if all are)."""
    items = value.values() if isinstance(value, dict) else value
    for v in items:
        if isinstance(v, (list, tuple, dict)):
            bad = _first_bad_leaf(v)
            if bad is not None:
                return bad
        elif not isinstance(v, (Tensor,) + _SCALARS):
            return v
    return None


_MODEL_KWARGS = ("loss_scale_manager", "keep_batchnorm_fp32", "boost_config_dict", "acc_level")


def _check_model_args(network, loss_fn, optimizer, metrics, eval_network, eval_indexes, kwargs: dict) -> None:
    """MindSpore's construction checks on ``Model``."""
    from ..nn.cell import Cell

    if not isinstance(network, Cell):
        raise TypeError(f"For 'Model', the argument 'network' must be a Cell, but got {type(network).__name__}")
    for key in kwargs:
        if key not in _MODEL_KWARGS:
            raise ValueError(f"For 'Model', the keyword argument {key!r} is not recognized; '**kwargs' may only hold "
                             f"{list(_MODEL_KWARGS)}")
    from ..exporter.interpreter import GraphCell

    if isinstance(network, GraphCell):
        if loss_fn is not None or optimizer is not None:
            raise ValueError(f"For 'Model', 'loss_fn' and 'optimizer' must be None when network is a GraphCell, but "
                             f"got loss_fn={loss_fn!r:.60}, optimizer={optimizer!r:.60}")
        if kwargs:
            raise ValueError(f"For 'Model', '**kwargs' must be empty when network is a GraphCell, got {sorted(kwargs)}")
    if metrics and eval_network is not None and eval_indexes is not None and not (
            isinstance(eval_indexes, list) and len(eval_indexes) == 3):
        raise ValueError(f"For 'Model', 'eval_indexes' must be None or a list of three indexes (loss, predicted "
                         f"value, label), but got {eval_indexes!r:.80}")


def _epochs(start: int, stop: int):
    """Epoch indices, with a progress bar on rank 0 when a terminal is attached."""
    import sys

    from ..communication import _backend

    if _backend.current_rank() == 0 and sys.stderr.isatty():
        from tqdm import tqdm

        return tqdm(range(start, stop), desc="epochs", unit="epoch")
    return range(start, stop)


class Model(_TrainMixin):
    """``Model(network, loss_fn=None, optimizer=None, metrics=None, eval_network=None, ...)``.

    >>> import numpy as np, distinfer as ms, distinfer.dataset as ds
    >>> from distinfer import nn
    >>> x, y = np.array([[1, 0], [0, 1], [1, 1], [0, 0]], np.float32), np.array([1, 0, 1, 0], np.int32)
    >>> data = ds.NumpySlicesDataset((x, y), column_names=["x", "y"], shuffle=False).batch(2)
    >>> net = nn.Dense(2, 2, weight_init="zeros", bias_init="zeros")
    >>> model = ms.Model(net, nn.CrossEntropyLoss(), nn.SGD(net.trainable_params(), 0.5), metrics={"accuracy"})
    >>> model.train(2, data)
    >>> model.eval(data), model.predict(ms.Tensor(x)).shape
    ({'accuracy': 1.0}, (4, 2))
    """

    def __init__(self, network, loss_fn=None, optimizer=None, metrics=None, eval_network=None, eval_indexes=None,
                 amp_level: str = "O0", boost_level: str = "O0", **kwargs: Any) -> None:
        _check_model_args(network, loss_fn, optimizer, metrics, eval_network, eval_indexes, kwargs)
        if amp_level not in ("O0", "O1", "O2", "O3", "auto"):
            raise ValueError(f"For 'Model', 'amp_level' must be one of 'O0', 'O1', 'O2', 'O3', 'auto', but got "
                             f"{amp_level!r}")
        if optimizer is None and amp_level not in ("O0", "auto"):
            raise ValueError(f"For 'Model', amp_level={amp_level!r} mixes precision for training, but 'optimizer' "
                             f"is None; use amp_level='O0' (or network.to_float(ms.float16) for inference)")
        self._amp_level = "O0" if amp_level == "auto" else amp_level  # "auto" on CPU: no mixed precision
        self._loss_scale_manager = kwargs.get("loss_scale_manager")
        self._keep_batchnorm_fp32 = kwargs.get("keep_batchnorm_fp32")
        self._network = network
        self._loss_fn = loss_fn
        self._optimizer = optimizer
        self._metrics = metrics
        self._eval_network = eval_network
        self._train_network = None
        self._strategy_saved = False
        self._predict_compiled = False
        self._loaded_items: dict = {}
        self._loaded_from: str | None = None

    @property
    def predict_network(self):
        return self._network

    @property
    def train_network(self):
        return self._train_network

    # ------------------------------------------------------------------- prediction
    def _check_predict_data(self, predict_data) -> None:
        """MindSpore's rule: each input is a Tensor, int, float, str or None, or a list, tuple or
        dict of those (TypeError otherwise); in (semi-)auto parallel mode distinfer distributes only
        top-level inputs, so containers are refused there."""
        sharded = context.is_sharded_mode()
        for i, x in enumerate(predict_data):
            if isinstance(x, (Tensor,) + _SCALARS):
                continue
            if not sharded and isinstance(x, (list, tuple, dict)):
                bad = _first_bad_leaf(x)
                if bad is None:
                    continue
                raise TypeError(f"For 'Model.predict', every predict data must be a Tensor, int, float, bool, str or "
                                f"None (or a list, tuple or dict of those), but input {i} holds a "
                                f"{type(bad).__name__}")
            where = "in semi-auto parallel mode " if sharded else ""
            raise TypeError(f"For 'Model.predict', {where}every predict data must be a Tensor (or int, float, "
                            f"bool, str, None), but input {i} is {type(x).__name__}")

    @_in_network_scope
    def predict(self, *predict_data: Any, backend=None, config=None) -> Any:
        """Run the network for inference; outputs follow the dataset strategy (module doc)."""
        self._check_predict_data(predict_data)
        self._network.set_train(False)
        if not context.is_sharded_mode():
            return self._network(*predict_data)
        n = ex.stage_devices()
        # Like MindSpore's compile, the first call records layouts and writes the strategy file.
        rec = None if self._predict_compiled else ex.Recorder(
            trainable_only=context.get_auto_parallel_context("strategy_ckpt_config")["only_trainable_params"])
        with ex.recording(rec), ex.loaded_strategies(self._file_strategies()):
            out = self._network(*_distribute_inputs(predict_data, n))
            out = _map_outputs(out, lambda t: Tensor(ex.output_block(t, _output_layout(t, n))))
        if rec is not None:
            self._after_compile(rec)
            self._predict_compiled = True
        return out

    def _file_strategies(self) -> dict:
        """Strategies from ``strategy_ckpt_config["load_file"]``, read once per path."""
        path = context.strategy_ckpt_file("load_file")
        if self._loaded_from != path:
            self._loaded_items, self._loaded_from = _loaded_strategy_items(), path
        return self._loaded_items

    @_in_network_scope
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
        layouts = self._layout_run(self._network, predict_data)
        self._predict_compiled = True
        return layouts

    def _layout_run(self, network, data) -> dict:
        rec = ex.Recorder(trainable_only=context.get_auto_parallel_context("strategy_ckpt_config")[
            "only_trainable_params"])
        with ex.abstract(), ex.recording(rec), ex.loaded_strategies(self._file_strategies()):
            n = ex.stage_devices()
            inputs = [Tensor._make(None, x.shape, x.layout, dtype=x.dtype) if isinstance(x, Tensor) else x
                      for x in _distribute_inputs(data, n)]
            network(*inputs)
        return self._after_compile(rec)

    def _after_compile(self, rec: "ex.Recorder", network=None) -> dict:
        """Record ``parameter_layout_dict`` and write the strategy file if asked (MindSpore does it at compile)."""
        network = network or self._network
        layouts = {name: layout_dict_entry(p.layout) for name, p in network.parameters_and_names()
                   if p.layout is not None}
        for net in {id(network): network, id(self._network): self._network}.values():
            net._parameter_layout_dict.clear()
            net._parameter_layout_dict.update(layouts)
        save_file = context.strategy_ckpt_file("save_file")
        if save_file:
            from ..parallel.strategy import save_strategy

            save_strategy(save_file, rec, network)
        return dict(layouts)


def _loaded_strategy_items() -> dict:
    """Operator strategies from ``strategy_ckpt_config["load_file"]`` (applied by key)."""
    path = context.strategy_ckpt_file("load_file")
    if not path:
        return {}
    from ..io.strategy_file import read_strategy

    return {key: tuple(tuple(s) for s in strat) for key, (_, strat) in read_strategy(path).items.items()}
