"""Python values <-> ``mind_ir`` AttributeProto / TensorProto, encoded as MindSpore 2.10 encodes them.

MindSpore's loader reads a scalar attribute from its singular field (``i``, ``f``, ``s``) but a
scalar inside a TUPLE/LIST from the repeated one (``ints``, ``floats``, ``strings``), so both
forms are written where MindSpore writes them and both are read. Python floats are FLOAT
(float32) attributes, as MindSpore stores them. A numpy array is a TENSORS attribute whose
tensor carries ``raw_data``; a TENSORS attribute without data names a dtype (MindSpore's
``dtype`` attributes) and, on a node, its ``shape`` attribute gives the outputs' dims and
dtypes (:func:`abstract`).

>>> decode_value(encode_value("k", (1, (2, 3), True, None)))
(1, (2, 3), True, None)
>>> encode_value("k", (4, 2)).values[0].ints  # MindSpore's form of an int inside a tuple
[4]
>>> decode_value(encode_value("eps", 1e-5))  # stored as float32, read back as the literal written
1e-05
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from .. import dtype as mstype
from .._proto import mind_ir_pb2 as pb
from ..errors import FormatError

__all__ = ["encode_value", "decode_value", "tensor_proto", "tensor_array", "np_to_data_type", "MONAD",
           "DATA_TYPES", "abstract", "abstract_specs", "attr_dict", "data_type_dtype"]

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
    """TensorProto data_type of a numpy dtype (float64 is DOUBLE, as MindSpore writes it).

    >>> np_to_data_type(np.float32), np_to_data_type(np.int64)
    (1, 7)
    """
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
        typed = _typed_field(t)
        if typed is not None and len(typed) == count:
            return np.asarray(typed, dtype=dt).reshape(shape)
    if len(data) != count * dt.itemsize:
        raise FormatError(f"{where}: tensor {t.name or '<unnamed>'} of dims {list(shape)} and data_type "
                          f"{t.data_type} needs {count * dt.itemsize} bytes of data, found {len(data)}")
    return np.frombuffer(bytes(data), dtype=dt).reshape(shape).copy()


def _typed_field(t: "pb.TensorProto"):
    for field in ("float_data", "int32_data", "int64_data", "double_data", "uint64_data"):
        vals = getattr(t, field)
        if len(vals):
            return list(vals)
    return None


def _dtype_of_data_type(data_type: int, where: str) -> mstype.Type:
    if data_type not in DATA_TYPES:
        raise FormatError(f"{where}: unsupported data_type {data_type}")
    return mstype.from_numpy(DATA_TYPES[data_type])


# ---------------------------------------------------------------------------- values
def encode_value(name: str, value: Any) -> "pb.AttributeProto":
    """An AttributeProto named ``name`` holding ``value`` as MindSpore writes it.

    None, bools, ints, floats, strings, numpy arrays (tensors), distinfer dtypes (a TENSORS
    attribute without data), :data:`MONAD`, and tuples/lists of these.

    >>> a = encode_value("value", np.full((), 0.5, np.float32))  # a 0-d tensor constant
    >>> A.AttributeType.Name(a.type), list(a.tensors[0].dims), len(a.tensors[0].raw_data)
    ('TENSORS', [], 4)
    """
    a = A(name=name) if name else A()
    _fill(a, value, nested=False)
    return a


def _fill(a: "pb.AttributeProto", value: Any, nested: bool) -> None:
    if isinstance(value, np.generic):
        value = value.item()
    if value is None:
        a.type = A.NONE
    elif value is MONAD:
        a.type = A.UMONAD
    elif isinstance(value, bool):
        a.type = A.BOOL
        _put(a, "i", "ints", int(value), nested)
    elif isinstance(value, int):
        a.type = A.INT64
        _put(a, "i", "ints", value, nested)
    elif isinstance(value, float):
        a.type = A.FLOAT
        _put(a, "f", "floats", value, nested)
    elif isinstance(value, str):
        a.type = A.STRING
        _put(a, "s", "strings", value.encode(), nested)
    elif isinstance(value, mstype.Type):
        a.type = A.TENSORS
        a.tensors.append(T(data_type=np_to_data_type(value.np, a.name or "dtype"), name="value0"))
    elif isinstance(value, np.ndarray):
        a.type = A.TENSORS
        a.tensors.append(tensor_proto(value, name="value0"))
    elif isinstance(value, (tuple, list)):
        a.type = A.TUPLE if isinstance(value, tuple) else A.LIST
        for v in value:
            _fill(a.values.add(), v, nested=True)
    else:
        raise TypeError(f"attribute {a.name!r}: cannot encode a {type(value).__name__} ({value!r}) in MindIR")


def _put(a: "pb.AttributeProto", single: str, repeated: str, value: Any, nested: bool) -> None:
    """A scalar goes in the singular field, or in the repeated one inside a sequence (MindSpore's reading)."""
    if nested:
        getattr(a, repeated).append(value)
    else:
        setattr(a, single, value)


_INT_TYPES = {A.INT8, A.INT16, A.INT32, A.INT64, A.UINT8, A.UINT16, A.UINT32, A.UINT64}


def _scalar(a: "pb.AttributeProto", single: str, repeated: str, where: str) -> Any:
    if a.HasField(single):
        return getattr(a, single)
    values = getattr(a, repeated)
    if len(values) != 1:
        raise FormatError(f"{where}: attribute {a.name!r} of type {A.AttributeType.Name(a.type)} holds "
                          f"{len(values)} values in {repeated!r}, expected one")
    return values[0]


def _float32_literal(v: float) -> float:
    """The shortest decimal that is this float32: the value as written before MindIR stored it
    as float32 (1e-05, not 9.99999974738e-06), so distinfer's float64 kernels see the same constant."""
    return float(str(np.float32(v)))


def decode_value(a: "pb.AttributeProto", where: str = "attribute") -> Any:
    """The Python value of an AttributeProto (inverse of :func:`encode_value`; MindSpore's forms too)."""
    ty = a.type
    if ty == A.NONE:
        return None
    if ty in (A.UMONAD, A.IOMONAD):
        return MONAD
    if ty == A.BOOL:
        return bool(_scalar(a, "i", "ints", where))
    if ty in _INT_TYPES:
        return int(_scalar(a, "i", "ints", where))
    if ty in (A.FLOAT, A.FLOAT16, A.BFLOAT16):
        return _float32_literal(_scalar(a, "f", "floats", where))
    if ty == A.DOUBLE:
        return float(_scalar(a, "d", "doubles", where))
    if ty == A.STRING:
        return _scalar(a, "s", "strings", where).decode("utf-8", errors="replace")
    if ty in (A.TUPLE, A.LIST):
        items = [decode_value(v, where) for v in a.values]
        return tuple(items) if ty == A.TUPLE else items
    if ty == A.TENSOR:
        return tensor_array(a.t, where)
    if ty == A.TENSORS:
        if not a.tensors:
            raise FormatError(f"{where}: TENSORS attribute {a.name!r} holds no tensor")
        t = a.tensors[0]
        if t.HasField("raw_data") or _typed_field(t) is not None:
            return tensor_array(t, where)
        return _dtype_of_data_type(t.data_type, where)
    raise FormatError(f"{where}: attribute {a.name!r} has unsupported type "
                      f"{A.AttributeType.Name(ty) if ty in A.AttributeType.values() else ty}")


def attr_dict(attrs, where: str) -> dict[str, Any]:
    """``{name: value}`` of a repeated AttributeProto field."""
    return {a.name: decode_value(a, f"{where}, attribute {a.name!r}") for a in attrs}


# ------------------------------------------------------------------ abstracts ("shape")
def abstract(name: str, outputs: Sequence[Any], is_tuple: bool) -> "pb.AttributeProto":
    """A node's ``shape`` attribute: TENSORS (dims and dtype) of one output, or a TUPLE of them.

    ``outputs`` holds arrays or ``(dims, numpy dtype)`` pairs; a :data:`MONAD` output is UMONAD.

    >>> a = abstract("shape", [((4, 10), np.float32)], is_tuple=False)
    >>> A.AttributeType.Name(a.type), list(a.tensors[0].dims), a.tensors[0].data_type
    ('TENSORS', [4, 10], 1)
    >>> [list(v.tensors[0].dims) for v in abstract("shape", [((2,), np.int64), ((2,), np.float32)], True).values]
    [[2], [2]]
    """
    a = A(name=name) if name else A()
    if is_tuple:
        a.type = A.TUPLE
        for out in outputs:
            a.values.append(abstract("", [out], is_tuple=False))
        a.seq_info.is_dyn_len = False
        return a
    (out,) = outputs
    if out is MONAD:
        a.type = A.UMONAD
        return a
    dims, dtype = (out.shape, out.dtype) if isinstance(out, np.ndarray) else out
    a.type = A.TENSORS
    a.tensors.append(T(dims=[int(d) for d in dims], data_type=np_to_data_type(dtype, "shape")))
    return a


def abstract_specs(a: "pb.AttributeProto", where: str) -> list[tuple[tuple[int, ...], np.dtype]] | None:
    """``[(dims, numpy dtype), ...]`` of the tensor outputs a ``shape`` attribute describes (a
    single output gives one entry); None when it describes something else (a monad)."""
    if a.type == A.TENSORS and a.tensors:
        t = a.tensors[0]
        if t.data_type not in DATA_TYPES:
            raise FormatError(f"{where}: output of unsupported data_type {t.data_type}")
        return [(tuple(int(d) for d in t.dims), DATA_TYPES[t.data_type])]
    if a.type in (A.TUPLE, A.LIST):
        out = []
        for v in a.values:
            spec = abstract_specs(v, where)
            if spec is None or len(spec) != 1:
                return None
            out.extend(spec)
        return out
    return None
