"""Python values <-> ``mind_ir`` AttributeProto / TensorProto (the encodings export and load share).

Scalars use MindSpore's attribute types (BOOL/INT64/DOUBLE/STRING/NONE); tuples and lists are
``TUPLE``/``LIST`` attributes whose ``values`` are the encoded items (as MindSpore stores
shapes). Three distinfer values carry a marker in ``ref_attr_name`` so they decode to the same
type: ``"dtype"`` (a STRING holding the MindSpore dtype name), ``"Layout"`` (a TUPLE of
device_matrix, tensor_map, tensor_shape, opt_shard_size) and ``"Tensor"`` (a TENSOR that was a
distinfer Tensor rather than a numpy array).

>>> decode_value(encode_value("k", (1, (2, 3), True, None)))
(1, (2, 3), True, None)
"""
from __future__ import annotations

from typing import Any

import numpy as np

from .. import dtype as mstype
from .._proto import mind_ir_pb2 as pb
from ..errors import FormatError
from ..layout import Layout
from ..tensor import Tensor

__all__ = ["encode_value", "decode_value", "tensor_proto", "tensor_array", "np_to_data_type", "MONAD",
           "DATA_TYPES", "data_type_dtype"]

A = pb.AttributeProto
T = pb.TensorProto


class _Monad:
    """MindSpore's UMonad/IOMonad: a side-effect token with no data."""

    def __repr__(self) -> str:
        return "U"


MONAD = _Monad()

# TensorProto.DataType -> numpy dtype (little-endian); BFLOAT16 through data_type_dtype, which
# makes bfloat16's numpy type (ml_dtypes) only when a file has one.
DATA_TYPES: dict[int, np.dtype] = {
    T.FLOAT: np.dtype("<f4"), T.UINT8: np.dtype("u1"), T.INT8: np.dtype("i1"), T.UINT16: np.dtype("<u2"),
    T.INT16: np.dtype("<i2"), T.INT32: np.dtype("<i4"), T.INT64: np.dtype("<i8"), T.BOOL: np.dtype("?"),
    T.FLOAT16: np.dtype("<f2"), T.DOUBLE: np.dtype("<f8"), T.UINT32: np.dtype("<u4"), T.UINT64: np.dtype("<u8"),
    T.COMPLEX64: np.dtype("<c8"), T.COMPLEX128: np.dtype("<c16"), T.FLOAT64: np.dtype("<f8"),
}


def data_type_dtype(data_type: int) -> np.dtype | None:
    """The numpy dtype of a TensorProto data_type (None if it has none)."""
    return mstype.bfloat16.np if data_type == T.BFLOAT16 else DATA_TYPES.get(data_type)


def np_to_data_type(dtype: Any, what: str = "tensor") -> int:
    """TensorProto data_type of a numpy dtype."""
    if getattr(dtype, "name", dtype) == "bfloat16":
        return T.BFLOAT16
    key = np.dtype(dtype)
    key = key.newbyteorder("=") if key.byteorder not in ("|", "=") else key
    for k, v in DATA_TYPES.items():
        if k != T.FLOAT64 and v == key:
            return k
    raise TypeError(f"{what}: numpy dtype {key} has no MindIR data_type")


def tensor_proto(arr: np.ndarray, name: str = "", with_data: bool = True) -> "pb.TensorProto":
    """A TensorProto with ``dims``, ``data_type`` and (optionally) little-endian ``raw_data``."""
    arr = np.asarray(arr)
    t = T(dims=list(arr.shape), data_type=np_to_data_type(arr.dtype, name or "tensor"))
    if name:
        t.name = name
    if with_data:
        t.raw_data = _le_bytes(arr)
    return t


def _le_bytes(arr: np.ndarray) -> bytes:
    a = np.ascontiguousarray(arr)
    if a.dtype.byteorder == ">" or (a.dtype.byteorder == "=" and np.little_endian is False):
        a = a.astype(a.dtype.newbyteorder("<"))
    return a.tobytes()


def tensor_array(t: "pb.TensorProto", where: str, raw: bytes | memoryview | None = None) -> np.ndarray:
    """The numpy array of a TensorProto (``raw`` overrides ``raw_data``, for external data)."""
    dt = data_type_dtype(t.data_type)
    if dt is None:
        raise FormatError(f"{where}: tensor {t.name or '<unnamed>'} has unsupported data_type {t.data_type}")
    shape = tuple(int(d) for d in t.dims)
    if any(d < 0 for d in shape):
        raise FormatError(f"{where}: tensor {t.name or '<unnamed>'} has negative dims {list(shape)}")
    count = int(np.prod(shape, dtype=np.int64))
    data = t.raw_data if raw is None else raw
    if len(data) == 0 and raw is None:
        typed = _typed_field(t, dt)
        if typed is not None and len(typed) == count:
            return np.asarray(typed, dtype=dt).reshape(shape)
    if len(data) != count * dt.itemsize:
        raise FormatError(f"{where}: tensor {t.name or '<unnamed>'} of dims {list(shape)} and data_type "
                          f"{t.data_type} needs {count * dt.itemsize} bytes of data, found {len(data)}")
    return np.frombuffer(bytes(data), dtype=dt).reshape(shape).copy()


def _typed_field(t: "pb.TensorProto", dt: np.dtype):
    for field in ("float_data", "int32_data", "int64_data", "double_data", "uint64_data"):
        vals = getattr(t, field)
        if len(vals):
            return list(vals)
    return None


# ---------------------------------------------------------------------------- values
def encode_value(name: str, value: Any) -> "pb.AttributeProto":
    """An AttributeProto named ``name`` holding ``value`` (see module doc for the supported types)."""
    a = A(name=name) if name else A()
    _fill(a, value)
    return a


def _fill(a: "pb.AttributeProto", value: Any) -> None:
    if isinstance(value, np.generic):
        value = value.item()
    if value is None:
        a.type = A.NONE
    elif value is MONAD:
        a.type = A.UMONAD
    elif isinstance(value, bool):
        a.type, a.i = A.BOOL, int(value)
    elif isinstance(value, int):
        a.type, a.i = A.INT64, value
    elif isinstance(value, float):
        a.type, a.d = A.DOUBLE, value
    elif isinstance(value, str):
        a.type, a.s = A.STRING, value.encode()
    elif isinstance(value, mstype.Type):
        a.type, a.s, a.ref_attr_name = A.STRING, value.name.encode(), "dtype"
    elif isinstance(value, Layout):
        a.type, a.ref_attr_name = A.TUPLE, "Layout"
        for key, v in (("device_matrix", value.dev_matrix), ("tensor_map", value.tensor_map),
                       ("tensor_shape", value.shape), ("opt_shard_size", value.opt_shard_size)):
            a.values.append(encode_value(key, v))
    elif isinstance(value, Tensor):
        a.type, a.ref_attr_name = A.TENSOR, "Tensor"
        a.t.CopyFrom(tensor_proto(value.asnumpy()))
    elif isinstance(value, np.ndarray):
        a.type = A.TENSOR
        a.t.CopyFrom(tensor_proto(value))
    elif isinstance(value, (tuple, list)):
        a.type = A.TUPLE if isinstance(value, tuple) else A.LIST
        for v in value:
            a.values.append(encode_value("", v))
    else:
        raise TypeError(f"attribute {a.name!r}: cannot encode a {type(value).__name__} ({value!r}) in MindIR")


_INT_TYPES = {A.INT8, A.INT16, A.INT32, A.INT64, A.UINT8, A.UINT16, A.UINT32, A.UINT64}


def decode_value(a: "pb.AttributeProto", where: str = "attribute") -> Any:
    """The Python value of an AttributeProto (inverse of :func:`encode_value`; MindSpore's scalars too)."""
    ty = a.type
    if ty == A.NONE:
        return None
    if ty in (A.UMONAD, A.IOMONAD):
        return MONAD
    if ty == A.BOOL:
        return bool(a.i)
    if ty in _INT_TYPES:
        return int(a.i)
    if ty in (A.FLOAT, A.FLOAT16, A.BFLOAT16):
        return float(a.f)
    if ty == A.DOUBLE:
        return float(a.d)
    if ty == A.STRING:
        text = a.s.decode("utf-8", errors="replace")
        return mstype.get_dtype(text) if a.ref_attr_name == "dtype" else text
    if ty in (A.TUPLE, A.LIST):
        items = [decode_value(v, where) for v in a.values]
        if a.ref_attr_name == "Layout":
            return _layout(items, where)
        return tuple(items) if ty == A.TUPLE else items
    if ty == A.TENSOR:
        arr = tensor_array(a.t, where)
        return Tensor(arr) if a.ref_attr_name == "Tensor" else arr
    if ty == A.TENSORS:  # MindSpore's abstract ("shape") attributes: dims and dtype only
        return tuple((tuple(int(d) for d in t.dims), int(t.data_type)) for t in a.tensors)
    raise FormatError(f"{where}: attribute {a.name!r} has unsupported type "
                      f"{A.AttributeType.Name(ty) if ty in A.AttributeType.values() else ty}")


def _layout(items: list, where: str) -> Layout:
    if len(items) != 4:
        raise FormatError(f"{where}: a Layout attribute needs 4 entries (device_matrix, tensor_map, tensor_shape, "
                          f"opt_shard_size), found {len(items)}")
    try:
        return Layout(*items)
    except (ValueError, TypeError) as e:
        raise FormatError(f"{where}: invalid Layout {items}: {e}") from None


def attr_dict(attrs, where: str) -> dict[str, Any]:
    """``{name: value}`` of a repeated AttributeProto field."""
    return {a.name: decode_value(a, f"{where}, attribute {a.name!r}") for a in attrs}
