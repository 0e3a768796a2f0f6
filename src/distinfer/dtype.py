"""MindSpore's data types, and their numpy and file-format spellings.

``str(distinfer.float32) == "Float32"`` exactly as in MindSpore; that string is also the
``tensor_type`` a ``.ckpt`` record stores. bfloat16 is ml_dtypes' numpy type, so bf16
arrays are ordinary numpy arrays (round-to-nearest-even on conversion, as MindSpore does);
ml_dtypes is imported when bfloat16's numpy type is first needed (it takes longer to import
than the rest of distinfer).

>>> import distinfer as ms
>>> ms.float32, ms.dtype_to_nptype(ms.bfloat16).__name__
(Float32, 'bfloat16')
"""
from __future__ import annotations

from typing import Any

import numpy as np

__all__ = [
    "Type", "bool_", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64",
    "float16", "float32", "float64", "bfloat16", "qint4x2", "string",
    "dtype_to_nptype", "pytype_to_dtype", "from_numpy", "from_name", "get_dtype",
    "float_types", "int_types",
]


class Type:
    """A MindSpore data type: ``name`` is its MindSpore spelling, ``np`` its numpy dtype.

    ``safetensors`` is its safetensors dtype string (None if that format has none).

    >>> import distinfer as ms
    >>> ms.bfloat16.name, str(ms.bfloat16.np), ms.bfloat16.itemsize, ms.bfloat16.safetensors
    ('BFloat16', 'bfloat16', 2, 'BF16')
    >>> ms.float32 == ms.float_, str(ms.float32)
    (True, 'Float32')
    """

    __slots__ = ("name", "_np", "_make_np", "_itemsize", "safetensors")

    def __init__(self, name: str, np_dtype: Any, safetensors: str | None, make_np=None,
                 itemsize: int | None = None) -> None:
        self.name = name
        self._np = np.dtype(np_dtype) if np_dtype is not None else None
        self._make_np = make_np  # gives the numpy type on first use (bfloat16), whose size is ``itemsize``
        self._itemsize = itemsize
        self.safetensors = safetensors

    @property
    def np(self) -> np.dtype | None:
        if self._np is None and self._make_np is not None:
            self._np = np.dtype(self._make_np())
        return self._np

    def __repr__(self) -> str:
        return self.name

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Type):
            return self.name == other.name
        return NotImplemented

    def __hash__(self) -> int:
        return hash(self.name)

    def __reduce__(self):  # dtypes pickle as the module constant (used by multiprocessing only)
        return (from_name, (self.name,))

    @property
    def itemsize(self) -> int:
        return self._itemsize if self._np is None and self._itemsize else self.np.itemsize


bool_ = Type("Bool", np.bool_, "BOOL")
int8 = Type("Int8", np.int8, "I8")
int16 = Type("Int16", np.int16, "I16")
int32 = Type("Int32", np.int32, "I32")
int64 = Type("Int64", np.int64, "I64")
uint8 = Type("UInt8", np.uint8, "U8")
uint16 = Type("UInt16", np.uint16, "U16")
uint32 = Type("UInt32", np.uint32, "U32")
uint64 = Type("UInt64", np.uint64, "U64")
float16 = Type("Float16", np.float16, "F16")
float32 = Type("Float32", np.float32, "F32")
float64 = Type("Float64", np.float64, "F64")


def _ml_dtypes_bfloat16() -> type:
    import ml_dtypes

    return ml_dtypes.bfloat16


bfloat16 = Type("BFloat16", None, "BF16", make_np=_ml_dtypes_bfloat16, itemsize=2)
# Two 4-bit integers per byte; kept as packed uint8 bytes (MindSpore's "Int4" records).
qint4x2 = Type("Int4", np.uint8, None)
# ckpt string records ("str"): UTF-32-LE code units, numpy's native unicode layout.
string = Type("str", None, None)

_ALL = [bool_, int8, int16, int32, int64, uint8, uint16, uint32, uint64,
        float16, float32, float64, bfloat16, qint4x2, string]
_BY_NAME = {t.name: t for t in _ALL}
_BY_NAME.update({"Float": float32, "Int": int64, "Number": float32})
_BY_NP = {t._np: t for t in _ALL if t._np is not None and t is not qint4x2}  # bfloat16: by name

float_types = (float16, float32, float64, bfloat16)
int_types = (int8, int16, int32, int64, uint8, uint16, uint32, uint64, qint4x2)

# MindSpore's lower-case aliases.
float_ = float32
double = float64
half = float16
int_ = int64


def from_name(name: str) -> Type:
    """The Type whose MindSpore name (a ``.ckpt`` tensor_type) is ``name``.

    >>> from distinfer.dtype import from_name
    >>> from_name("Float16"), from_name("Int4"), from_name("Float")
    (Float16, Int4, Float32)
    """
    try:
        return _BY_NAME[name]
    except KeyError:
        raise ValueError(f"unknown MindSpore dtype {name!r}; known: {sorted(_BY_NAME)}") from None


def from_numpy(dtype: Any) -> Type:
    """The Type of a numpy dtype (``np.float32`` -> ``Float32``).

    >>> import numpy as np
    >>> from distinfer.dtype import from_numpy
    >>> from_numpy(np.float16), from_numpy(np.dtype("uint8"))
    (Float16, UInt8)
    >>> from_numpy(np.complex64)
    Traceback (most recent call last):
    ...
    TypeError: numpy dtype complex64 has no MindSpore equivalent
    """
    if isinstance(dtype, str) and dtype == "bfloat16":
        return bfloat16
    key = np.dtype(dtype)
    if key in _BY_NP:
        return _BY_NP[key]
    if key.name == "bfloat16":  # an array of it exists, so ml_dtypes is loaded
        return bfloat16
    raise TypeError(f"numpy dtype {key} has no MindSpore equivalent")


def get_dtype(value: Any) -> Type:
    """Normalise a dtype given as a Type, a numpy dtype/type or a MindSpore name.

    >>> import numpy as np, distinfer as ms
    >>> from distinfer.dtype import get_dtype
    >>> get_dtype(ms.int8), get_dtype(np.int64), get_dtype("BFloat16")
    (Int8, Int64, BFloat16)
    """
    if isinstance(value, Type):
        return value
    if isinstance(value, str) and value in _BY_NAME:
        return _BY_NAME[value]
    return from_numpy(value)


def dtype_to_nptype(dtype: Type) -> type:
    """numpy scalar type of a MindSpore dtype, as ``mindspore.dtype_to_nptype``.

    >>> import distinfer as ms
    >>> ms.dtype_to_nptype(ms.int32).__name__, ms.dtype_to_nptype(ms.float16)(1.5).itemsize
    ('int32', 2)
    """
    return get_dtype(dtype).np.type


def pytype_to_dtype(obj: Any) -> Type:
    """MindSpore dtype of a Python type (``int`` -> Int64, ``float`` -> Float32, ``bool`` -> Bool).

    Anything else goes through :func:`get_dtype`.

    >>> import numpy as np, distinfer as ms
    >>> ms.pytype_to_dtype(int), ms.pytype_to_dtype(float), ms.pytype_to_dtype(bool), ms.pytype_to_dtype(np.uint16)
    (Int64, Float32, Bool, UInt16)
    """
    if obj is bool:
        return bool_
    if obj is int:
        return int64
    if obj is float:
        return float32
    return get_dtype(obj)


def is_float(dtype: Type) -> bool:
    """True for the floating-point family {f16, f32, f64, bf16}."""
    return get_dtype(dtype) in float_types
