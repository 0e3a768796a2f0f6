"""MindSpore 2.10's checkpoint API: ``save_checkpoint``, ``load_checkpoint``, ``load_param_into_net``
and the ckpt <-> safetensors converters (spec §1.4, §1.7-§1.9, §2).

Files are written and read through :mod:`distinfer.io` (protobuf ``.ckpt`` and safetensors; never
pickle). In semi-auto parallel mode ``save_checkpoint(..., integrated_save=True)`` gathers every
laid-out parameter to its full tensor on every rank (a collective: every rank must call it with
the same objects in the same order); ``integrated_save=False`` writes each rank's own block.
``load_param_into_net`` accepts, for a sliced parameter, either its local block or the full tensor.

>>> import os, tempfile, numpy as np, distinfer as ms
>>> net = ms.nn.Dense(3, 2)
>>> path = os.path.join(tempfile.mkdtemp(), "net")
>>> ms.save_checkpoint(net, path, append_dict={"epoch_num": 1})
>>> params = ms.load_checkpoint(path + ".ckpt")
>>> sorted(params), params["epoch_num"].dtype
(['bias', 'epoch_num', 'weight'], Int64)
>>> ms.load_param_into_net(ms.nn.Dense(3, 2), params)
([], ['epoch_num'])
"""
from __future__ import annotations

import atexit
import io as _pyio
import logging
import os
import re
import tempfile
import threading
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Iterable, Iterator, Mapping, Optional, Sequence, Union

import numpy as np

from . import context
from . import dtype as mstype
from .errors import check_type
from .io.ckpt import CkptFile, RawValue, write_ckpt
from .io.safetensors_io import SafetensorsFile, write_safetensors
from .layout import replicated
from .tensor import Parameter, Tensor

__all__ = ["save_checkpoint", "load_checkpoint", "load_param_into_net", "load_segmented_checkpoints",
           "ckpt_to_safetensors", "safetensors_to_ckpt"]

log = logging.getLogger(__name__)

_FORMATS = ("ckpt", "safetensors")
_ENCRYPTION_ERROR = "encryption is not supported by distinfer"
# MindSpore's int family for load-time conversion excludes the unsigned types (spec §1.8).
_FLOAT_FAMILY = frozenset(mstype.float_types)
_INT_FAMILY = frozenset((mstype.int8, mstype.int16, mstype.int32, mstype.int64, mstype.qint4x2))

Filter = Optional[Union[str, Sequence[str]]]


# ===================================================================================== async saves
class _AsyncSaves:
    """Background checkpoint writers: a new save, a load and process exit wait for them."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.threads: list[threading.Thread] = []
        self.errors: list[tuple[str, BaseException]] = []

    def start(self, path: str, write: Callable[[], None]) -> None:
        def run() -> None:
            try:
                write()
            except BaseException as exc:  # reported by the next wait()
                log.error("asynchronous save of %s failed: %s", path, exc)
                with self.lock:
                    self.errors.append((path, exc))

        thread = threading.Thread(target=run, name=f"distinfer-save:{os.path.basename(path)}")
        with self.lock:
            self.threads.append(thread)
        thread.start()

    def wait(self, raise_errors: bool = True) -> None:
        """Join every pending save; re-raise the first failure (as RuntimeError) if asked."""
        while True:
            with self.lock:
                pending, self.threads = self.threads, []
            if not pending:
                break
            for t in pending:
                t.join()
        with self.lock:
            errors, self.errors = self.errors, []
        if errors and raise_errors:
            path, exc = errors[0]
            raise RuntimeError(f"the asynchronous save of {path} failed: {exc}") from exc


_ASYNC = _AsyncSaves()
atexit.register(_ASYNC.wait, False)


def _wait_async_saves() -> None:
    """Block until every ``save_checkpoint(..., async_save=...)`` of this process has finished."""
    _ASYNC.wait()


# ===================================================================================== saving
def _check_save_target(save_obj: Any, ckpt_file_name: Any, fmt: str) -> str:
    """MindSpore's checks; returns the real path, with ``.<format>`` appended when it does not end so."""
    if fmt not in _FORMATS:
        raise ValueError(f"For 'save_checkpoint', the format must be 'safetensors' or 'ckpt', but got {fmt!r}.")
    from .nn.cell import Cell

    if not isinstance(save_obj, (Cell, list, dict)):
        raise TypeError(f"For 'save_checkpoint', the parameter 'save_obj' must be nn.Cell, list or dict, "
                        f"but got {type(save_obj).__name__}.")
    if not isinstance(ckpt_file_name, str):
        raise TypeError(f"For 'save_checkpoint', 'ckpt_file_name' must be a str, but got "
                        f"{type(ckpt_file_name).__name__} ({ckpt_file_name!r}).")
    path = os.path.realpath(ckpt_file_name)
    if os.path.isdir(path):
        raise IsADirectoryError(f"For 'save_checkpoint', 'ckpt_file_name' {path} is a directory; it must be a "
                                f"file name.")
    # MindSpore tests endswith(format), not endswith("." + format).
    return path if path.endswith(fmt) else f"{path}.{fmt}"


def _named_objects(save_obj: Any, choice_func: Optional[Callable[[str], bool]]) -> list[tuple[str, Any]]:
    """``(name, object)`` pairs of ``save_obj`` in MindSpore's order, filtered by ``choice_func``."""
    from .nn.cell import Cell

    if isinstance(save_obj, Cell):
        # In parallel mode a parameter never laid out here (another pipeline stage's, or unused) is not
        # this rank's to save: MindSpore drops ``not param.sliced or param.has_init`` the same way.
        sharded = context.is_sharded_mode()
        pairs: Iterable[tuple[str, Any]] = ((p.name, p) for _, p in save_obj.parameters_and_names()
                                           if not (sharded and p.has_init and p.layout is None))
    elif isinstance(save_obj, dict):
        pairs = save_obj.items()
    elif save_obj and not isinstance(save_obj[0], dict):
        pairs = (_list_parameter(i, e) for i, e in enumerate(save_obj))  # e.g. net.trainable_params()
    else:
        pairs = (_list_entry(i, e) for i, e in enumerate(save_obj))
    out = []
    for name, obj in pairs:
        if not isinstance(name, str):
            raise TypeError(f"For 'save_checkpoint', parameter names must be str, got {type(name).__name__} "
                            f"({name!r}).")
        if choice_func is None or choice_func(name):
            out.append((name, obj))
    return out


def _list_parameter(index: int, entry: Any) -> tuple[str, Any]:
    """An element of a list of Parameters (MindSpore decides the list's kind by its first element)."""
    if not isinstance(entry, Parameter):
        raise TypeError(f"For 'save_checkpoint', a list save_obj must hold Parameters (like "
                        f"net.trainable_params()) or dicts with keys 'name' and 'data', but element {index} is "
                        f"{type(entry).__name__}.")
    return entry.name, entry


def _list_entry(index: int, entry: Any) -> tuple[str, Any]:
    if not isinstance(entry, dict) or "name" not in entry or "data" not in entry:
        raise TypeError(f"For 'save_checkpoint', element {index} of a list save_obj must be a dict with keys "
                        f"'name' and 'data', but got {entry!r:.80}.")
    return entry["name"], entry["data"]


def _needs_gather(t: Tensor) -> bool:
    lay = t.layout
    return lay is not None and (t.spec.is_partial or not lay.is_replicated)


def _tensor_value(name: str, t: Tensor, integrated_save: bool) -> Any:
    """What to write for Tensor ``t``: its full value (gathered) or this rank's block."""
    if t.dtype is mstype.qint4x2:
        if _needs_gather(t):
            raise NotImplementedError(f"{name!r}: saving a laid-out Int4 (qint4x2) tensor is not supported")
        return RawValue(mstype.qint4x2, t.shape, np.ascontiguousarray(t.asnumpy()))
    if integrated_save and _needs_gather(t) and context.is_sharded_mode():
        from .parallel import _executor

        if context.get_auto_parallel_context("pipeline_stages") > 1:
            raise RuntimeError("Pipeline Parallel don't support Integrated save checkpoint now "
                               f"(parameter {name!r}); use integrated_save=False.")
        full = _executor.to_layout(t, replicated(t.global_shape, t.layout.num_devices))
        return full.asnumpy()
    return t.asnumpy()


def _value(name: str, obj: Any, integrated_save: bool) -> Any:
    """Convert one object to a value :func:`write_ckpt` understands (spec §1.4 conversions)."""
    if isinstance(obj, Tensor):
        return _tensor_value(name, obj, integrated_save)
    if isinstance(obj, (np.ndarray, np.generic)):
        return np.asarray(obj)
    if isinstance(obj, (bool, int, float, str)):  # Bool / Int64 / Float32 scalars, str records
        return obj
    raise TypeError(f"For 'save_checkpoint', {name!r} has type {type(obj).__name__}; expected a Parameter, "
                    f"Tensor, numpy array, int, float, bool or str.")


def _collect(save_obj: Any, append_dict: Optional[Mapping[str, Any]], integrated_save: bool,
             choice_func: Optional[Callable[[str], bool]]) -> "OrderedDict[str, Any]":
    """Every record to write, in file order; a later duplicate name replaces the value in place
    (MindSpore keeps its records in an OrderedDict)."""
    if choice_func is not None and not callable(choice_func):
        raise TypeError(f"For 'save_checkpoint', 'choice_func' must be callable, got {type(choice_func).__name__}.")
    if append_dict is not None and not isinstance(append_dict, dict):
        raise TypeError(f"For 'save_checkpoint', 'append_dict' must be a dict, got {type(append_dict).__name__}.")
    records: "OrderedDict[str, Any]" = OrderedDict()
    for name, obj in _named_objects(save_obj, choice_func):
        if name == "random_op":  # MindSpore skips this internal name
            continue
        records[name] = _value(name, obj, integrated_save)
    for name, obj in (append_dict or {}).items():
        if not isinstance(name, str):
            raise TypeError(f"For 'save_checkpoint', append_dict keys must be str, got {name!r}.")
        if not isinstance(obj, (Tensor, bool, int, float, str)):
            raise TypeError(f"For 'save_checkpoint', append_dict[{name!r}] has type {type(obj).__name__}; "
                            f"expected int, float, bool, str, Tensor or Parameter.")
        records[name] = _value(name, obj, integrated_save)
    return records


def _snapshot(records: "OrderedDict[str, Any]") -> "OrderedDict[str, Any]":
    """Private copies of arrays, so an asynchronous writer is immune to later updates."""
    out: "OrderedDict[str, Any]" = OrderedDict()
    for name, v in records.items():
        if isinstance(v, np.ndarray):
            v = v.copy()
        elif isinstance(v, RawValue):
            v = RawValue(v.dtype, v.shape, bytes(memoryview(v.data).cast("B")))
        out[name] = v
    return out


def _safetensors_payload(path: str, records: Mapping[str, Any]) -> tuple[dict, dict]:
    """``(arrays, extra metadata)`` for a safetensors file; strings are refused as MindSpore fails."""
    arrays: dict[str, Any] = {}
    meta: dict[str, str] = {}
    for name, v in records.items():
        if isinstance(v, str):
            raise TypeError(f"For 'save_checkpoint' with format='safetensors', {name!r} is a str; safetensors "
                            f"cannot hold strings (MindSpore fails with 'Unknown dtype \"str64\"'). Drop it or "
                            f"use format='ckpt'. File: {path}")
        if isinstance(v, RawValue):
            meta[name] = mstype.qint4x2.name
            v = np.frombuffer(bytes(memoryview(v.data).cast("B")), dtype=np.uint8)
        arrays[name] = v
    return arrays, meta


def _write(path: str, records: Mapping[str, Any], fmt: str, crc_check: bool,
           remove_redundancy: Optional[bool]) -> None:
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    if fmt == "ckpt":
        write_ckpt(path, records.items(), crc_check=crc_check)
    else:
        arrays, meta = _safetensors_payload(path, records)
        if isinstance(remove_redundancy, bool):
            meta["remove_redundancy"] = str(remove_redundancy)
        write_safetensors(path, arrays, crc_check=crc_check, metadata=meta)
    log.info("saved %d tensors to %s", len(records), path)


def _check_crypto(api: str, key_name: str, key: Any, mode_name: str, mode: Any, fmt: str) -> None:
    """``enc_key``/``dec_key`` (None or bytes) and ``enc_mode``/``dec_mode`` (a str), as MindSpore
    checks them; a key is then refused (no encryption in distinfer), and safetensors needs the defaults."""
    check_type(api, key_name, key, (type(None), bytes), "None or bytes")
    check_type(api, mode_name, mode, (str,), "a str")
    if key is not None:
        raise ValueError(f"For '{api}', {_ENCRYPTION_ERROR} ({key_name} must be None).")
    if fmt == "safetensors" and mode != "AES-GCM":
        raise ValueError(f"For '{api}', when format is 'safetensors', the parameter '{mode_name}' must be set to "
                         f"default value 'AES-GCM', but got {mode!r}.")


def _check_save_options(integrated_save: Any, async_save: Any, enc_key: Any, enc_mode: Any, crc_check: Any,
                        fmt: str, kwargs: dict) -> Optional[bool]:
    """MindSpore's argument checks, and the options distinfer does not implement; returns ``remove_redundancy``."""
    api = "save_checkpoint"
    check_type(api, "integrated_save", integrated_save, (bool,), "a bool")
    check_type(api, "async_save", async_save, (bool, str), "a bool or str")
    if isinstance(async_save, str) and async_save not in ("thread", "process"):
        raise ValueError(f"For 'save_checkpoint', 'async_save' must be a bool, 'thread' or 'process', "
                         f"got {async_save!r}.")
    _check_crypto(api, "enc_key", enc_key, "enc_mode", enc_mode, fmt)
    check_type(api, "crc_check", crc_check, (bool,), "a bool")
    remove_redundancy = kwargs.pop("remove_redundancy", None)
    check_type(api, "remove_redundancy", remove_redundancy, (type(None), bool), "None or a bool")
    if remove_redundancy and context.is_sharded_mode() and _world_size() > 1:
        raise NotImplementedError("save_checkpoint(remove_redundancy=True) in a parallel run is not supported "
                                  "by distinfer; save with integrated_save=False instead.")
    # ``incremental`` only concerns MapParameters (distinfer has none) and ``global_step_num`` only
    # MindSpore's AITurbo saver: ignored for .ckpt, refused for safetensors (as in MindSpore).
    for key, default in (("incremental", False), ("global_step_num", None)):
        value = kwargs.pop(key, default)
        if fmt == "safetensors" and value != default:
            raise ValueError(f"For 'save_checkpoint', when format is 'safetensors', the parameter '{key}' must be "
                             f"set to default value '{default}', but got '{value}'.")
    if kwargs:
        log.warning("save_checkpoint: ignoring unknown keyword arguments %s", sorted(kwargs))
    return remove_redundancy


def _world_size() -> int:
    from .communication import _backend

    return _backend.world().size


def save_checkpoint(save_obj: Any, ckpt_file_name: str, integrated_save: bool = True,
                    async_save: Union[bool, str] = False, append_dict: Optional[dict] = None,
                    enc_key: Optional[bytes] = None, enc_mode: str = "AES-GCM",
                    choice_func: Optional[Callable[[str], bool]] = None, crc_check: bool = False,
                    format: str = "ckpt", **kwargs: Any) -> None:  # noqa: A002 (MindSpore's name)
    """Save a Cell's parameters, a ``[{"name", "data"}]`` list or a ``{name: value}`` dict.

    Records follow ``save_obj``'s order (a Cell's ``parameters_and_names()``), filtered by
    ``choice_func(name) -> bool``, then ``append_dict`` (``int`` -> Int64, ``float`` -> Float32,
    ``bool`` -> Bool scalars, ``str`` -> a ``str`` record, Tensors as they are). ``.ckpt`` (or
    ``.safetensors``) is appended to a name that does not end with the format. ``async_save``
    (True, "thread" or "process") writes in a background thread after the data has been
    collected; the next save, a load and process exit wait for it. In semi-auto parallel mode
    ``integrated_save=True`` gathers each laid-out tensor to its full value on every rank (all
    ranks must call this together); ``False`` writes this rank's blocks.

    >>> import os, tempfile, numpy as np, distinfer as ms
    >>> p = os.path.join(tempfile.mkdtemp(), "m.ckpt")
    >>> ms.save_checkpoint({"w": ms.Parameter(np.ones(2, np.float32), name="w")}, p, append_dict={"lr": 0.5})
    >>> {k: v.asnumpy().tolist() for k, v in ms.load_checkpoint(p).items()}
    {'w': [1.0, 1.0], 'lr': 0.5}
    """
    path = _check_save_target(save_obj, ckpt_file_name, format)
    remove_redundancy = _check_save_options(integrated_save, async_save, enc_key, enc_mode, crc_check, format, kwargs)
    _ASYNC.wait()  # a previous asynchronous save finishes first (and reports its failure)
    records = _collect(save_obj, append_dict, integrated_save, choice_func)
    if async_save:
        records = _snapshot(records)
        _ASYNC.start(path, lambda: _write(path, records, format, crc_check, remove_redundancy))
        return
    _write(path, records, format, crc_check, remove_redundancy)


# ===================================================================================== loading
def _prefixes(arg_name: str, value: Filter) -> tuple[str, ...]:
    if value is None:
        return ()
    items = (value,) if isinstance(value, str) else value
    if not isinstance(items, (list, tuple)) or not all(isinstance(s, str) for s in items):
        raise TypeError(f"For 'load_checkpoint', '{arg_name}' must be a str or a list/tuple of str, got {value!r}.")
    if not items or any(not s for s in items):
        raise ValueError(f"For 'load_checkpoint', '{arg_name}' must not be empty or contain empty strings, "
                         f"got {value!r}.")
    return tuple(items)


def _name_filter(specify_prefix: Filter, filter_prefix: Filter,
                 choice_func: Optional[Callable[[str], bool]]) -> Callable[[str], bool]:
    """MindSpore's selection: prefixes (both applied) when given, else ``choice_func``, else all."""
    keep, drop = _prefixes("specify_prefix", specify_prefix), _prefixes("filter_prefix", filter_prefix)
    if keep or drop:
        if choice_func is not None:
            log.warning("load_checkpoint: 'specify_prefix'/'filter_prefix' are given, so 'choice_func' is ignored")
        return lambda name: (not keep or name.startswith(keep)) and not (drop and name.startswith(drop))
    if choice_func is None:
        return lambda name: True
    if not callable(choice_func):
        raise TypeError(f"For 'load_checkpoint', 'choice_func' must be callable, got {type(choice_func).__name__}.")
    return lambda name: bool(choice_func(name))


def _check_load_target(ckpt_file_name: Any, fmt: str) -> str:
    if fmt not in _FORMATS:
        raise ValueError(f"For 'load_checkpoint', 'format' must be 'ckpt' or 'safetensors', got {fmt!r}.")
    if not isinstance(ckpt_file_name, (str, os.PathLike)):
        raise TypeError(f"For 'load_checkpoint', 'ckpt_file_name' must be a str, got {type(ckpt_file_name).__name__}.")
    name = os.fspath(ckpt_file_name)
    if not name.endswith(fmt):
        raise ValueError(f"For 'load_checkpoint', the checkpoint file format must be the same as 'format', but got "
                         f"file_name: '{name}', format: '{fmt}'.")
    path = os.path.realpath(name)
    if not os.path.exists(path):
        raise ValueError(f"For 'load_checkpoint', the checkpoint file {path} does not exist; check 'ckpt_file_name'.")
    return path


def _loaded_value(f: Union[CkptFile, SafetensorsFile], name: str) -> Union[Parameter, str]:
    """One record as MindSpore returns it: a Parameter, or a Python str for string records."""
    entry = f.entry(name)
    value = f.read(name)
    if isinstance(value, str):
        return value
    if entry.dtype is mstype.qint4x2:
        raw = np.asarray(value, dtype=np.uint8).reshape(-1)
        return Parameter(Tensor._make(raw, entry.shape, None, dtype=mstype.qint4x2), name=name)
    return Parameter(Tensor(value), name=name)


def _open(path: str, fmt: str, crc_check: bool) -> Union[CkptFile, SafetensorsFile]:
    return CkptFile(path, crc_check=crc_check) if fmt == "ckpt" else SafetensorsFile(path, crc_check=crc_check)


def _read_selected(path: str, fmt: str, crc_check: bool, keep: Callable[[str], bool]) -> dict:
    with _open(path, fmt, crc_check) as f:
        return {name: _loaded_value(f, name) for name in f.names() if keep(name)}


def _read_bytesio(source: _pyio.BytesIO, crc_check: bool, keep: Callable[[str], bool]) -> dict:
    """A safetensors file given as BytesIO (MindSpore allows it): staged through a temporary file."""
    with tempfile.TemporaryDirectory(prefix="distinfer-st-") as d:
        path = os.path.join(d, "in.safetensors")
        with open(path, "wb") as fh:
            fh.write(source.getvalue())
        return _read_selected(path, "safetensors", crc_check, keep)


def load_checkpoint(ckpt_file_name: Union[str, _pyio.BytesIO], net: Any = None, strict_load: bool = False,
                    filter_prefix: Filter = None, dec_key: Optional[bytes] = None, dec_mode: str = "AES-GCM",
                    specify_prefix: Filter = None, choice_func: Optional[Callable[[str], bool]] = None,
                    crc_check: bool = False, remove_redundancy: bool = False,
                    format: str = "ckpt") -> dict:  # noqa: A002 (MindSpore's name)
    """Read a ``.ckpt`` (or ``.safetensors``) into ``{name: Parameter}``; ``str`` records stay ``str``.

    ``specify_prefix`` keeps only names starting with one of its prefixes, ``filter_prefix`` drops
    names starting with one of its; when either is given ``choice_func`` is ignored. An empty
    result is a ValueError. The file must end with ``format``; dtypes are kept (bf16 stays
    BFloat16); ``crc_check`` verifies the CRC. With ``net``, the values are also loaded into it
    through :func:`load_param_into_net`.

    >>> import os, tempfile, numpy as np, distinfer as ms
    >>> p = os.path.join(tempfile.mkdtemp(), "a.ckpt")
    >>> ms.save_checkpoint([{"name": "x.w", "data": ms.Tensor(np.zeros(2, np.float16))},
    ...                     {"name": "y.w", "data": ms.Tensor(np.ones(1, np.int32))}], p)
    >>> d = ms.load_checkpoint(p, specify_prefix="x.")
    >>> list(d), d["x.w"].dtype
    (['x.w'], Float16)
    """
    keep = _name_filter(specify_prefix, filter_prefix, choice_func)
    _check_crypto("load_checkpoint", "dec_key", dec_key, "dec_mode", dec_mode, format)
    check_type("load_checkpoint", "crc_check", crc_check, (bool,), "a bool")
    check_type("load_checkpoint", "remove_redundancy", remove_redundancy, (bool,), "a bool")
    _ASYNC.wait()  # a file being saved asynchronously is complete before it is read
    if isinstance(ckpt_file_name, _pyio.BytesIO):
        if format != "safetensors":
            raise TypeError("For 'load_checkpoint', a BytesIO source is only supported with format='safetensors'.")
        result = _read_bytesio(ckpt_file_name, crc_check, keep)
        source = "<BytesIO>"
    else:
        source = _check_load_target(ckpt_file_name, format)
        result = _read_selected(source, format, crc_check, keep)
    if not result:
        raise ValueError(f"The loaded parameter dict is empty after filter or specify ({source}); please check "
                         f"whether 'filter_prefix', 'specify_prefix' or 'choice_func' are set correctly.")
    log.info("loaded %d values from %s", len(result), source)
    if net is not None:
        load_param_into_net(net, result, strict_load, remove_redundancy)
    return result


def load_segmented_checkpoints(ckpt_file_dir: str, net: Any = None, strict_load: bool = False,
                               filter_prefix: Filter = None, dec_key: Optional[bytes] = None, dec_mode: str = "AES-GCM",
                               specify_prefix: Filter = None, choice_func: Optional[Callable[[str], bool]] = None) -> dict:
    """Every ``*.ckpt`` of a folder (e.g. the ``_part<k>`` files of a per-stage transform) as one dict.

    Files are read in name order; a name in several files takes the last one's value. With ``net``,
    the merged values are loaded into it. As in MindSpore, a folder without ``.ckpt`` files gives
    ``{}``, and ``ckpt_file_dir`` must be a str (TypeError) naming a directory (ValueError).

    >>> import os, tempfile, numpy as np, distinfer as ms
    >>> d = tempfile.mkdtemp()
    >>> ms.save_checkpoint({"a": ms.Tensor(np.zeros(2, np.float32))}, os.path.join(d, "x_part0.ckpt"))
    >>> ms.save_checkpoint({"b": ms.Tensor(np.ones(1, np.float32))}, os.path.join(d, "x_part1.ckpt"))
    >>> sorted(ms.load_segmented_checkpoints(d))
    ['a', 'b']
    """
    check_type("load_segmented_checkpoints", "ckpt_file_dir", ckpt_file_dir, (str, os.PathLike), "a str")
    if not os.path.isdir(ckpt_file_dir):
        raise ValueError(f"For 'load_segmented_checkpoints', {ckpt_file_dir} is not a directory.")
    files = sorted(f for f in os.listdir(ckpt_file_dir) if f.endswith(".ckpt"))
    if not files:
        log.warning("load_segmented_checkpoints: %s holds no .ckpt file; nothing is loaded", ckpt_file_dir)
    merged: dict = {}
    for f in files:
        merged.update(load_checkpoint(os.path.join(ckpt_file_dir, f), None, strict_load, filter_prefix, dec_key,
                                      dec_mode, specify_prefix, choice_func))
    if net is not None and merged:
        load_param_into_net(net, merged, strict_load)
    return merged


# ============================================================================ load_param_into_net
def _convertible(net_dtype: mstype.Type, ckpt_dtype: mstype.Type) -> bool:
    pair = {net_dtype, ckpt_dtype}
    if mstype.qint4x2 in pair:  # packed 4-bit data has no numpy conversion here
        return False
    return pair <= _FLOAT_FAMILY or pair <= _INT_FAMILY


def _strip_trailing_ones(arr: np.ndarray, targets: Sequence[tuple[int, ...]]) -> Optional[np.ndarray]:
    """MindSpore's special case: ``(12, 2048, 1, 1)`` loads into ``(12, 2048)``."""
    for shape in targets:
        extra = arr.shape[len(shape):]
        if len(arr.shape) > len(shape) and all(d == 1 for d in extra) and arr.shape[:len(shape)] == shape:
            return arr.reshape(shape)
    return None


def _shape_text(param: Parameter) -> str:
    if param.sliced and param.layout is not None and param.shape != param.global_shape:
        return f"{param.shape} (its local block of the full shape {param.global_shape})"
    return f"{param.shape}"


def _update_param(param: Parameter, value: Tensor, strict_load: bool, source_name: str,
                  donate: bool = False) -> None:
    """Copy ``value`` into ``param`` following MindSpore's shape and dtype rules.

    The value's data is copied once (by ``set_data``, or by the dtype conversion); with
    ``donate`` (the caller owns ``value`` and drops it) a value that needs no conversion is
    adopted without a copy.
    """
    arr = value.asnumpy()
    targets = [tuple(param.shape)]
    if param.sliced and param.layout is not None and param.global_shape != param.shape:
        targets.append(tuple(param.global_shape))
    if tuple(arr.shape) not in targets:
        reshaped = _strip_trailing_ones(arr, targets)
        if reshaped is None:
            raise RuntimeError(
                f"For 'load_param_into_net', parameter {param.name} in the net has shape {_shape_text(param)} but "
                f"{source_name!r} in the parameter_dict has shape {tuple(arr.shape)}; the shapes must match. Check "
                f"that the checkpoint belongs to this network (and its parallel layout).")
        arr = reshaped
    if value.dtype != param.dtype:
        if strict_load or not _convertible(param.dtype, value.dtype):
            raise RuntimeError(
                f"For 'load_param_into_net', parameter {param.name} in the net has dtype {param.dtype} but "
                f"{source_name!r} in the parameter_dict has dtype {value.dtype}"
                + (" and strict_load=True forbids conversion." if strict_load and _convertible(param.dtype, value.dtype)
                   else "; only conversions within {Float16, Float32, Float64, BFloat16} or within "
                        "{Int8, Int16, Int32, Int64} are done (with strict_load=False)."))
        log.warning("The type of %s:%s in 'parameter_dict' is different from the type of it in 'net':%s, then the "
                    "type convert from %s to %s in the network.", source_name, value.dtype, param.dtype,
                    value.dtype, param.dtype)
        arr = arr.astype(param.dtype.np)  # a fresh array: set_data need not copy it again
        donate = True
    # set_data copies unless told not to, so the net does not alias the dict's buffers.
    param.set_data(arr, _copy=not donate)


def _find_prefixes(parameter_dict: Mapping[str, Any], missing: Sequence[str]) -> Iterator[str]:
    """Candidate prefixes: for a missing net name, a checkpoint name ending with it, in MindSpore's order."""
    seen: set[str] = set()
    for net_name in missing:
        for ckpt_name in parameter_dict:
            if ckpt_name != net_name and ckpt_name.endswith(net_name):
                prefix = ckpt_name[: -len(net_name)]
                if prefix not in seen:
                    seen.add(prefix)
                    yield prefix


def _load_with_prefix(net: Any, parameter_dict: Mapping[str, Any], param_not_load: list[str],
                      strict_load: bool) -> None:
    """MindSpore's ``_load_dismatch_prefix_params``: retry missing params under a checkpoint prefix."""
    tried: set[str] = set()
    while param_not_load:
        prefix = next((p for p in _find_prefixes(parameter_dict, param_not_load) if p not in tried), None)
        if prefix is None:
            return
        tried.add(prefix)
        log.warning("For 'load_param_into_net', remove parameter prefix name: %s, continue to load.", prefix)
        for _, param in net.parameters_and_names():
            key = prefix + param.name
            if param.name in param_not_load and isinstance(parameter_dict.get(key), Tensor):
                _update_param(param, parameter_dict[key], strict_load, key)
                param_not_load.remove(param.name)


def _check_net_and_dict(net: Any, parameter_dict: Any) -> None:
    from .nn.cell import Cell

    if not isinstance(net, Cell):
        raise TypeError(f"For 'load_param_into_net', the argument 'net' should be a Cell, but got "
                        f"{type(net).__name__}.")
    if not isinstance(parameter_dict, dict):
        raise TypeError(f"For 'load_param_into_net', the argument 'parameter_dict' should be a dict, but got "
                        f"{type(parameter_dict).__name__}.")
    for key, value in parameter_dict.items():
        if not isinstance(key, str) or not isinstance(value, (Parameter, str, list)):
            raise TypeError(f"For 'load_param_into_net', each item of 'parameter_dict' should be str -> Parameter, "
                            f"but got {type(key).__name__} ({key!r}) -> {type(value).__name__}.")


def load_param_into_net(net: Any, parameter_dict: dict, strict_load: bool = False,
                        remove_redundancy: bool = False, *, _donate: bool = False) -> tuple[list[str], list[str]]:
    """Copy ``parameter_dict``'s values into ``net``'s Parameters; returns ``(param_not_load, ckpt_not_load)``.

    MindSpore's rules: shapes must match (a value with extra trailing 1-dims is reshaped); a
    sliced parameter also takes the full tensor, which is sliced to its layout. A dtype
    mismatch within {f16, f32, f64, bf16} or {i8, i16, i32, i64} is converted with a warning
    unless ``strict_load``; any other mismatch is a RuntimeError. With ``strict_load=False``,
    net parameters still missing are looked up under a prefix (a checkpoint name that ends
    with the net name). ``accu_grads*`` and, in parallel mode, unsliced parameters are not
    reported as missing. As in MindSpore, names loaded through the prefix fallback stay in
    ``ckpt_not_load``. ``_donate`` (internal: ``load_distributed_checkpoint`` passes the blocks
    it just read and drops them) lets the net adopt the dict's arrays instead of copying them.

    >>> import numpy as np, distinfer as ms
    >>> net = ms.nn.Dense(2, 1)
    >>> d = {"net.weight": ms.Parameter(np.ones((1, 2), np.float64), name="net.weight")}
    >>> ms.load_param_into_net(net, d)
    (['bias'], ['net.weight'])
    >>> net.weight.asnumpy().dtype
    dtype('float32')
    """
    _check_net_and_dict(net, parameter_dict)
    if not isinstance(strict_load, bool) or not isinstance(remove_redundancy, bool):
        raise TypeError("For 'load_param_into_net', 'strict_load' and 'remove_redundancy' must be bool.")
    if remove_redundancy:
        _check_remove_redundancy()
    param_not_load: list[str] = []
    ckpt_not_load = list(parameter_dict)
    parallel = context.is_sharded_mode()
    for _, param in net.parameters_and_names():
        value = parameter_dict.get(param.name)
        if value is not None:
            if isinstance(value, Tensor):  # str / list values have no data: MindSpore skips them
                _update_param(param, value, strict_load, param.name, _donate)
                ckpt_not_load.remove(param.name)
        elif not (param.name.startswith("accu_grads") or (parallel and not param.sliced)):
            param_not_load.append(param.name)
    if param_not_load and not strict_load:
        _load_with_prefix(net, parameter_dict, param_not_load, strict_load)  # copies: an entry may serve twice
    if param_not_load:
        log.warning("For 'load_param_into_net', %d parameters in the 'net' are not loaded, because they are not in "
                    "the 'parameter_dict': %s", len(param_not_load), param_not_load)
    return param_not_load, ckpt_not_load


def _check_remove_redundancy() -> None:
    if _world_size() == 1:
        raise TypeError("The deduplication feature for loading checkpoint can only be used in parallel scenarios, "
                        "but got stand_alone.")
    raise NotImplementedError("load_param_into_net(remove_redundancy=True) is not supported by distinfer; save "
                              "with integrated_save=False (every rank keeps its blocks) instead.")


# ============================================================================== format conversion
def _check_conversion(api: str, file_path: Any, save_path: Any, name_map: Any, processes_num: Any) -> None:
    if not isinstance(file_path, (str, os.PathLike)) or not (os.path.isdir(file_path) or os.path.isfile(file_path)):
        raise ValueError(f"For '{api}', the input path must be an existing directory or file, but got {file_path!r}.")
    if save_path and os.path.splitext(os.fspath(save_path))[1]:
        raise ValueError(f"For '{api}', the save_path must be a directory, but got {save_path!r}.")
    if name_map is not None and not isinstance(name_map, dict):
        raise ValueError(f"For '{api}', 'name_map' must be a dict, but got {type(name_map).__name__}.")
    if not isinstance(processes_num, int) or isinstance(processes_num, bool) or processes_num < 1:
        raise ValueError(f"For '{api}', 'processes_num' must be a positive int, got {processes_num!r}.")


def _conversion_tasks(api: str, file_path: str, save_path: Optional[str], regex: Optional[str], src_ext: str,
                      dst_ext: str) -> list[tuple[str, str]]:
    """``(source, destination)`` file pairs: one file, or every matching file of the ``rank*``
    subdirectories of a directory (the relative ``rank*/`` layout is kept under ``save_path``)."""
    file_path = os.fspath(file_path)
    if os.path.isfile(file_path):
        if not file_path.endswith(src_ext):
            raise ValueError(f"For '{api}', the input file must be a {src_ext} file, but got {file_path}.")
        if regex is not None and not re.findall(regex, file_path):
            raise ValueError(f"For '{api}', the input file {file_path} does not match file_name_regex {regex!r}.")
        out_dir = os.fspath(save_path) if save_path else os.path.dirname(os.path.abspath(file_path))
        os.makedirs(out_dir, exist_ok=True)
        base = os.path.basename(file_path)
        return [(file_path, os.path.join(out_dir, base[: -len(src_ext)] + dst_ext))]
    rank_dirs = sorted(d for d in os.listdir(file_path)
                       if d.startswith("rank") and os.path.isdir(os.path.join(file_path, d)))
    if not rank_dirs:
        raise ValueError(f"For '{api}', no directories starting with 'rank' found in {file_path}.")
    tasks = []
    for d in rank_dirs:
        src_dir = os.path.join(file_path, d)
        dst_dir = os.path.join(os.fspath(save_path), d) if save_path else src_dir
        os.makedirs(dst_dir, exist_ok=True)
        for name in sorted(os.listdir(src_dir)):
            if name.endswith(src_ext) and os.path.isfile(os.path.join(src_dir, name)) \
                    and (regex is None or re.findall(regex, name)):
                tasks.append((os.path.join(src_dir, name), os.path.join(dst_dir, name[: -len(src_ext)] + dst_ext)))
    return tasks


def _renamed(src: str, names: Iterable[str], name_map: Optional[dict]) -> list[tuple[str, str]]:
    pairs = [(n, name_map.get(n, n) if name_map else n) for n in names]
    targets: dict[str, str] = {}
    for old, new in pairs:
        if new in targets:
            raise ValueError(f"{src}: name_map maps both {targets[new]!r} and {old!r} to {new!r}.")
        targets[new] = old
    return pairs


def _ckpt_file_to_safetensors(src: str, dst: str, name_map: Optional[dict]) -> None:
    arrays: dict[str, np.ndarray] = {}
    with CkptFile(src) as f:
        for old, new in _renamed(src, f.names(), name_map):
            entry = f.entry(old)
            if entry.dtype in (mstype.string, mstype.qint4x2):
                log.warning("ckpt_to_safetensors: %s: dropping %r (a %s record; safetensors cannot hold it)",
                            src, old, entry.dtype.name)
                continue
            arrays[new] = f.read(old)
    write_safetensors(dst, arrays)
    log.info("converted %s -> %s (%d tensors)", src, dst, len(arrays))


def _safetensors_file_to_ckpt(src: str, dst: str, name_map: Optional[dict]) -> None:
    with SafetensorsFile(src) as f:
        items = [(new, f.read(old)) for old, new in _renamed(src, f.names(), name_map)]
    write_ckpt(dst, items)
    log.info("converted %s -> %s (%d tensors)", src, dst, len(items))


def _run_conversions(tasks: list[tuple[str, str]], convert: Callable[[str, str, Optional[dict]], None],
                     name_map: Optional[dict], processes_num: int) -> None:
    """Convert every task; ``processes_num`` > 1 uses that many worker threads (the work is file
    I/O and numpy copies, and threads stay safe inside an MPI rank)."""
    if processes_num == 1 or len(tasks) < 2:
        for src, dst in tasks:
            convert(src, dst, name_map)
        return
    with ThreadPoolExecutor(max_workers=processes_num) as pool:
        for fut in [pool.submit(convert, src, dst, name_map) for src, dst in tasks]:
            fut.result()


def ckpt_to_safetensors(file_path: str, save_path: Optional[str] = None, name_map: Optional[dict] = None,
                        file_name_regex: Optional[str] = None, processes_num: int = 1) -> None:
    """Convert a ``.ckpt`` file, or the ``rank*/*.ckpt`` files of a directory, to safetensors.

    Output goes beside each input, or under ``save_path`` keeping the ``rank*/`` layout;
    ``name_map`` renames tensors; ``file_name_regex`` selects files. ``str`` records are dropped
    with a warning (safetensors cannot hold them).

    >>> import os, tempfile, numpy as np, distinfer as ms
    >>> d = tempfile.mkdtemp(); ms.save_checkpoint({"w": ms.Tensor(np.ones(2, np.float32))}, d + "/a.ckpt")
    >>> ms.ckpt_to_safetensors(d + "/a.ckpt", name_map={"w": "v"})
    >>> list(ms.load_checkpoint(d + "/a.safetensors", format="safetensors"))
    ['v']
    """
    _check_conversion("ckpt_to_safetensors", file_path, save_path, name_map, processes_num)
    tasks = _conversion_tasks("ckpt_to_safetensors", file_path, save_path, file_name_regex, ".ckpt", ".safetensors")
    _run_conversions(tasks, _ckpt_file_to_safetensors, name_map, processes_num)


def safetensors_to_ckpt(file_path: str, save_path: Optional[str] = None, name_map: Optional[dict] = None,
                        file_name_regex: Optional[str] = None, processes_num: int = 1) -> None:
    """Convert a ``.safetensors`` file, or the ``rank*/*.safetensors`` files of a directory, to ``.ckpt``.

    Same arguments as :func:`ckpt_to_safetensors`; records are written in name order.

    >>> import os, tempfile, numpy as np, distinfer as ms
    >>> d = tempfile.mkdtemp()
    >>> ms.save_checkpoint({"w": ms.Tensor(np.ones(2, np.int8))}, d + "/a.safetensors", format="safetensors")
    >>> ms.safetensors_to_ckpt(d + "/a.safetensors", save_path=d + "/out")
    >>> ms.load_checkpoint(d + "/out/a.ckpt")["w"].dtype
    Int8
    """
    _check_conversion("safetensors_to_ckpt", file_path, save_path, name_map, processes_num)
    tasks = _conversion_tasks("safetensors_to_ckpt", file_path, save_path, file_name_regex, ".safetensors", ".ckpt")
    _run_conversions(tasks, _safetensors_file_to_ckpt, name_map, processes_num)
