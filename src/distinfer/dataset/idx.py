"""Reading idx files (the MNIST container format), plain or gzipped.

An idx file is: two zero bytes, a type code, the number of dimensions, each dimension as a
big-endian uint32, then the values big-endian in C order.

>>> import gzip, os, struct, tempfile
>>> import numpy as np
>>> from distinfer.dataset.idx import read_idx
>>> path = os.path.join(tempfile.mkdtemp(), "x-idx1-ubyte.gz")
>>> with gzip.open(path, "wb") as f:
...     _ = f.write(struct.pack(">BBBBI", 0, 0, 0x08, 1, 3) + bytes([7, 8, 9]))
>>> read_idx(path).tolist()
[7, 8, 9]
"""
from __future__ import annotations

import gzip
import os
import struct
from dataclasses import dataclass

import numpy as np

__all__ = ["IdxHeader", "read_idx_header", "read_idx"]

# idx type code -> big-endian numpy dtype.
_TYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


@dataclass(frozen=True)
class IdxHeader:
    """What an idx header says: ``dtype`` (native byte order), ``shape`` and header length.

    >>> import os, struct, tempfile
    >>> p = os.path.join(tempfile.mkdtemp(), "x-idx2-float")
    >>> with open(p, "wb") as f:  # type 0x0D (big-endian float32), 2 dims: 1 x 2
    ...     _ = f.write(struct.pack(">BBBBII", 0, 0, 0x0D, 2, 1, 2) + struct.pack(">2f", 1.5, -2.0))
    >>> h = read_idx_header(p)
    >>> h.dtype, h.shape, h.offset, h.nbytes
    (dtype('float32'), (1, 2), 12, 8)
    """

    dtype: np.dtype
    shape: tuple[int, ...]
    offset: int

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) * self.dtype.itemsize


def _open(path: str):
    return gzip.open(path, "rb") if path.endswith(".gz") else open(path, "rb")


def _parse_header(path: str, head: bytes) -> IdxHeader:
    if len(head) < 4:
        raise RuntimeError(f"idx file {path} is truncated: {len(head)} bytes, no 4-byte magic number")
    zero, code, ndim = struct.unpack(">HBB", head[:4])
    if zero != 0 or code not in _TYPES or ndim == 0:
        raise RuntimeError(f"idx file {path} has a bad magic number 0x{head[:4].hex()} "
                           f"(expected 0x0000 then a type code in {sorted(_TYPES)} and ndim > 0)")
    end = 4 + 4 * ndim
    if len(head) < end:
        raise RuntimeError(f"idx file {path} is truncated inside its header ({ndim} dimensions)")
    shape = struct.unpack(f">{ndim}I", head[4:end])
    return IdxHeader(np.dtype(_TYPES[code]).newbyteorder("="), tuple(int(d) for d in shape), end)


def read_idx_header(path: str | os.PathLike) -> IdxHeader:
    """Parse only the header (cheap, even for gzip files) and check a plain file's length.

    >>> import os, struct, tempfile
    >>> p = os.path.join(tempfile.mkdtemp(), "x-idx3-ubyte")
    >>> with open(p, "wb") as f:
    ...     _ = f.write(struct.pack(">BBBBIII", 0, 0, 0x08, 3, 2, 2, 2) + bytes(7))  # one byte short
    >>> read_idx_header(p)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    RuntimeError: idx file ... is truncated: header promises shape (2, 2, 2) (8 data bytes) but only 7 bytes follow
    """
    path = os.fspath(path)
    try:
        with _open(path) as f:
            head = f.read(4 + 4 * 255)
    except (OSError, EOFError) as err:  # gzip.BadGzipFile is an OSError
        raise RuntimeError(f"cannot read idx file {path}: {err}") from err
    header = _parse_header(path, head)
    if not path.endswith(".gz"):
        _check_length(path, os.path.getsize(path) - header.offset, header)
    return header


def _check_length(path: str, have: int, header: IdxHeader) -> None:
    if have < header.nbytes:
        raise RuntimeError(f"idx file {path} is truncated: header promises shape {header.shape} "
                           f"({header.nbytes} data bytes) but only {have} bytes follow")


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """The array stored in an idx file: memory-mapped when plain, decompressed when ``.gz``.

    >>> import os, struct, tempfile
    >>> p = os.path.join(tempfile.mkdtemp(), "x-idx2-ubyte")
    >>> with open(p, "wb") as f:
    ...     _ = f.write(struct.pack(">BBBBII", 0, 0, 0x08, 2, 2, 3) + bytes(range(6)))
    >>> a = read_idx(p)  # a plain file is memory-mapped
    >>> type(a).__name__, a.shape, a.tolist()
    ('memmap', (2, 3), [[0, 1, 2], [3, 4, 5]])
    """
    path = os.fspath(path)
    header = read_idx_header(path)
    if not path.endswith(".gz"):
        # A memmap keeps a 47 MB training file out of memory until rows are read.
        raw = np.memmap(path, dtype=header.dtype.newbyteorder(">"), mode="r",
                        offset=header.offset, shape=header.shape)
        return raw if header.dtype.itemsize == 1 else raw.astype(header.dtype)
    try:
        with _open(path) as f:
            payload = f.read()
    except (OSError, EOFError) as err:
        raise RuntimeError(f"idx file {path} is corrupt or truncated: {err}") from err
    _check_length(path, len(payload) - header.offset, header)
    data = np.frombuffer(payload, dtype=header.dtype.newbyteorder(">"), count=int(np.prod(header.shape)),
                         offset=header.offset)
    return data.astype(header.dtype).reshape(header.shape)
