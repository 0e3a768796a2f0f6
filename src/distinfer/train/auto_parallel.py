"""``AutoParallel(network, parallel_mode)``: a network (a Cell or a function) with its own parallel configuration.

MindSpore 2.x configures parallelism per network instead of through the global context: the
wrapper's methods (:meth:`~AutoParallel.dataset_strategy`, :meth:`~AutoParallel.hsdp`,
:meth:`~AutoParallel.pipeline`, :meth:`~AutoParallel.save_param_strategy_file` ...) record the
configuration, and it applies while the wrapped network runs. distinfer applies it as a scope of
the auto-parallel context (:func:`distinfer.context.auto_parallel_scope`) around every call of the
wrapper, and around every ``Model`` method when ``Model`` is given the wrapper; outside, the global
context is untouched.

A direct call runs as ``Model.predict`` does: each input follows the dataset strategy (with the
default ``"data_parallel"``, every rank passes its own shard of the global batch and gets back its
shard of the outputs), the first call records the operator strategies and writes the strategy
file if :meth:`~AutoParallel.save_param_strategy_file` asked for one, and the outputs come back as
ordinary Tensors. Wrapping a training-step function is MindSpore's functional training::

    parallel_step = AutoParallel(train_step, parallel_mode="semi_auto")
    loss = parallel_step(images, labels)

>>> import numpy as np, distinfer as ms
>>> from distinfer import nn
>>> from distinfer.parallel.auto_parallel import AutoParallel
>>> net = AutoParallel(nn.Dense(4, 2), parallel_mode="semi_auto")
>>> net.dataset_strategy("full_batch")
>>> net(ms.Tensor(np.ones((3, 4), np.float32))).shape, ms.get_auto_parallel_context("parallel_mode")
((3, 2), 'stand_alone')
"""
from __future__ import annotations

import contextlib
import inspect
import os
from typing import Any, Callable, Iterator

import numpy as np

from .. import context
from ..common import api
from ..nn.cell import Cell
from ..parallel import _executor as ex
from ..tensor import Tensor
from ..parallel.inputs import distribute_inputs
from .model import _loaded_strategy_items, _map_outputs, _output_layout

__all__ = ["AutoParallel", "run_graph"]

_MODES = {"semi_auto": ("semi_auto_parallel", None), "sharding_propagation": ("auto_parallel", "sharding_propagation"),
          "recursive_programming": ("auto_parallel", "recursive_programming")}
_SCHEDULERS = ("1f1b", "gpipe", "seqpipe", "seqvpp", "seqsmartvpp", "zero_bubble_v")


def _path(api: str, file_path: Any) -> str:
    if not isinstance(file_path, str):
        raise TypeError(f"the argument 'file_path' must be str, but got the type : {type(file_path)} .")
    return file_path


def _operator_file(file_path: Any) -> str:
    _path("", file_path)
    if not os.path.isabs(file_path):
        raise KeyError("the argument 'file_path' must be an absolute path.")
    if not file_path.endswith(".json"):
        raise KeyError("File type must be .json")
    return file_path


class _ParametersOf:
    """The parameters a function reaches: those of the Cells its closure and globals name (its
    network, its optimizer) and of a Cell it is called on, for the strategy file of a functional
    training step."""

    def __init__(self, fn: Callable, args: tuple = ()) -> None:
        refs = inspect.getclosurevars(fn) if inspect.isfunction(fn) else None
        values = [] if refs is None else list(refs.nonlocals.values()) + list(refs.globals.values())
        self.cells = [v for v in list(args[:1]) + values if isinstance(v, Cell)]

    def parameters_and_names(self) -> Iterator[tuple[str, Any]]:
        seen: set[int] = set()
        for cell in self.cells:
            for name, p in cell.parameters_and_names():
                if id(p) not in seen:
                    seen.add(id(p))
                    yield name, p


class AutoParallel(Cell):
    """``AutoParallel(network, parallel_mode="semi_auto")``; ``parallel_mode`` is ``"semi_auto"``,
    ``"sharding_propagation"`` or ``"recursive_programming"`` (the last two are MindSpore's auto
    parallel search modes).

    >>> from distinfer import nn
    >>> from distinfer.parallel.auto_parallel import AutoParallel
    >>> AutoParallel(nn.Dense(2, 2), parallel_mode="data_parallel")
    Traceback (most recent call last):
    ...
    ValueError: the argument 'parallel_mode' must be one of ['semi_auto', 'sharding_propagation', 'recursive_programming'], but got the value : data_parallel .
    """

    def __init__(self, network: Any, parallel_mode: str = "semi_auto") -> None:
        super().__init__(auto_prefix=False)
        if parallel_mode not in _MODES:
            raise ValueError(f"the argument 'parallel_mode' must be one of {list(_MODES)}, but got the value : "
                             f"{parallel_mode} .")
        if not isinstance(network, Cell) and not callable(network):
            raise TypeError(f"For 'AutoParallel', the argument 'network' must be a Cell or a function, but got "
                            f"{type(network).__name__}")
        self.network = network
        self._parallel_mode = parallel_mode
        self._init_param_in_compile = True
        self._load_strategy_file_path = ""
        self._save_strategy_file_path = ""
        self._only_trainable_params = True
        self._load_operator_strategy_file = ""
        self._save_operator_strategy_file = ""
        self._dataset_strategy_config: Any = "data_parallel"
        self._enable_parallel_optimizer = False
        self._optimizer_weight_shard_size = -1
        self._parallel_optimizer_threshold = 64
        self._optimizer_level = "level1"
        self._pipeline_stages = 1
        self._pipeline_result_broadcast = False
        self._pipeline_interleave = False
        self._pipeline_scheduler = "1f1b"
        self._comm_fusion_config: dict = {}
        self._force_fp32_communication = False
        self._group_ckpt_save_file = ""
        self._dump_local_norm = False
        self._dump_local_norm_path = ""
        self._dump_device_local_norm = False
        self._gradients_mean = False
        self._gradient_fp32_sync = True
        self._loss_repeated_mean = True
        self._transformer_opt_config = None
        self._compiled = False
        self._active = False

    # ------------------------------------------------------------------ configuration
    def no_init_parameters_in_compile(self) -> None:
        """Leave the parameters uninitialised while compiling (distinfer initialises each parameter's
        block when an op first uses it, so this only records the request)."""
        self._init_param_in_compile = False

    def load_param_strategy_file(self, file_path: str) -> None:
        """Read operator strategies from this strategy file (``strategy_ckpt_config["load_file"]``)."""
        self._load_strategy_file_path = _path("load_param_strategy_file", file_path)

    def save_param_strategy_file(self, file_path: str) -> None:
        """Write the strategy file here on the first run (``strategy_ckpt_config["save_file"]``)."""
        self._save_strategy_file_path = _path("save_param_strategy_file", file_path)

    def disable_strategy_file_only_for_trainable_params(self) -> None:
        """Save and load the strategies of non-trainable parameters too."""
        self._only_trainable_params = False

    def save_operator_strategy_file(self, file_path: str) -> None:
        """Where sharding propagation saves operator strategies (an absolute ``.json`` path)."""
        self._save_operator_strategy_file = _operator_file(file_path)

    def load_operator_strategy_file(self, file_path: str) -> None:
        """Where sharding propagation loads operator strategies from (an absolute ``.json`` path)."""
        self._load_operator_strategy_file = _operator_file(file_path)

    def dataset_strategy(self, config: Any) -> None:
        """``"data_parallel"`` (default: each rank feeds its batch shard), ``"full_batch"``, or per-input
        split tuples or Layouts.

        >>> from distinfer import nn
        >>> from distinfer.parallel.auto_parallel import AutoParallel
        >>> AutoParallel(nn.Dense(2, 2)).dataset_strategy("whole")
        Traceback (most recent call last):
        ...
        ValueError: For 'AutoParallel.dataset_strategy', the argument 'config' must be 'full_batch' or 'data_parallel', but got the value : whole.
        """
        if config is None:
            raise ValueError("dataset_strategy is none in config!")
        if isinstance(config, str):
            if config not in ("full_batch", "data_parallel"):
                raise ValueError(f"For 'AutoParallel.dataset_strategy', the argument 'config' must be 'full_batch' or "
                                 f"'data_parallel', but got the value : {config}.")
        elif not isinstance(config, tuple):
            raise TypeError(f"For 'AutoParallel.dataset_strategy', the argument 'config' must be str or tuple type, "
                            f"but got the type : {type(config)}.")
        else:
            for ele in config:
                if isinstance(ele, tuple):
                    for dim in ele:
                        if not isinstance(dim, int):
                            raise TypeError(f"For 'AutoParallel.dataset_strategy', the element of argument 'config' "
                                            f"must be int type, but got the type : {type(dim)} .")
                elif not hasattr(ele, "to_layout"):
                    raise TypeError(f"For 'AutoParallel.dataset_strategy', the element of argument 'config' must be "
                                    f"tuple or Layout, but got the type : {type(ele)} .")
        self._dataset_strategy_config = config

    def hsdp(self, shard_size: int = -1, threshold: int = 64, optimizer_level: str = "level1") -> None:
        """Turn on the parallel optimizer (optimizer-state and weight sharding over data-parallel replicas)."""
        if isinstance(shard_size, bool) or not isinstance(shard_size, int) or (shard_size <= 0 and shard_size != -1):
            raise ValueError(f"shard_size must be a positive integer or -1, but got {shard_size}.")
        if isinstance(threshold, bool) or not isinstance(threshold, int) or threshold < 0:
            raise ValueError(f"threshold must be a positive integer or 0, but got {threshold}.")
        if optimizer_level not in ("level1", "level2", "level3"):
            raise ValueError(f"Optimizer level should in ['level1', 'level2', 'level3'], but got {optimizer_level}")
        self._enable_parallel_optimizer = True
        self._optimizer_weight_shard_size = shard_size
        self._parallel_optimizer_threshold = threshold
        self._optimizer_level = optimizer_level

    def pipeline(self, stages: int = 1, output_broadcast: bool = False, interleave: bool = False,
                 scheduler: str = "1f1b") -> None:
        """Pipeline stages (set each Cell's ``pipeline_stage``), and whether inference results are
        broadcast from the last stage. distinfer runs the micro-batches one after another whatever
        ``interleave`` and ``scheduler`` say."""
        for name, value, kind in (("stages", stages, int), ("output_broadcast", output_broadcast, bool),
                                  ("interleave", interleave, bool), ("scheduler", scheduler, str)):
            if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
                raise TypeError(f"For 'AutoParallel.pipeline', the argument '{name}' must be {kind.__name__} type, "
                                f"but got the type : {type(value)}.")
        if stages <= 0:
            raise ValueError(f"For 'AutoParallel.pipeline', the argument 'stages' must be larger than zero, but got "
                             f"value: {stages}.")
        if scheduler not in _SCHEDULERS:
            raise ValueError(f"For 'AutoParallel.pipeline', the argument 'scheduler' must be "
                             f"{'/'.join(repr(s) for s in _SCHEDULERS)} , but got the value : {scheduler}.")
        self._pipeline_stages = stages
        self._pipeline_result_broadcast = output_broadcast
        self._pipeline_interleave = interleave
        self._pipeline_scheduler = scheduler

    def comm_fusion(self, config: dict) -> None:
        """Fusion of the parallel communication operators (recorded; distinfer does not fuse them)."""
        if not isinstance(config, dict):
            raise TypeError(f"The parameter '{config}' must be {dict}, but got {type(config)}.")
        self._comm_fusion_config = dict(config)

    def enable_fp32_communication(self) -> None:
        """Communicate in float32 (distinfer's reductions of float16/bfloat16 already add in float32)."""
        self._force_fp32_communication = True

    def set_group_ckpt_save_file(self, file_path: str) -> None:
        """Where MindSpore saves the communication-group file (recorded)."""
        self._group_ckpt_save_file = _path("set_group_ckpt_save_file", file_path)

    def print_local_norm(self) -> None:
        """Print each parameter's local norm (recorded; not printed by distinfer)."""
        self._dump_local_norm = True

    def dump_local_norm(self, file_path: str) -> None:
        """Save each parameter's local norm under ``file_path`` (recorded; not saved by distinfer)."""
        self._dump_local_norm = True
        self._dump_local_norm_path = _path("dump_local_norm", file_path)

    def enable_device_local_norm(self) -> None:
        """Dump the device local norm (recorded)."""
        self._dump_device_local_norm = True

    def enable_gradients_mean(self) -> None:
        """Average (instead of sum) data-parallel gradients."""
        self._gradients_mean = True

    def disable_gradient_fp32_sync(self) -> None:
        """Reduce float16 gradients in float16 (distinfer adds them in float32 regardless)."""
        self._gradient_fp32_sync = False

    def disable_loss_repeated_mean(self) -> None:
        """Do not divide by the repeat count in the backward pass of repeated computations."""
        self._loss_repeated_mean = False

    def get_pipeline_stages(self) -> int:
        """The configured number of pipeline stages."""
        return self._pipeline_stages

    def transformer_opt(self, file_path: Any) -> None:
        """Ascend speed-up options file (recorded; no effect on CPUs)."""
        self._transformer_opt_config = file_path

    # -------------------------------------------------------------------------- running
    def _context(self) -> dict:
        """This wrapper's configuration as auto-parallel context keys."""
        mode, search = _MODES[self._parallel_mode]
        keys: dict[str, Any] = {
            "parallel_mode": mode, "dataset_strategy": self._dataset_strategy_config,
            "enable_parallel_optimizer": self._enable_parallel_optimizer,
            "optimizer_weight_shard_size": self._optimizer_weight_shard_size,
            "parallel_optimizer_config": {"parallel_optimizer_threshold": self._parallel_optimizer_threshold,
                                          "optimizer_weight_shard_size": self._optimizer_weight_shard_size,
                                          "optimizer_level": self._optimizer_level},
            "pipeline_stages": self._pipeline_stages, "pipeline_result_broadcast": self._pipeline_result_broadcast,
            "pipeline_config": {"pipeline_interleave": self._pipeline_interleave,
                                "pipeline_scheduler": self._pipeline_scheduler},
            "comm_fusion": self._comm_fusion_config, "force_fp32_communication": self._force_fp32_communication,
            "group_ckpt_save_file": self._group_ckpt_save_file, "dump_local_norm": self._dump_local_norm,
            "dump_local_norm_path": self._dump_local_norm_path,
            "dump_device_local_norm": self._dump_device_local_norm, "gradients_mean": self._gradients_mean,
            "gradient_fp32_sync": self._gradient_fp32_sync, "loss_repeated_mean": self._loss_repeated_mean,
            "strategy_ckpt_config": {"load_file": self._load_strategy_file_path,
                                     "save_file": self._save_strategy_file_path,
                                     "only_trainable_params": self._only_trainable_params},
        }
        if search is not None:
            keys["search_mode"] = search
        return keys

    @contextlib.contextmanager
    def parallel_scope(self) -> Iterator[None]:
        """This wrapper's configuration in force for the block (``Model`` enters it for its network).

        >>> import distinfer as ms
        >>> from distinfer import nn
        >>> from distinfer.parallel.auto_parallel import AutoParallel
        >>> net = AutoParallel(nn.Dense(2, 2)); net.pipeline(stages=2)
        >>> with net.parallel_scope():
        ...     ms.get_auto_parallel_context("pipeline_stages"), ms.get_auto_parallel_context("parallel_mode")
        (2, 'semi_auto_parallel')
        """
        if self._active:
            yield
            return
        with context.auto_parallel_scope(**self._context()):
            self._active = True
            try:
                yield
            finally:
                self._active = False

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if self._active:  # inside Model (or a nested call): the caller already laid the inputs out
            return self.network(*args, **kwargs)
        with self.parallel_scope():
            return self._run(args, kwargs)

    def construct(self, *args: Any, **kwargs: Any) -> Any:
        return self.network(*args, **kwargs)

    def _run(self, args: tuple, kwargs: dict) -> Any:
        first = not self._compiled
        self._compiled = True
        owner = self.network if isinstance(self.network, Cell) else _ParametersOf(self.network)
        return run_graph(self.network, args, kwargs, first, owner)


def run_graph(fn: Callable, args: tuple, kwargs: dict, first: bool, owner: Any = None,
              layout_only: bool = False) -> Any:
    """Run ``fn`` as MindSpore runs a compiled graph in the current parallel mode (module doc): in
    (semi-)auto parallel mode the Tensor inputs and outputs follow the dataset strategy, and the first
    call records the operator strategies and writes the strategy file if one is asked for. ``owner``
    holds the parameters the strategy file lists (default: what ``fn`` reaches). ``layout_only``
    compiles without computing (``Cell.compile``): parameters get their layouts, nothing is returned.

    :func:`distinfer.jit` functions, and Cells called from outside any graph in ``GRAPH_MODE``, run
    through this. A call made while a gradient tape or an export tracer records the ops is a plain call:
    its inputs and outputs belong to that recording.

    >>> import numpy as np, distinfer as ms
    >>> from distinfer.train.auto_parallel import run_graph
    >>> run_graph(lambda x: x * 2, (ms.Tensor(np.ones(2, np.float32)),), {}, True).asnumpy().tolist()
    [2.0, 2.0]
    """
    with api.graph_scope():
        # A gradient tape or an export tracer recording the ops holds the call inside its own run.
        if not context.is_sharded_mode() or ex.is_observed():
            return None if layout_only else fn(*args, **kwargs)
        config = context.get_auto_parallel_context("strategy_ckpt_config")
        rec = ex.Recorder(trainable_only=config["only_trainable_params"]) if first else None
        with ex.recording(rec), ex.loaded_strategies(_loaded_strategy_items()):
            out = _layout_run(fn, args, kwargs) if layout_only else _run(fn, args, kwargs)
    if first and config["save_file"]:
        from ..parallel.strategy import save_strategy

        save_strategy(config["save_file"], rec, owner if owner is not None else _ParametersOf(fn, args))
    return out


def _run(fn: Callable, args: tuple, kwargs: dict) -> Any:
    n = ex.stage_devices()
    out = fn(*distribute_inputs(args, n), **kwargs)
    return _map_outputs(out, lambda t: _graph_output(t, n))


def _graph_output(t: Tensor, n: int) -> Tensor:
    """This rank's share of a graph output; zeros for one this rank has no data of (the gradient of
    another pipeline stage's parameter), as MindSpore's stages return."""
    target = _output_layout(t, n)
    if t.local is None and t.init is None and t.spec.stage is None:
        return Tensor(np.zeros(target.local_shape, dtype=t.dtype.np))
    return Tensor(ex.output_block(t, target))


def _layout_run(fn: Callable, args: tuple, kwargs: dict) -> None:
    with ex.abstract():
        inputs = distribute_inputs(args, ex.stage_devices())
        fn(*[Tensor._make(None, x.shape, x.layout, dtype=x.dtype) if isinstance(x, Tensor) else x for x in inputs],
           **kwargs)


api._Graph.runner = run_graph  # how ms.jit runs a function called from outside any graph
