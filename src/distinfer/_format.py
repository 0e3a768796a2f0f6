"""How MindSpore prints a Tensor: ``str`` is numpy's text, ``repr`` MindSpore's own layout.

``print(t)`` shows the values as numpy prints them (a float32 scalar prints ``2.3014357``);
``repr(t)`` shows ``Tensor(shape=[...], dtype=..., value=...)`` with MindSpore's element formats
(floats in scientific notation with 8 digits, 4 for float16; integers and booleans right-aligned)
and its summarisation rule: a 1-D tensor is cut to its first and last three elements only above
1,000 elements, every dim of a 2-D or larger tensor as soon as it is longer than six.

>>> import numpy as np
>>> tensor_str(np.array(2.3014357, np.float32), "Float32")
'2.3014357'
>>> tensor_repr(np.array([1.5, -2.25], np.float32), "Float32")
'Tensor(shape=[2], dtype=Float32, value= [ 1.50000000e+00, -2.25000000e+00])'
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

__all__ = ["tensor_str", "tensor_repr"]

_EDGE = 3  # elements kept at each end of a summarised dim
_THRESHOLD_1D = 1000  # a 1-D tensor is summarised only above this many elements


def tensor_str(arr: np.ndarray, dtype_name: str) -> str:
    """``str(tensor)``: numpy's text, except bfloat16 whose elements print as ``%f``.

    >>> import numpy as np
    >>> tensor_str(np.array([[0, 1], [2, 3]], np.int32), "Int32")
    '[[0 1]\\n [2 3]]'
    >>> tensor_str(np.array([1.5, -2.25], np.float32), "BFloat16")
    '[1.500000 -2.250000]'
    """
    if dtype_name == "BFloat16":
        wide = np.asarray(arr, dtype=np.float32)
        if wide.ndim == 0:
            return f"{float(wide):f}"
        return np.array2string(wide, formatter={"float_kind": lambda v: f"{v:f}"})
    return str(np.asarray(arr))


def _scalar(value, dtype_name: str) -> str:
    if dtype_name == "Bool":
        return str(bool(value))
    if np.issubdtype(np.asarray(value).dtype, np.integer):
        return str(int(value))
    return f"{float(value):g}"


def _element_format(arr: np.ndarray, dtype_name: str):
    """The text of one element of a 1-D-or-more tensor before right-alignment, and the least
    width (a float column is as wide as a formatted number even if it shows only nan or inf)."""
    if dtype_name == "Bool":
        return (lambda v: str(bool(v))), 0
    if arr.dtype.kind in "iu":
        return (lambda v: str(int(v))), 0
    if dtype_name == "BFloat16":
        return (lambda v: f"{float(v):g}"), 0
    digits = 4 if dtype_name == "Float16" else 8
    return (lambda v: f"{float(v): .{digits}e}"), digits + 7


def _kept(n: int, summarise: bool) -> tuple[list[int], bool]:
    """Indices shown along a dim of length ``n``, and whether '...' stands for the rest."""
    if summarise and n > 2 * _EDGE:
        return list(range(_EDGE)) + list(range(n - _EDGE, n)), True
    return list(range(n)), False


def _render(arr: np.ndarray, fmt, width: int, depth: int, summarise: bool) -> str:
    idx, cut = _kept(arr.shape[0], summarise)
    if arr.ndim == 1:
        cells = [fmt(arr[i]).rjust(width) for i in idx]
        if cut:
            return "[" + ", ".join(cells[:_EDGE]) + " ... " + ", ".join(cells[_EDGE:]) + "]"
        return "[" + ", ".join(cells) + "]"
    rows = [_render(arr[i], fmt, width, depth + 1, summarise) for i in idx]
    sep = ",\n" + " " * (depth + 1)
    if cut:  # the row before '...' keeps its comma, '...' has none
        return "[" + sep.join(rows[:_EDGE]) + sep + "...\n" + " " * (depth + 1) + sep.join(rows[_EDGE:]) + "]"
    return "[" + sep.join(rows) + "]"


def tensor_repr(arr: np.ndarray, dtype_name: str, shape: Sequence[int] | None = None) -> str:
    """``repr(tensor)`` of the values ``arr`` (``shape``: the shape to report, default ``arr``'s).

    >>> import numpy as np
    >>> print(tensor_repr(np.arange(6, dtype=np.int32).reshape(2, 3), "Int32"))
    Tensor(shape=[2, 3], dtype=Int32, value=
    [[0, 1, 2],
     [3, 4, 5]])
    >>> tensor_repr(np.array(2.3014357, np.float32), "Float32")
    'Tensor(shape=[], dtype=Float32, value= 2.30144)'
    >>> print(tensor_repr(np.arange(14, dtype=np.int64).reshape(7, 2), "Int64"))  # dims above 6 are cut
    Tensor(shape=[7, 2], dtype=Int64, value=
    [[ 0,  1],
     [ 2,  3],
     [ 4,  5],
     ...
     [ 8,  9],
     [10, 11],
     [12, 13]])
    """
    arr = np.asarray(arr)
    head = f"Tensor(shape={list(arr.shape if shape is None else shape)}, dtype={dtype_name}, value="
    if arr.ndim == 0:
        return f"{head} {_scalar(arr, dtype_name)})"
    if arr.size == 0:
        return head + (" )" if arr.ndim == 1 else "\n)")
    summarise = arr.ndim > 1 or arr.size > _THRESHOLD_1D
    fmt, least = _element_format(arr, dtype_name)
    shown = arr
    for axis, n in enumerate(arr.shape):  # the width is taken over the elements shown
        keep, _ = _kept(n, summarise)
        shown = np.take(shown, keep, axis=axis)
    width = max([least] + [len(fmt(v)) for v in shown.reshape(-1)])
    body = _render(arr, fmt, width, 0, summarise)
    return f"{head} {body})" if arr.ndim == 1 else f"{head}\n{body})"
