"""Export and load: ``distinfer.export`` (MindIR per rank, or ONNX), ``distinfer.load``, ``nn.GraphCell``.

Modules: :mod:`.trace` (one concrete run under an executor observer), :mod:`.mindir_writer`
(MindSpore 2.10's graph of a trace), :mod:`.mindspore_ops` (MindSpore's primitives, found through the op registry),
:mod:`.collectives` (redistributions as MindSpore's collectives), :mod:`.mindir_reader`,
:mod:`.interpreter` (GraphCell), :mod:`.onnx_writer` and :mod:`.verify` (reassembling an
export's weights and comparing them with checkpoints; the ``verify`` CLI).

The package is called ``exporter`` so that ``distinfer.export`` can be MindSpore's function.

>>> import numpy as np, tempfile, os, distinfer as ms
>>> from distinfer import nn
>>> net, x = nn.Dense(3, 2), ms.Tensor(np.ones((4, 3), np.float32))
>>> path = ms.export(net, x, file_name=os.path.join(tempfile.mkdtemp(), "net"))
>>> path.endswith("net.mindir")
True
>>> out = nn.GraphCell(ms.load(path))(x)
>>> out.shape
(4, 2)
"""
from __future__ import annotations

import inspect
import logging
import os
from typing import Any

from .interpreter import GraphCell
from .mindir_reader import Graph, UnsupportedOpError, read_mindir
from .verify import VerifyReport, register, verify_export

log = logging.getLogger(__name__)

__all__ = ["export", "load", "Graph", "GraphCell", "UnsupportedOpError", "verify_export", "VerifyReport",
           "register"]

_FORMATS = ("MINDIR", "ONNX")


def _graph_name(net: Any) -> str:
    """MindSpore-style ``<line>_<col>_<module>_<Class>_construct_<n>``."""
    cls = type(net)
    try:
        line = inspect.getsourcelines(cls.construct)[1]
    except (OSError, TypeError):
        line = 0
    module = cls.__module__.rsplit(".", 1)[-1]
    return f"{line}_0_{module}_{cls.__name__}_construct_1"


def export(net: Any, *inputs: Any, file_name: str, file_format: str = "MINDIR", **kwargs: Any) -> str:
    """Trace ``net`` on ``inputs`` and write ``file_name + ".mindir"`` (this rank's graph) or ``".onnx"``.

    The run follows the dataset strategy exactly as ``Model.predict``. In semi-auto parallel
    every rank must call export (the run communicates) with its own ``file_name``, e.g.
    ``f"./mindir/net_rank_{get_rank()}"``. ONNX is for stand-alone networks only.
    Returns the path written.

    >>> import numpy as np, tempfile, os, distinfer as ms
    >>> from distinfer import nn
    >>> p = ms.export(nn.ReLU(), ms.Tensor(np.ones((2, 2), np.float32)),
    ...               file_name=os.path.join(tempfile.mkdtemp(), "relu"), file_format="ONNX")
    >>> os.path.basename(p)
    'relu.onnx'
    """
    fmt = str(file_format).upper()
    if fmt not in _FORMATS:
        raise ValueError(f"export: file_format must be one of {list(_FORMATS)}, got {file_format!r}")
    if not inputs:
        raise ValueError("export: give at least one input Tensor to trace the network with")
    ext = "." + fmt.lower()
    path = os.fspath(file_name)
    if not path.lower().endswith(ext):
        path += ext
    from .trace import trace_network

    if fmt == "ONNX":
        _check_onnx_context()
    tr = trace_network(net, inputs)
    if fmt == "ONNX":
        from .onnx_writer import write_onnx

        return write_onnx(path, tr, kwargs)
    from .mindir_writer import build_model, write_mindir

    model, weights = build_model(tr, _graph_name(net))
    return write_mindir(path, model, weights, kwargs.get("total_save"))


def _check_onnx_context() -> None:
    from .. import context

    if context.is_sharded_mode():
        from ..parallel import _executor as ex
        from .onnx_writer import OnnxExportError

        n = ex.stage_devices()
        if n > 1:
            raise OnnxExportError(f"ONNX export: parallel_mode {context.parallel_mode()!r} runs the network on {n} "
                                  f"devices with communication; ONNX holds one stand-alone graph. Export "
                                  f"file_format='MINDIR' on every rank instead (one file per rank)")


def load(file_name: str, **kwargs: Any) -> Graph:
    """Read a MindIR file (distinfer's or MindSpore's) as a :class:`Graph` for :class:`nn.GraphCell`.

    As in MindSpore, ``file_name`` must be a path ending with ``.mindir`` that exists (ValueError
    otherwise). ``dec_key``/``obf_func`` (encrypted or obfuscated models) are not supported.

    >>> load("/nonexistent.mindir")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: For 'load', the MindIR file /nonexistent.mindir does not exist...
    """
    if not isinstance(file_name, (str, os.PathLike)):
        raise ValueError(f"For 'load', the argument 'file_name' must be a str, but got {type(file_name).__name__}.")
    file_name = os.fspath(file_name)
    if not file_name.endswith(".mindir"):
        raise ValueError(f"For 'load', the MindIR file name must end with '.mindir', got {file_name!r}.")
    if not os.path.exists(file_name):
        raise ValueError(f"For 'load', the MindIR file {file_name} does not exist; check 'file_name'.")
    for key in ("dec_key", "obf_func"):
        if kwargs.get(key) is not None:
            raise NotImplementedError(f"load: {key} (encrypted/obfuscated MindIR) is not supported")
    return read_mindir(file_name)
