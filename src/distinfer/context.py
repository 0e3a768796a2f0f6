"""``set_context`` and the auto-parallel context, with MindSpore's keys, defaults and checks.

>>> import distinfer as ms
>>> ms.set_auto_parallel_context(parallel_mode=ms.ParallelMode.SEMI_AUTO_PARALLEL, full_batch=True)
>>> ms.get_auto_parallel_context("dataset_strategy")
'full_batch'
>>> ms.reset_auto_parallel_context()
"""
from __future__ import annotations

import contextlib
import copy
from typing import Any, Iterator

from .errors import type_error

__all__ = ["set_context", "get_context", "set_device", "set_auto_parallel_context", "get_auto_parallel_context",
           "reset_auto_parallel_context", "ParallelMode", "GRAPH_MODE", "PYNATIVE_MODE"]

GRAPH_MODE = 0
PYNATIVE_MODE = 1


class ParallelMode:
    """Parallel modes; the constants are the strings MindSpore uses.

    >>> import distinfer as ms
    >>> ms.ParallelMode.SEMI_AUTO_PARALLEL, ms.ParallelMode.MODE_LIST[0]
    ('semi_auto_parallel', 'stand_alone')
    """

    STAND_ALONE = "stand_alone"
    DATA_PARALLEL = "data_parallel"
    HYBRID_PARALLEL = "hybrid_parallel"
    SEMI_AUTO_PARALLEL = "semi_auto_parallel"
    AUTO_PARALLEL = "auto_parallel"
    MODE_LIST = [STAND_ALONE, DATA_PARALLEL, HYBRID_PARALLEL, SEMI_AUTO_PARALLEL, AUTO_PARALLEL]


# ------------------------------------------------------------------------------ set_context
# MindSpore 2.x starts in PYNATIVE_MODE (2.0 changed the default from GRAPH_MODE).
_CONTEXT_DEFAULTS: dict[str, Any] = {
    "mode": PYNATIVE_MODE, "device_target": "CPU", "device_id": 0, "save_graphs": False,
    "save_graphs_path": ".", "max_call_depth": 1000, "jit_config": {}, "max_device_memory": "1024GB",
    "deterministic": "OFF", "pynative_synchronize": False, "runtime_num_threads": 30,
    "memory_optimize_level": "O0", "enable_graph_kernel": False, "precompile_only": False,
    "jit_syntax_level": 2, "ascend_config": {}, "print_file_path": "", "env_config_path": "",
    "debug_level": 0, "reserve_class_name_in_scope": True, "check_bprop": False,
    "enable_compile_cache": False, "compile_cache_path": ".", "inter_op_parallel_num": 0,
    "aoe_tune_mode": "", "op_timeout": 900, "mempool_block_size": "1GB", "enable_reduce_precision": True,
    "enable_dump": False, "save_dump_path": ".", "variable_memory_max_size": "30GB", "gpu_config": {},
    "comm_timeout": None,  # distinfer's watchdog (seconds); None: DISTINFER_COMM_TIMEOUT, else 600
    "jit_level": "",
}
_context: dict[str, Any] = dict(_CONTEXT_DEFAULTS)
# The types MindSpore's set_context checks (a wrong type is a TypeError); bool passes for int, as there.
_CONTEXT_TYPES: dict[str, tuple] = {
    "mode": (int,), "device_target": (str,), "device_id": (int,), "save_graphs": (bool, int),
    "save_graphs_path": (str,), "max_call_depth": (int,), "jit_config": (dict,), "max_device_memory": (str,),
    "deterministic": (str,), "pynative_synchronize": (bool,), "runtime_num_threads": (int,),
    "enable_graph_kernel": (bool,), "precompile_only": (bool,), "jit_syntax_level": (int,),
    "ascend_config": (dict,), "print_file_path": (str,), "env_config_path": (str,), "debug_level": (int,),
    "reserve_class_name_in_scope": (bool,), "check_bprop": (bool,), "enable_compile_cache": (bool,),
    "inter_op_parallel_num": (int,), "aoe_tune_mode": (str,), "op_timeout": (int,), "mempool_block_size": (str,),
    "enable_reduce_precision": (bool,), "variable_memory_max_size": (str,), "gpu_config": (dict,),
    "comm_timeout": (int, float),
    "jit_level": (str,),
}
# set_context(jit_config=...): its keys and their values.
_JIT_CONFIG = {"jit_level": ["O0", "O1", "O2"], "infer_boost": ["on", "off"]}


def _reject(func: str, key: str, value: Any, allowed: Any) -> None:
    raise ValueError(f"For '{func}', the argument '{key}' must be {allowed}, but got {value!r}.")


def set_context(**kwargs: Any) -> None:
    """Set global context keys (``mode``, ``device_target``...). CPU is the only device.

    As in MindSpore 2.x the default ``mode`` is ``PYNATIVE_MODE``; a value of the wrong type is
    a TypeError, an unknown key or value a ValueError.

    >>> import distinfer as ms
    >>> old = ms.get_context("mode")
    >>> ms.set_context(mode=ms.GRAPH_MODE)
    >>> ms.get_context("mode") == ms.GRAPH_MODE
    True
    >>> ms.set_context(mode=old)
    """
    for key, value in kwargs.items():
        if key not in _CONTEXT_DEFAULTS:
            raise ValueError(f"For 'set_context', the keyword argument {key!r} is not recognized; "
                             f"valid keys: {sorted(_CONTEXT_DEFAULTS)}")
        types = _CONTEXT_TYPES.get(key)
        if types is not None and value is not None and not isinstance(value, types):
            raise type_error("set_context", key, value, " or ".join(t.__name__ for t in types))
        if key == "mode" and value not in (GRAPH_MODE, PYNATIVE_MODE):
            _reject("set_context", key, value, "GRAPH_MODE (0) or PYNATIVE_MODE (1)")
        if key == "device_target" and value not in ("CPU", "GPU", "Ascend"):
            _reject("set_context", key, value, "one of 'CPU', 'GPU', 'Ascend'")
        if key == "comm_timeout":
            _set_comm_timeout(value)
        if key == "jit_config":
            _check_jit_config(value)
        _context[key] = value


def _set_comm_timeout(value: Any) -> None:
    """distinfer's watchdog: a communication step (collective, exchange, the wait for the other
    ranks at exit) that waits longer than ``value`` seconds ends the job, naming the step and the
    ranks that have not arrived. 0 waits forever; None restores ``DISTINFER_COMM_TIMEOUT`` (else
    600 s). Under MindSpore this key does not exist.

    >>> import distinfer as ms
    >>> ms.set_context(comm_timeout=120)
    >>> ms.get_context("comm_timeout")
    120
    >>> ms.set_context(comm_timeout=None)
    """
    if isinstance(value, bool) or (value is not None and value < 0):
        _reject("set_context", "comm_timeout", value, "a number of seconds >= 0 (0 waits forever) or None")
    from .communication import _backend

    _backend.set_comm_timeout(value)


def _check_jit_config(config: dict) -> None:
    for k, v in config.items():
        if k not in _JIT_CONFIG:
            raise ValueError(f"For 'context.set_context', the key of argument 'jit_config' must be one of "
                             f"{_JIT_CONFIG}, but got {k}.")
        if v not in _JIT_CONFIG[k]:
            raise ValueError(f"For 'jit_config', the value of argument {k} must be one of {_JIT_CONFIG[k]}, but "
                             f"got {v}.")


def set_device(device_target: str, device_id: int | None = None) -> None:
    """``mindspore.set_device``: the device type (and id) the process runs on; distinfer computes
    on the CPU whatever it is, and records it for :func:`get_context`.

    >>> import distinfer as ms
    >>> ms.set_device("CPU"); ms.get_context("device_target")
    'CPU'
    >>> ms.set_device("TPU")
    Traceback (most recent call last):
    ...
    ValueError: The argument 'device_target' must be one of ['CPU', 'GPU', 'Ascend'], but got TPU.
    """
    if device_target not in ("CPU", "GPU", "Ascend"):
        raise ValueError(f"The argument 'device_target' must be one of ['CPU', 'GPU', 'Ascend'], but got "
                         f"{device_target}.")
    set_context(device_target=device_target)
    if device_id is not None:
        set_context(device_id=device_id)


def get_context(key: str) -> Any:
    """Value of a context key set by :func:`set_context`.

    >>> import distinfer as ms
    >>> ms.get_context("max_call_depth")
    1000
    >>> ms.get_context("no_such_key")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: For 'get_context', the key 'no_such_key' is not recognized; valid keys: [...]
    """
    if key not in _context:
        raise ValueError(f"For 'get_context', the key {key!r} is not recognized; valid keys: {sorted(_context)}")
    return _context[key]


# ------------------------------------------------------------------- auto-parallel context
_STRATEGY_CKPT_KEYS = {"load_file": "", "save_file": "", "only_trainable_params": True}
_SEARCH_MODES = ("recursive_programming", "sharding_propagation", "dynamic_programming")
_PIPELINE_SCHEDULERS = ("gpipe", "1f1b", "seqpipe", "seqvpp", "seqsmartvpp", "zero_bubble_v")

_AP_DEFAULTS: dict[str, Any] = {
    "parallel_mode": ParallelMode.STAND_ALONE,
    "device_num": 1,
    "global_rank": 0,
    "gradients_mean": False,
    "gradient_fp32_sync": True,
    "loss_repeated_mean": True,
    "full_batch": False,
    "dataset_strategy": "data_parallel",
    "search_mode": "recursive_programming",
    "pipeline_stages": 1,
    "pipeline_result_broadcast": False,
    "pipeline_config": {},
    "enable_parallel_optimizer": False,
    "parallel_optimizer_config": {},
    "strategy_ckpt_config": dict(_STRATEGY_CKPT_KEYS),
    "group_ckpt_save_file": "",
    "parameter_broadcast": False,
    "enable_alltoall": False,
    "all_reduce_fusion_config": [],
    "comm_fusion": {},
    "force_fp32_communication": False,
    "auto_pipeline": False,
    "dump_local_norm": False,
    "dump_local_norm_path": "",
    "dump_device_local_norm": False,
    "optimizer_weight_shard_size": -1,
    "optimizer_weight_shard_aggregated_save": False,
    "sharding_propagation": False,
}
_ALIASES = {"auto_parallel_search_mode": "search_mode"}
_LEGACY_CKPT = {"strategy_ckpt_load_file": "load_file", "strategy_ckpt_save_file": "save_file"}

_ap: dict[str, Any] = copy.deepcopy(_AP_DEFAULTS)
_explicit: set[str] = set()  # keys the user set (device_num/global_rank otherwise follow init())


_AP = "set_auto_parallel_context"
# MindSpore's type checks on set_auto_parallel_context (a wrong type is a TypeError, before any value check).
_AP_TYPES: dict[str, tuple] = {
    "parallel_mode": (str,), "search_mode": (str,), "group_ckpt_save_file": (str,), "dump_local_norm_path": (str,),
    "pipeline_config": (dict,), "parallel_optimizer_config": (dict,), "comm_fusion": (dict,),
    "strategy_ckpt_config": (dict,), "all_reduce_fusion_config": (list,),
}
_PARALLEL_OPTIMIZER_KEYS = ("gradient_accumulation_shard", "parallel_optimizer_threshold",
                            "optimizer_weight_shard_size", "optimizer_level")
_OPTIMIZER_LEVELS = ("level1", "level2", "level3")


def _check_int(key: str, value: Any, lo: int, hi: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise type_error(_AP, key, value, "an int")
    if not lo <= value <= hi:
        _reject(_AP, key, value, f"an int in [{lo}, {hi}]")
    return value


def _check_bool(key: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise type_error(_AP, key, value, "a bool")
    return value


def _check_dataset_strategy(value: Any) -> Any:
    """A str must be one of the two modes (ValueError); otherwise a tuple of per-input tuples of
    ints, or of Layouts (anything else is a TypeError, as in MindSpore; lists are accepted too)."""
    expected = ("'data_parallel', 'full_batch', a tuple of per-input split tuples such as ((1, 8), (1, 8)), "
                "or a tuple of Layouts")
    if isinstance(value, str):
        if value not in ("data_parallel", "full_batch"):
            _reject(_AP, "dataset_strategy", value, expected)
        return value
    if not isinstance(value, (tuple, list)):
        raise type_error(_AP, "dataset_strategy", value, expected)
    if value and all(hasattr(s, "to_dict") for s in value):
        for s in value:
            s.to_dict()  # a Layout without its tensor map raises here
        return tuple(value)
    for s in value:
        if not isinstance(s, (tuple, list)) or not all(isinstance(d, int) and not isinstance(d, bool) for d in s):
            raise type_error(_AP, "dataset_strategy", value, expected)
    if not value or not all(d >= 1 for s in value for d in s):
        _reject(_AP, "dataset_strategy", value, expected)
    return tuple(tuple(s) for s in value)


def _check_strategy_ckpt_config(value: Any) -> dict:
    unknown = set(value) - set(_STRATEGY_CKPT_KEYS)
    if unknown:
        raise ValueError(f"For '{_AP}', 'strategy_ckpt_config' got unknown keys "
                         f"{sorted(unknown)}; valid keys: {sorted(_STRATEGY_CKPT_KEYS)}")
    merged = dict(_ap["strategy_ckpt_config"])
    for k, v in value.items():
        if k == "only_trainable_params":
            _check_bool("strategy_ckpt_config.only_trainable_params", v)
        elif not isinstance(v, str):
            raise type_error(_AP, f"strategy_ckpt_config.{k}", v, "a str path")
        merged[k] = v
    return merged


def _check_parallel_optimizer_config(value: dict) -> dict:
    unknown = set(value) - set(_PARALLEL_OPTIMIZER_KEYS)
    if unknown:
        raise ValueError(f"For '{_AP}', 'parallel_optimizer_config' got unknown keys {sorted(unknown)}; "
                         f"valid keys: {list(_PARALLEL_OPTIMIZER_KEYS)}")
    for k, v in value.items():
        name = f"parallel_optimizer_config.{k}"
        if k == "gradient_accumulation_shard":
            _check_bool(name, v)
        elif k == "optimizer_level":
            if not isinstance(v, str):
                raise type_error(_AP, name, v, "a str")
            if v not in _OPTIMIZER_LEVELS:
                _reject(_AP, name, v, f"one of {list(_OPTIMIZER_LEVELS)}")
        else:
            if isinstance(v, bool) or not isinstance(v, int):
                raise type_error(_AP, name, v, "an int")
            if k == "parallel_optimizer_threshold" and v < 0:
                _reject(_AP, name, v, "a non-negative int (KB)")
    return dict(value)


def set_auto_parallel_context(**kwargs: Any) -> None:
    """Set auto-parallel keys (``parallel_mode``, ``device_num``, ``full_batch``,
    ``dataset_strategy``, ``pipeline_stages``, ``strategy_ckpt_config``...), checked as MindSpore does:
    a value of the wrong type is a TypeError, an unknown key or a
    value out of range a ValueError.

    >>> import distinfer as ms
    >>> ms.set_auto_parallel_context(parallel_mode="semi_auto_parallel", device_num=8, dataset_strategy=((2, 1),))
    >>> ms.get_auto_parallel_context("device_num"), ms.get_auto_parallel_context("full_batch")
    (8, False)
    >>> ms.set_auto_parallel_context(device_num=0)
    Traceback (most recent call last):
    ...
    ValueError: For 'set_auto_parallel_context', the argument 'device_num' must be an int in [1, 4096], but got 0.
    >>> ms.reset_auto_parallel_context()
    """
    for key, value in kwargs.items():
        key = _ALIASES.get(key, key)
        if key in _LEGACY_CKPT:
            if not isinstance(value, str):
                raise type_error(_AP, key, value, "a str path")
            _ap["strategy_ckpt_config"] = {**_ap["strategy_ckpt_config"], _LEGACY_CKPT[key]: value}
            continue
        if key not in _AP_DEFAULTS:
            raise ValueError(f"For '{_AP}', the keyword argument {key!r} is not "
                             f"recognized; valid keys: {sorted(list(_AP_DEFAULTS) + list(_LEGACY_CKPT))}")
        types = _AP_TYPES.get(key)
        if types is not None and not isinstance(value, types):
            raise type_error(_AP, key, value, "a " + " or ".join(t.__name__ for t in types))
        if key == "parallel_mode":
            if value not in ParallelMode.MODE_LIST:
                _reject(_AP, key, value, f"one of {ParallelMode.MODE_LIST}")
        elif key == "device_num":
            value = _check_int(key, value, 1, 4096)
        elif key == "global_rank":
            value = _check_int(key, value, 0, 4095)
        elif key == "pipeline_stages":
            value = _check_int(key, value, 1, 4096)
        elif key == "optimizer_weight_shard_size":
            if isinstance(value, bool) or not isinstance(value, int):
                raise type_error(_AP, key, value, "an int")
        elif key == "search_mode":
            if value not in _SEARCH_MODES:
                _reject(_AP, key, value, f"one of {list(_SEARCH_MODES)}")
        elif key == "dataset_strategy":
            value = _check_dataset_strategy(value)
            _ap["full_batch"] = value == "full_batch"
        elif key == "full_batch":
            _check_bool(key, value)
            _ap["dataset_strategy"] = "full_batch" if value else "data_parallel"
        elif key == "strategy_ckpt_config":
            value = _check_strategy_ckpt_config(value)
        elif key == "parallel_optimizer_config":
            value = _check_parallel_optimizer_config(value)
        elif key == "pipeline_config":
            if value.get("pipeline_scheduler", "1f1b") not in _PIPELINE_SCHEDULERS:
                _reject(_AP, key, value, f"a dict with pipeline_scheduler in {list(_PIPELINE_SCHEDULERS)}")
        elif isinstance(_AP_DEFAULTS[key], bool):
            _check_bool(key, value)
        _ap[key] = value
        _explicit.add(key)


def get_auto_parallel_context(attr_key: str) -> Any:
    """Current value of an auto-parallel key (``device_num`` follows ``init()`` unless set).

    MindSpore's older spellings are read too; the value returned is a copy.

    >>> import distinfer as ms
    >>> ms.set_auto_parallel_context(strategy_ckpt_save_file="./strategy.ckpt")
    >>> ms.get_auto_parallel_context("strategy_ckpt_config")["save_file"]
    './strategy.ckpt'
    >>> ms.reset_auto_parallel_context()
    """
    key = _ALIASES.get(attr_key, attr_key)
    if key in _LEGACY_CKPT:
        return _ap["strategy_ckpt_config"][_LEGACY_CKPT[key]]
    if key not in _ap:
        raise ValueError(f"For 'get_auto_parallel_context', the key {attr_key!r} is not recognized; "
                         f"valid keys: {sorted(list(_ap) + list(_LEGACY_CKPT))}")
    value = _ap[key]
    # Immutable values need no copy (the runtime reads some of them on every op).
    return value if isinstance(value, (int, float, str, type(None))) else copy.deepcopy(value)


def reset_auto_parallel_context() -> None:
    """Restore every auto-parallel key to its default.

    >>> import distinfer as ms
    >>> ms.set_auto_parallel_context(pipeline_stages=2)
    >>> ms.reset_auto_parallel_context()
    >>> ms.get_auto_parallel_context("pipeline_stages")
    1
    """
    _ap.clear()
    _ap.update(copy.deepcopy(_AP_DEFAULTS))
    _explicit.clear()
    from .communication import _backend

    if _backend.is_started():
        _on_comm_init(_backend.world().rank, _backend.world().size)


@contextlib.contextmanager
def auto_parallel_scope(**overrides: Any) -> Iterator[None]:
    """Auto-parallel keys set (and checked) as :func:`set_auto_parallel_context` sets them, for the
    duration of a block; the previous values come back afterwards, even on errors. This is how a
    network wrapped in ``AutoParallel`` carries its own configuration.

    >>> import distinfer as ms
    >>> from distinfer.context import auto_parallel_scope
    >>> with auto_parallel_scope(parallel_mode="semi_auto_parallel", pipeline_stages=2):
    ...     ms.get_auto_parallel_context("pipeline_stages")
    2
    >>> ms.get_auto_parallel_context("pipeline_stages"), ms.get_auto_parallel_context("parallel_mode")
    (1, 'stand_alone')
    """
    saved, explicit = copy.deepcopy(_ap), set(_explicit)
    try:
        set_auto_parallel_context(**overrides)
        yield
    finally:
        _ap.clear()
        _ap.update(saved)
        _explicit.clear()
        _explicit.update(explicit)
        from .communication import _backend

        if _backend.is_started():  # init() may have run inside the block
            _on_comm_init(_backend.world().rank, _backend.world().size)


def _on_comm_init(rank: int, size: int) -> None:
    """``init()`` fills device_num and global_rank unless the user set them."""
    if "device_num" not in _explicit:
        _ap["device_num"] = size
    if "global_rank" not in _explicit:
        _ap["global_rank"] = rank


# -------------------------------------------------------------------- runtime helpers
def parallel_mode() -> str:
    return _ap["parallel_mode"]


def setting(key: str) -> Any:
    """An auto-parallel value as stored (no copy, no alias lookup): for the runtime's hot path."""
    return _ap[key]


def is_sharded_mode() -> bool:
    """True when ``.shard()`` strategies apply (semi-auto or auto parallel)."""
    return _ap["parallel_mode"] in (ParallelMode.SEMI_AUTO_PARALLEL, ParallelMode.AUTO_PARALLEL)


def strategy_ckpt_file(which: str) -> str:
    """``strategy_ckpt_config['load_file' | 'save_file']``."""
    return _ap["strategy_ckpt_config"][which]
