"""The exception types distinfer raises.

Each derives from the builtin type MindSpore raises in the same situation (``ValueError``
for bad values and files, ``RuntimeError`` for shape mismatches at load time), so code written
for MindSpore that catches those keeps working.
"""
from __future__ import annotations

from typing import Any

__all__ = ["DistinferError", "FormatError", "StrategyError", "LayoutError", "CommError", "DivergenceError",
           "OnnxExportError", "check_type", "type_error"]


def type_error(api: str, name: str, value: Any, expected: str) -> TypeError:
    """MindSpore's error for an argument of the wrong type, naming the API, the argument and what it got."""
    return TypeError(f"For '{api}', the argument '{name}' must be {expected}, but got {type(value).__name__} "
                     f"({value!r:.80}).")


def check_type(api: str, name: str, value: Any, types: tuple, expected: str) -> None:
    """MindSpore's check of an argument's type: a TypeError naming the API, the argument and what it got.

    >>> check_type("Model.train", "dataset_sink_mode", 1, (bool,), "a bool")
    Traceback (most recent call last):
    ...
    TypeError: For 'Model.train', the argument 'dataset_sink_mode' must be a bool, but got int (1).
    """
    if not isinstance(value, types):
        raise type_error(api, name, value, expected)


class DistinferError(Exception):
    """Base of every distinfer-specific error.

    >>> from distinfer.errors import DistinferError
    >>> from distinfer.layout import Layout
    >>> try:
    ...     Layout((2,), (0,), (3,))  # 3 rows cannot be split 2 ways
    ... except DistinferError as e:
    ...     print(type(e).__name__)
    LayoutError
    """


class FormatError(DistinferError, ValueError):
    """A file is not what it claims to be: truncated, corrupt, wrong type, failed CRC...

    The message names the file, the record or tensor, and what was expected.

    >>> import pathlib, tempfile, distinfer as ms
    >>> from distinfer.errors import FormatError
    >>> p = pathlib.Path(tempfile.mkdtemp(), "bad.ckpt"); _ = p.write_bytes(b"not a checkpoint")
    >>> try:
    ...     ms.load_checkpoint(str(p))
    ... except FormatError as e:
    ...     print(isinstance(e, ValueError), str(e).startswith(f"{p}: record #0"))
    True True
    """


class StrategyError(DistinferError, ValueError):
    """A ``.shard()`` strategy or a layout that cannot apply to the op, shapes or device count.

    >>> from distinfer import ops
    >>> from distinfer.errors import StrategyError
    >>> try:
    ...     ops.MatMul().shard([(2, 1), (1, 1)], out_strategy=(2, 1))
    ... except StrategyError as e:
    ...     print(e)
    MatMul.shard: out_strategy must be a tuple of tuples of ints such as ((2, 1), (1, 2)), got (2, 1)
    """


class LayoutError(DistinferError, ValueError):
    """A layout that is inconsistent with a shape or with the device matrix.

    >>> from distinfer.errors import LayoutError
    >>> from distinfer.layout import Layout
    >>> try:
    ...     Layout((2, 2), (0, 0), (4, 4))
    ... except LayoutError as e:
    ...     print(e)
    tensor_map [0, 0] uses a device axis twice (device matrix [2, 2], shape (4, 4))
    """


class CommError(DistinferError, RuntimeError):
    """A communication set-up problem (rank counts, groups).

    >>> from distinfer.communication import create_group
    >>> from distinfer.errors import CommError
    >>> try:
    ...     create_group("pair", [0, 1])  # without mpirun the world has one rank
    ... except CommError as e:
    ...     print(isinstance(e, RuntimeError), "must be distinct ranks in 0..0" in str(e))
    True True
    """


class OnnxExportError(DistinferError, ValueError):
    """The network cannot be written as ONNX (distributed, or an op or a call without an ONNX form).

    The example writes a trace recorded on 2 devices, as each rank of a 2-rank job records one:

    >>> import os, tempfile
    >>> from distinfer.exporter.onnx_writer import write_onnx
    >>> from distinfer.exporter.trace import Trace
    >>> try:
    ...     write_onnx(os.path.join(tempfile.mkdtemp(), "net.onnx"), Trace(sharded=True, device_num=2))
    ... except OnnxExportError as e:
    ...     print(isinstance(e, ValueError), str(e).split(";")[0])
    True ONNX export: the network runs on 2 devices with communication (parallel_mode semi_auto_parallel)
    """


class DivergenceError(CommError):
    """Ranks that should be doing the same thing are not: a different op, plan, shape or dtype at
    a communication step, or different inputs to a collective load. The message gives each view.

    >>> from distinfer.errors import CommError, DivergenceError
    >>> issubclass(DivergenceError, CommError)
    True
    """
