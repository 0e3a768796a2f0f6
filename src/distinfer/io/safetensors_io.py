"""MindSpore-flavoured safetensors files, through the ``safetensors`` package (spec §2).

Reading uses ``safe_open(..., framework="np")``: names, dtypes and shapes come from the header
and blocks are read lazily with ``get_slice``. safetensors' numpy API cannot build bfloat16
arrays (numpy knows no dtype named ``"bfloat16"``), so BF16 blocks are read with positioned
reads at the offsets the header gives, into ``ml_dtypes.bfloat16`` arrays.

Writing follows MindSpore's ``save_checkpoint(..., format="safetensors")``: metadata
``{"format": "ms"}``, optionally ``"crc_num"`` computed exactly as MindSpore does (including
its 0-d integer quirk, see :func:`ms_crc`), C-contiguous arrays only, atomic replacement.

>>> import os, tempfile, numpy as np
>>> p = os.path.join(tempfile.mkdtemp(), "m.safetensors")
>>> write_safetensors(p, {"w": np.arange(6, dtype=np.float32).reshape(2, 3), "epoch_num": 3})
>>> with SafetensorsFile(p) as f:
...     print(f.names(), f.metadata, f.read_box("w", ((0, 2), (1, 2))).ravel().tolist())
['epoch_num', 'w'] {'format': 'ms'} [1.0, 4.0]
"""
from __future__ import annotations

import json
import logging
import math
import os
import struct
import zlib
from typing import Any, Iterable, Mapping, Optional, Sequence, Union

import numpy as np
from safetensors import SafetensorError, safe_open
from safetensors.numpy import save_file

from .. import dtype as mstype
from ..errors import FormatError
from ._atomic import atomic_output, atomic_path
from .ranged import Box, CkptEntry, RangedReader

__all__ = ["SafetensorsFile", "write_safetensors", "ms_crc", "write_safetensors_stream", "safetensors_order",
           "TensorSpec"]

log = logging.getLogger(__name__)

PathLike = Union[str, os.PathLike]
_BY_CODE = {t.safetensors: t for t in mstype._ALL if t.safetensors}
_ZEROS = bytes(1 << 20)


def _crc_zeros(n: int, crc: int) -> int:
    while n > 0:
        crc = zlib.crc32(_ZEROS[: min(n, len(_ZEROS))], crc)
        n -= len(_ZEROS)
    return crc


def ms_crc(tensors: Mapping[str, np.ndarray]) -> int:
    """MindSpore's safetensors ``crc_num``: over sorted names, ``crc32(name)`` then
    ``crc32(bytes(array))``, chained.

    ``bytes(a)`` of a 0-d integer array is ``a`` zero bytes (Python's ``bytes(int)``), not its
    data; MindSpore's value depends on that, so it is reproduced. A negative 0-d integer makes
    MindSpore fail (``negative count``) and raises ValueError here too. MindSpore cannot hash
    bf16 at all; here bf16 contributes its raw bytes.

    >>> ms_crc({"epoch_num": np.array(3)}) == ms_crc({"epoch_num": np.zeros(3, np.uint8).reshape(3)})
    True
    """
    crc = 0
    for name in sorted(tensors):
        arr = np.asarray(tensors[name])
        crc = zlib.crc32(name.encode("utf-8"), crc)
        if arr.ndim == 0 and arr.dtype.kind in "iu":
            n = int(arr)
            if n < 0:
                raise ValueError(f"{name!r}: MindSpore cannot compute a safetensors crc_num with a "
                                 f"negative 0-d integer ({n}): 'negative count'")
            crc = _crc_zeros(n, crc)
        else:
            crc = zlib.crc32(np.ascontiguousarray(arr).reshape(-1).view(np.uint8), crc)
    return crc


def _to_array(name: str, value: Any) -> np.ndarray:
    if isinstance(value, (np.ndarray, np.generic)):  # first: np.float64 is also a float
        pass
    elif isinstance(value, bool):
        return np.asarray(value, dtype=np.bool_)
    if isinstance(value, int):
        return np.asarray(value, dtype=np.int64)
    if isinstance(value, float):
        return np.asarray(value, dtype=np.float32)
    if isinstance(value, str):
        raise TypeError(f"{name!r}: safetensors cannot hold a string (MindSpore fails with "
                        f"'Unknown dtype \"str64\"')")
    arr = np.asarray(value)
    if arr.dtype.byteorder == ">":
        arr = arr.astype(arr.dtype.newbyteorder("<"))
    try:
        t = mstype.from_numpy(arr.dtype)
    except TypeError as exc:
        raise TypeError(f"{name!r}: {exc}") from None
    if not t.safetensors:
        raise TypeError(f"{name!r}: dtype {t.name} has no safetensors equivalent")
    # safetensors >= 0.5 serialises data_ptr/nbytes without checking contiguity: a strided
    # view would be written as the wrong bytes. Always hand it a C-contiguous copy.
    shape = arr.shape
    return np.ascontiguousarray(arr).reshape(shape)


def write_safetensors(path: PathLike, tensors: Union[Mapping[str, Any], Iterable[tuple[str, Any]]],
                      crc_check: bool = False, metadata: Optional[Mapping[str, str]] = None) -> None:
    """Write tensors as MindSpore does with ``format="safetensors"``, atomically.

    Values: numpy arrays (bf16 as ``ml_dtypes.bfloat16``), or ``int``/``float``/``bool``
    (0-d I64/F32/BOOL, like MindSpore's ``append_dict``). ``metadata`` entries are added to
    ``{"format": "ms"}``; ``crc_check`` adds ``"crc_num"`` (see :func:`ms_crc`).

    >>> import os, tempfile, numpy as np
    >>> p = os.path.join(tempfile.mkdtemp(), "c.safetensors")
    >>> write_safetensors(p, {"lr": 0.01}, crc_check=True)
    >>> SafetensorsFile(p, crc_check=True).metadata["format"]
    'ms'
    """
    pairs = tensors.items() if isinstance(tensors, Mapping) else tensors
    arrays: dict[str, np.ndarray] = {}
    for name, value in pairs:
        if name in arrays:
            raise ValueError(f"duplicate tensor name {name!r}")
        arrays[name] = _to_array(name, value)
    meta = {"format": "ms"}
    meta.update({str(k): str(v) for k, v in (metadata or {}).items()})
    if crc_check:
        meta["crc_num"] = str(ms_crc(arrays))
    with atomic_path(path) as tmp:
        save_file(arrays, tmp, metadata=meta)


#: ``(name, numpy dtype, shape)`` of one tensor of a streamed safetensors file.
TensorSpec = tuple[str, Any, tuple[int, ...]]


def safetensors_order(specs: Iterable[TensorSpec]) -> list[TensorSpec]:
    """``specs`` in the order the safetensors library lays tensors out: largest item size first,
    then by name, so every tensor stays aligned to its item size.

    >>> [s[0] for s in safetensors_order([("b", np.float32, (2,)), ("a", np.int64, ()), ("c", np.float32, (1,))])]
    ['a', 'b', 'c']
    """
    return sorted(specs, key=lambda s: (-np.dtype(s[1]).itemsize, s[0]))


def write_safetensors_stream(path: PathLike, specs: Sequence[TensorSpec], blocks: Iterable[tuple[str, np.ndarray]],
                             metadata: Optional[Mapping[str, str]] = None) -> int:
    """Write a safetensors file whose tensors arrive one at a time, atomically; returns the data bytes.

    The header is computed from ``specs`` alone (listed in data order, which MindSpore's reader
    expects) and written first; then each ``(name, array)`` of ``blocks`` is written as it comes.
    ``blocks`` must follow ``specs`` (see :func:`safetensors_order`), so a writer holds one
    tensor at a time however large the file. ``metadata`` is added to ``{"format": "ms"}``.

    >>> import os, tempfile
    >>> p = os.path.join(tempfile.mkdtemp(), "s.safetensors")
    >>> specs = safetensors_order([("w", np.float32, (2, 2)), ("step", np.int64, ())])
    >>> data = {"w": np.eye(2, dtype=np.float32), "step": np.array(3)}
    >>> write_safetensors_stream(p, specs, ((n, data[n]) for n, _, _ in specs))
    24
    >>> SafetensorsFile(p).read("w").tolist(), int(SafetensorsFile(p).read("step"))
    ([[1.0, 0.0], [0.0, 1.0]], 3)
    """
    meta = {"format": "ms"}
    meta.update({str(k): str(v) for k, v in (metadata or {}).items()})
    header: dict[str, Any] = {"__metadata__": meta}
    offset = 0
    for name, dt, shape in specs:
        code = mstype.from_numpy(dt).safetensors
        if not code:
            raise TypeError(f"{path}: tensor {name!r} of dtype {np.dtype(dt)} has no safetensors equivalent")
        n = math.prod(shape) * np.dtype(dt).itemsize
        header[name] = {"dtype": code, "shape": [int(d) for d in shape], "data_offsets": [offset, offset + n]}
        offset += n
    raw = json.dumps(header, separators=(",", ":")).encode("utf-8")
    raw += b" " * (-len(raw) % 8)
    it = iter(blocks)
    with atomic_output(path) as fh:
        fh.write(struct.pack("<Q", len(raw)))
        fh.write(raw)
        for name, dt, shape in specs:
            got, arr = next(it)
            arr = np.asarray(arr)
            if got != name or tuple(arr.shape) != tuple(shape) or arr.dtype != np.dtype(dt):
                raise ValueError(f"{path}: expected tensor {name!r} {np.dtype(dt)} {tuple(shape)} next, got {got!r} "
                                 f"{arr.dtype} {arr.shape}")
            fh.write(np.ascontiguousarray(arr).reshape(-1).view(np.uint8))
    return offset


class SafetensorsFile(RangedReader):
    """An opened ``.safetensors`` file: names, dtypes, shapes and lazy block reads.

    ``crc_check=True`` requires a ``crc_num`` metadata entry and verifies it on open (reading
    every tensor once, one at a time). Defects raise :class:`~distinfer.errors.FormatError`.

    >>> import os, tempfile, numpy as np, ml_dtypes
    >>> p = os.path.join(tempfile.mkdtemp(), "b.safetensors")
    >>> write_safetensors(p, {"h": np.array([1.0, 2.5], ml_dtypes.bfloat16)})
    >>> SafetensorsFile(p).read("h").astype(np.float32).tolist()
    [1.0, 2.5]
    """

    def __init__(self, path: PathLike, crc_check: bool = False) -> None:
        self.path = os.fspath(path)
        self._fd = -1
        if os.path.isdir(self.path):
            raise FormatError(f"{self.path}: is a directory, not a safetensors file")
        if not os.path.exists(self.path):
            raise FormatError(f"{self.path}: no such safetensors file")
        if os.path.getsize(self.path) == 0:
            raise FormatError(f"{self.path}: the safetensors file is empty")
        try:
            self._st = safe_open(self.path, framework="np")
            self._st.__enter__()
            self.metadata: dict[str, str] = dict(self._st.metadata() or {})
            self._entries: dict[str, CkptEntry] = {}
            header = self._raw_header()
            for name in sorted(self._st.keys()):
                sl = self._st.get_slice(name)
                code = sl.get_dtype()
                if code not in _BY_CODE:
                    raise FormatError(f"{self.path}: tensor {name!r} has dtype {code!r}, which "
                                      f"MindSpore does not use")
                t = _BY_CODE[code]
                shape = tuple(int(n) for n in sl.get_shape())
                lo, hi = header[name]["data_offsets"]
                self._entries[name] = CkptEntry(name, t, shape, ((self._data_start + lo, hi - lo),),
                                                hi - lo, -1)
        except SafetensorError as exc:
            self.close()
            raise FormatError(f"{self.path}: not a valid safetensors file: {exc}") from None
        except BaseException:
            self.close()
            raise
        if crc_check:
            self._verify_crc()

    def _raw_header(self) -> dict[str, Any]:
        """The JSON header (safetensors already validated it); needed for BF16 offsets."""
        self._fd = os.open(self.path, os.O_RDONLY)
        head = os.pread(self._fd, 8, 0)
        (n,) = struct.unpack("<Q", head)
        self._data_start = 8 + n
        return json.loads(os.pread(self._fd, n, 8))

    def _verify_crc(self) -> None:
        if "crc_num" not in self.metadata:
            raise FormatError(f"{self.path}: crc_check=True but the metadata has no 'crc_num'")
        crc = 0
        for name in sorted(self._entries):
            arr = self.read(name)
            crc = zlib.crc32(name.encode("utf-8"), crc)
            if arr.ndim == 0 and arr.dtype.kind in "iu":
                if int(arr) < 0:
                    raise FormatError(f"{self.path}: crc_num cannot cover the negative 0-d integer "
                                      f"{name!r} (MindSpore fails on it)")
                crc = _crc_zeros(int(arr), crc)
            else:
                crc = zlib.crc32(arr.reshape(-1).view(np.uint8), crc)
        if str(crc) != self.metadata["crc_num"].strip():
            raise FormatError(f"{self.path}: CRC mismatch: metadata crc_num is "
                              f"{self.metadata['crc_num']} but the tensors hash to {crc}")

    def close(self) -> None:
        """Release the file (idempotent)."""
        st = self.__dict__.pop("_st", None)
        if st is not None:
            st.__exit__(None, None, None)
        super().close()

    def read(self, name: str) -> np.ndarray:
        """The whole tensor ``name``."""
        e = self.entry(name)
        return self.read_box(name, tuple((0, n) for n in e.shape))

    def read_rows(self, name: str, start: int, stop: int) -> np.ndarray:
        """Rows ``[start, stop)`` along axis 0."""
        e = self.entry(name)
        if not e.shape:
            raise ValueError(f"{self.path}: {name!r} is a scalar; it has no rows")
        return self.read_box(name, ((start, stop),) + tuple((0, n) for n in e.shape[1:]))

    def read_box(self, name: str, box: Box, out: Optional[np.ndarray] = None) -> np.ndarray:
        """Block ``box`` (``((start, stop), ...)`` per dim) of ``name``, read lazily."""
        e = self.entry(name)
        if e.dtype is mstype.bfloat16 or out is not None:
            return self._read_box_entry(e, box, out)
        box = tuple((int(a), int(b)) for a, b in box)
        if len(box) != len(e.shape) or any(not 0 <= a <= b <= n for (a, b), n in zip(box, e.shape)):
            raise ValueError(f"{self.path}: box {box} does not fit tensor {name!r} of shape {e.shape}")
        try:
            sl = self._st.get_slice(name)
            arr = sl[tuple(slice(a, b) for a, b in box)] if box else sl[...]
        except SafetensorError as exc:
            raise FormatError(f"{self.path}: tensor {name!r}: {exc}") from None
        # ascontiguousarray would turn a 0-d result into shape (1,): reshape last.
        return np.ascontiguousarray(arr, dtype=e.dtype.np).reshape(tuple(b - a for a, b in box))
