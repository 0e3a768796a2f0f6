"""MindSpore ``.ckpt`` files: an index-only reader with ranged reads, and a streaming writer.

A ``.ckpt`` is a concatenation of one-``Value`` ``Checkpoint`` protobuf messages (spec §1).
:class:`CkptFile` walks the protobuf wire format record by record and keeps, per tensor, only
its dtype, shape and the file offsets of its ``tensor_content`` pieces: no tensor byte is read
until asked for, and :meth:`CkptFile.read_box` reads only the bytes of the requested block
(the ranged reader of :mod:`distinfer.io.ranged`: ``os.preadv`` into the output array, never
``mmap``), so a process's memory stays at the output size plus a bounded staging buffer.

Consecutive records with the same tag are one tensor cut into pieces (MindSpore cuts raw bytes
every 512 MiB, not on row boundaries); the reader concatenates them logically. A trailing
``b"crc_num" + crc.to_bytes(10, "big")`` is recognised always and verified on request.

>>> import os, tempfile, numpy as np
>>> d = tempfile.mkdtemp(); p = os.path.join(d, "net.ckpt")
>>> write_ckpt(p, [("w", np.arange(12, dtype=np.float32).reshape(3, 4)), ("epoch_num", 3)])
>>> with CkptFile(p) as f:
...     print(f.names(), f.entry("w").shape, f.read_box("w", ((1, 3), (1, 2))).ravel().tolist())
['w', 'epoch_num'] (3, 4) [5.0, 9.0]
"""
from __future__ import annotations

import logging
import math
import os
import stat
import zlib
from dataclasses import dataclass
from typing import Any, Iterable, NamedTuple, Optional, Union

import numpy as np

from .. import dtype as mstype
from ..errors import FormatError
from ._atomic import atomic_output
from .ranged import Box, CkptEntry, RangedReader

__all__ = ["CkptEntry", "CkptFile", "RawValue", "write_ckpt", "CRC_MAGIC", "DEFAULT_CHUNK_BYTES"]

log = logging.getLogger(__name__)

CRC_MAGIC = b"crc_num"
_CRC_TRAILER = len(CRC_MAGIC) + 10
DEFAULT_CHUNK_BYTES = 512 * 1024 * 1024  # MindSpore: 1024 * SLICE_SIZE, SLICE_SIZE = 512 KiB
# Size of the header window the indexer reads at a time (tensor bytes are skipped, never read).
_WINDOW = 16 * 1024
# The CRC check streams the file in blocks of this size.
_CRC_BLOCK = 16 * 1024 * 1024

PathLike = Union[str, os.PathLike]


class RawValue(NamedTuple):
    """A value given to :func:`write_ckpt` as already-encoded bytes (e.g. packed Int4 data).

    >>> import os, tempfile, distinfer as ms
    >>> p = os.path.join(tempfile.mkdtemp(), "q.ckpt")
    >>> write_ckpt(p, [("q", RawValue(ms.qint4x2, (4,), bytes([0x21, 0x43])))])  # four Int4 values, packed
    >>> with CkptFile(p) as f:
    ...     print(f.entry("q").dtype, f.entry("q").shape, f.read("q").tolist())  # read back as the packed bytes
    Int4 (4,) [33, 67]
    """

    dtype: mstype.Type
    shape: tuple[int, ...]
    data: Any  # bytes-like, C-order little-endian content


# --------------------------------------------------------------------------------------- reader
class _Window:
    """Buffered positional access to the header bytes of a file (tensor bytes are skipped)."""

    def __init__(self, fd: int, end: int) -> None:
        self.fd, self.end = fd, end
        self.buf, self.start = b"", 0

    def bytes(self, pos: int, n: int) -> bytes:
        if self.start <= pos and pos + n <= self.start + len(self.buf):
            return self.buf[pos - self.start: pos - self.start + n]
        if n > _WINDOW // 2:
            data = os.pread(self.fd, n, pos)
        else:  # a header field: move the window here (the next fields follow it)
            self.start = pos
            self.buf = os.pread(self.fd, min(_WINDOW, self.end - pos), pos)
            data = self.buf[:n]
        if len(data) != n:
            raise EOFError(pos)
        return data

    def at(self, pos: int, want: int) -> tuple[bytes, int]:
        """``(buf, i)`` with ``buf[i:]`` the file from ``pos`` on: at least ``want`` bytes of it
        when the file has them (the window moves to ``pos`` if it holds fewer)."""
        i = pos - self.start
        if not (0 <= i and i + want <= len(self.buf)):
            self.start, i = pos, 0
            self.buf = os.pread(self.fd, min(_WINDOW, self.end - pos), pos)
        return self.buf, i


class _Walker:
    """Protobuf wire-format walker over one file, raising FormatError with context."""

    def __init__(self, path: str, win: _Window) -> None:
        self.path, self.win = path, win
        self.where = "file header"

    def fail(self, pos: int, what: str) -> FormatError:
        return FormatError(f"{self.path}: {self.where}, byte offset {pos}: {what}")

    def varint(self, pos: int, limit: int, what: str) -> tuple[int, int]:
        raw = self.win.bytes(pos, min(10, limit - pos)) if pos < limit else b""
        value, shift = 0, 0
        for i, b in enumerate(raw):
            value |= (b & 0x7F) << shift
            if not b & 0x80:
                if value >= 1 << 64:
                    raise self.fail(pos, f"{what}: varint overflows 64 bits")
                return value, pos + i + 1
            shift += 7
        if len(raw) < 10:
            raise self.fail(pos, f"{what}: varint runs past the end of its enclosing message "
                                 f"(limit {limit}); the file is truncated or corrupt")
        raise self.fail(pos, f"{what}: varint longer than 10 bytes")

    def key(self, pos: int, limit: int, allowed: dict[int, int], msg: str) -> tuple[int, int]:
        """Read a field key; only the fields MindSpore writes are accepted (strict on purpose:
        a corrupt byte then fails here instead of being skipped as an unknown field)."""
        k, nxt = self.varint(pos, limit, f"field key in {msg}")
        field, wire = k >> 3, k & 7
        if field not in allowed or (wire != allowed[field] and not (field == 1 and msg == "TensorProto"
                                                                      and wire == 2)):
            raise self.fail(pos, f"unexpected field {field} (wire type {wire}) in {msg}; expected "
                                 + ", ".join(f"field {f} wire type {w}" for f, w in allowed.items()))
        return (field, wire), nxt

    def length(self, pos: int, limit: int, what: str) -> tuple[int, int]:
        n, nxt = self.varint(pos, limit, f"length of {what}")
        if nxt + n > limit:
            raise self.fail(pos, f"{what} claims {n} bytes but only {limit - nxt} remain in the "
                                 f"enclosing message (file truncated or length corrupt)")
        return n, nxt

    def text(self, pos: int, n: int, what: str) -> str:
        raw = self.win.bytes(pos, n)
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            raise self.fail(pos, f"{what} is not valid UTF-8: {raw[:40]!r}") from None


@dataclass
class _Rec:
    tag: str
    dims: list[int]
    tensor_type: str
    content: tuple[int, int]
    index: int


_VALUE_FIELDS = {1: 2, 2: 2, 3: 2}
_TENSOR_FIELDS = {1: 0, 2: 2, 3: 2}


def _parse_record(w: _Walker, pos: int, end: int, index: int) -> _Rec:
    tag = None
    tensor = None
    while pos < end:
        (field, _), pos = w.key(pos, end, _VALUE_FIELDS, "Checkpoint.Value")
        n, pos = w.length(pos, end, "Checkpoint.Value field")
        if field == 1:
            tag = w.text(pos, n, "tag")
            w.where = f"record #{index} (tag {tag!r})"
        elif field == 2:
            tensor = (pos, pos + n)
        else:
            raise w.fail(pos, "maptensor (MapParameter) records are not supported by distinfer")
        pos += n
    if tag is None:
        raise w.fail(pos, "record has no tag (a required field)")
    if tensor is None:
        raise w.fail(pos, "record holds no tensor")
    dims: list[int] = []
    ttype = None
    content = None
    pos, tend = tensor
    while pos < tend:
        (field, wire), pos = w.key(pos, tend, _TENSOR_FIELDS, "TensorProto")
        if field == 1 and wire == 0:
            v, pos = w.varint(pos, tend, "dims entry")
            dims.append(v)
            continue
        n, pos = w.length(pos, tend, "TensorProto field")
        if field == 1:  # packed dims: legal protobuf although MindSpore writes them unpacked
            sub_end = pos + n
            while pos < sub_end:
                v, pos = w.varint(pos, sub_end, "packed dims entry")
                dims.append(v)
            continue
        if field == 2:
            ttype = w.text(pos, n, "tensor_type")
        else:
            content = (pos, n)
        pos += n
    if ttype is None:
        raise w.fail(pos, "tensor has no tensor_type (a required field)")
    if content is None:
        raise w.fail(pos, "tensor has no tensor_content (a required field)")
    for d in dims:
        if d >= 1 << 63:
            raise w.fail(pos, f"negative dimension {d - (1 << 64)} in dims {dims}")
    return _Rec(tag, dims, ttype, content, index)


# Header bytes a record is expected to fit in (a longer one takes the strict walker).
_HEADER = 1024


def _uvarint(h: bytes, i: int) -> tuple[int, int]:
    """Varint at ``h[i]`` and the index after it (IndexError past ``h`` or beyond 64 bits)."""
    b = h[i]
    if b < 0x80:
        return b, i + 1
    value, shift = b & 0x7F, 7
    while True:
        i += 1
        b = h[i]
        value |= (b & 0x7F) << shift
        if b < 0x80:
            if value >> 63:  # also rejects negative dims (two's complement), as the walker does
                raise IndexError(i)
            return value, i + 1
        shift += 7
        if shift > 63:
            raise IndexError(i)


def _utext(h: bytes, i: int) -> tuple[str, int]:
    """Length-prefixed UTF-8 at ``h[i]`` and the index after it (IndexError if it runs past ``h``)."""
    n, i = _uvarint(h, i)
    if i + n > len(h):
        raise IndexError(i)
    return h[i: i + n].decode("utf-8"), i + n


def _fast_record(h: bytes, i: int, pos: int, end: int, index: int) -> Optional[_Rec]:
    """The record at file offset ``pos`` (``h[i:]``) if it has exactly the layout MindSpore
    writes (tag, then dims, tensor_type, tensor_content, lengths consistent and inside ``end``);
    otherwise None, and :func:`_parse_record`'s strict walk decides. Indexing costs one pass of
    a few byte comparisons per record instead of one method call per field."""
    try:
        base = pos - i
        if h[i] != 0x0A:
            return None
        n, i = _uvarint(h, i + 1)
        rec_end = base + i + n
        if rec_end > end or h[i] != 0x0A:
            return None
        tag, i = _utext(h, i + 1)
        if h[i] != 0x12:
            return None
        n, i = _uvarint(h, i + 1)
        if base + i + n != rec_end:  # the tensor is the record's last field
            return None
        dims = []
        while h[i] == 0x08:
            v, i = _uvarint(h, i + 1)
            dims.append(v)
        if h[i] != 0x12:
            return None
        ttype, i = _utext(h, i + 1)
        if h[i] != 0x1A:
            return None
        n, i = _uvarint(h, i + 1)
        if base + i + n != rec_end:  # the content is the tensor's last field
            return None
    except (IndexError, UnicodeDecodeError):
        return None
    return _Rec(tag, dims, ttype, (base + i, n), index)


def _make_entry(path: str, recs: list[_Rec]) -> CkptEntry:
    first, last = recs[0], recs[-1]
    where = f"{path}: record #{first.index} (tag {first.tag!r})"
    for r in recs[1:]:
        if r.dims != first.dims or r.tensor_type != first.tensor_type:
            raise FormatError(f"{where}: piece record #{r.index} has dims {r.dims} / type "
                              f"{r.tensor_type!r}, but the first piece has {first.dims} / "
                              f"{first.tensor_type!r}")
    try:
        dt = mstype.from_name(last.tensor_type)
    except ValueError:
        dt = None
    if dt is None or dt.name != last.tensor_type:
        raise FormatError(f"{where}: unknown tensor_type {last.tensor_type!r}; expected one of "
                          f"{sorted(t.name for t in mstype._ALL)}")
    chunks = tuple(r.content for r in recs)
    nbytes = sum(n for _, n in chunks)
    dims = last.dims
    if dt is mstype.string:
        if dims != [0] or nbytes % 4:
            raise FormatError(f"{where}: a 'str' record needs dims [0] and content of whole UTF-32 "
                              f"code units, got dims {dims} and {nbytes} bytes")
        return CkptEntry(first.tag, dt, (), chunks, nbytes, first.index)
    count = math.prod(dims)
    if dt is mstype.qint4x2:
        # Packed 4-bit values; accept one byte per element or two elements per byte.
        if nbytes not in (count, (count + 1) // 2):
            raise FormatError(f"{where}: Int4 tensor of dims {dims} cannot hold {nbytes} bytes")
        return CkptEntry(first.tag, dt, tuple(dims), chunks, nbytes, first.index)
    item = dt.itemsize
    if dims == [0] and nbytes == item:
        # MindSpore's loader reads dims == [0] as a scalar (spec §1.4).
        dims = []
        count = 1
    if nbytes != count * item:
        raise FormatError(f"{where}: dims {dims} of {dt.name} need {count * item} bytes but the "
                          f"content holds {nbytes}")
    return CkptEntry(first.tag, dt, tuple(dims), chunks, nbytes, first.index)


class CkptFile(RangedReader):
    """An opened ``.ckpt``: its tensor index, and reads of whole tensors or blocks of them.

    ``crc_check=True`` verifies the CRC trailer on open (and requires one), streaming the file
    in bounded blocks. Every defect of the file raises :class:`~distinfer.errors.FormatError`.

    >>> import os, tempfile, numpy as np
    >>> p = os.path.join(tempfile.mkdtemp(), "a.ckpt")
    >>> write_ckpt(p, [("x", np.ones((2, 2), np.float16)), ("note", "hi")], crc_check=True)
    >>> with CkptFile(p, crc_check=True) as f:
    ...     print("x" in f, f.entry("x").dtype, f.read("note"))
    True Float16 hi
    """

    def __init__(self, path: PathLike, crc_check: bool = False) -> None:
        self.path = os.fspath(path)
        try:
            self._fd = os.open(self.path, os.O_RDONLY)
        except FileNotFoundError:
            raise FormatError(f"{self.path}: no such checkpoint file") from None
        except IsADirectoryError:
            raise FormatError(f"{self.path}: is a directory, not a checkpoint file") from None
        except OSError as exc:
            raise FormatError(f"{self.path}: cannot open checkpoint file: {exc.strerror}") from None
        try:
            st = os.fstat(self._fd)
            if stat.S_ISDIR(st.st_mode):
                raise FormatError(f"{self.path}: is a directory, not a checkpoint file")
            self._entries = self._index(st.st_size, crc_check)
        except BaseException:
            os.close(self._fd)
            self._fd = -1
            raise

    # ------------------------------------------------------------------------- indexing
    def _index(self, size: int, crc_check: bool) -> dict[str, CkptEntry]:
        if size == 0:
            raise FormatError(f"{self.path}: the checkpoint file is empty")
        end = size
        self.crc: int | None = None
        if size >= _CRC_TRAILER:
            tail = os.pread(self._fd, _CRC_TRAILER, size - _CRC_TRAILER)
            if tail[: len(CRC_MAGIC)] == CRC_MAGIC:
                end = size - _CRC_TRAILER
                self.crc = int.from_bytes(tail[len(CRC_MAGIC):], "big")
        if crc_check:
            self._verify_crc(end)
        win = _Window(self._fd, end)
        w = _Walker(self.path, win)
        entries: dict[str, CkptEntry] = {}
        group: list[_Rec] = []
        pos, index = 0, 0
        try:
            while pos < end:
                buf, i = win.at(pos, _HEADER)
                rec = _fast_record(buf, i, pos, end, index)
                if rec is None:  # anything unusual: the strict walker, with its precise errors
                    w.where = f"record #{index}"
                    _, pos = w.key(pos, end, {1: 2}, "Checkpoint")
                    n, pos = w.length(pos, end, "Checkpoint.Value")
                    rec = _parse_record(w, pos, pos + n, index)
                    pos += n
                else:
                    pos = rec.content[0] + rec.content[1]
                index += 1
                if group and group[-1].tag != rec.tag:
                    self._add(entries, _make_entry(self.path, group))
                    group = []
                group.append(rec)
        except EOFError as exc:  # the file shrank while being read
            raise FormatError(f"{self.path}: {w.where}: unexpected end of file at byte {exc}") from None
        if group:
            self._add(entries, _make_entry(self.path, group))
        if not entries:
            raise FormatError(f"{self.path}: the checkpoint file holds no records")
        return entries

    def _add(self, entries: dict[str, CkptEntry], e: CkptEntry) -> None:
        if e.name in entries:
            # MindSpore's loader keeps the later one (dict assignment); so do we, loudly.
            log.warning("%s: tag %r appears again at record #%d; the later value wins",
                        self.path, e.name, e.record)
            del entries[e.name]
        entries[e.name] = e

    def _verify_crc(self, end: int) -> None:
        if self.crc is None:
            raise FormatError(f"{self.path}: crc_check=True but the file has no CRC trailer "
                              f"({CRC_MAGIC!r} + 10 bytes)")
        crc, pos = 0, 0
        block = bytearray(min(_CRC_BLOCK, end) or 1)
        mv = memoryview(block)
        while pos < end:
            n = os.preadv(self._fd, [mv[: min(len(block), end - pos)]], pos)
            if n <= 0:
                raise FormatError(f"{self.path}: unexpected end of file at byte {pos} during CRC check")
            crc = zlib.crc32(mv[:n], crc)
            pos += n
        if crc != self.crc:
            raise FormatError(f"{self.path}: CRC mismatch: the trailer says {self.crc} but the "
                              f"records hash to {crc}; the file is damaged")

    # ------------------------------------------------------------------------------- API
    def __del__(self) -> None:  # pragma: no cover - best effort
        try:
            self.close()
        except Exception:
            pass

    def read(self, name: str) -> Union[np.ndarray, str]:
        """The whole tensor ``name`` (a ``str`` for string records; raw uint8 bytes for Int4)."""
        e = self.entry(name)
        buf = np.empty(e.nbytes, dtype=np.uint8)
        self._read_logical(e, 0, e.nbytes, memoryview(buf))
        if e.dtype is mstype.string:
            try:
                return buf.tobytes().decode("utf-32-le")
            except UnicodeDecodeError as exc:
                raise FormatError(f"{self.path}: record #{e.record} (tag {e.name!r}): string "
                                  f"content is not valid UTF-32-LE ({exc.reason})") from None
        if e.dtype is mstype.qint4x2:
            return buf
        return buf.view(e.dtype.np).reshape(e.shape)

    def read_rows(self, name: str, start: int, stop: int, out: np.ndarray | None = None) -> np.ndarray:
        """Rows ``[start, stop)`` along axis 0 of ``name`` (one contiguous read)."""
        e = self.entry(name)
        if not e.shape:
            raise ValueError(f"{self.path}: {name!r} is a scalar; it has no rows")
        return self.read_box(name, ((start, stop),) + tuple((0, n) for n in e.shape[1:]), out=out)

    def read_box(self, name: str, box: Box, out: np.ndarray | None = None) -> np.ndarray:
        """The block ``box`` (``((start, stop), ...)`` per dim) of tensor ``name``.

        Only the bytes of the block are read (plus file gaps under 16 KiB between its runs):
        long runs go straight into ``out`` by ``preadv`` iovecs, nearby runs sharing one call;
        short nearby runs are read together through a bounded staging buffer. ``out``,
        if given, must have the block's shape and the tensor's dtype; it may be a strided view
        (e.g. the block's place inside a larger destination array) with positive strides.
        """
        e = self.entry(name)
        if e.dtype in (mstype.string, mstype.qint4x2):
            raise ValueError(f"{self.path}: {name!r} is a {e.dtype.name} record; use read()")
        return self._read_box_entry(e, box, out)


# --------------------------------------------------------------------------------------- writer
def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _encode(name: str, value: Any) -> tuple[str, list[int], memoryview]:
    """``(tensor_type, dims, content bytes)`` of one value, following MindSpore's conversions."""
    if isinstance(value, RawValue):
        return value.dtype.name, [int(d) for d in value.shape], memoryview(value.data).cast("B")
    if isinstance(value, str):
        # MindSpore: dims [0], tensor_type "str", content np.array(s).tobytes() (UTF-32-LE).
        return mstype.string.name, [0], memoryview(np.array(value).tobytes())
    if isinstance(value, (np.ndarray, np.generic)):  # first: np.float64 is also a float
        arr = np.asarray(value)
    elif isinstance(value, bool):
        arr = np.asarray(value, dtype=np.bool_)
    elif isinstance(value, int):
        arr = np.asarray(value, dtype=np.int64)
    elif isinstance(value, float):
        arr = np.asarray(value, dtype=np.float32)
    else:
        raise TypeError(f"{name!r}: cannot write a {type(value).__name__} to a checkpoint "
                        f"(numpy array, int, float, bool, str or RawValue expected)")
    if arr.dtype.byteorder == ">":
        arr = arr.astype(arr.dtype.newbyteorder("<"))
    try:
        dt = mstype.from_numpy(arr.dtype)
    except TypeError as exc:
        raise TypeError(f"{name!r}: {exc}") from None
    shape = list(arr.shape)  # before ascontiguousarray, which turns 0-d into shape (1,)
    arr = np.ascontiguousarray(arr)
    return dt.name, shape, memoryview(arr.reshape(-1).view(np.uint8))


def _record_header(name: bytes, ttype: bytes, dims: list[int], piece_len: int) -> bytes:
    tensor_head = b"".join(b"\x08" + _varint(d) for d in dims) + b"\x12" + _varint(len(ttype)) \
        + ttype + b"\x1a" + _varint(piece_len)
    tensor_len = len(tensor_head) + piece_len
    value_head = b"\x0a" + _varint(len(name)) + name + b"\x12" + _varint(tensor_len)
    value_len = len(value_head) + tensor_len
    return b"\x0a" + _varint(value_len) + value_head + tensor_head


def write_ckpt(path: PathLike, items: Iterable[tuple[str, Any]], crc_check: bool = False,
               chunk_bytes: int = DEFAULT_CHUNK_BYTES) -> None:
    """Write ``(name, value)`` pairs as a MindSpore ``.ckpt``, atomically.

    Values: numpy arrays of any MindSpore dtype (bf16 as ``ml_dtypes.bfloat16``), ``int`` (Int64
    scalar), ``float`` (Float32 scalar), ``bool`` (Bool scalar), ``str`` (a ``str`` record) or
    :class:`RawValue`. Tensors above ``chunk_bytes`` are cut into raw-byte pieces, one record
    each, as MindSpore's default save path does; ``crc_check`` appends MindSpore's CRC trailer.
    Records stream to a temporary file in the same directory, which is fsynced and renamed over
    ``path``: ``path`` never holds a half-written file.

    >>> import os, tempfile, numpy as np
    >>> p = os.path.join(tempfile.mkdtemp(), "m.ckpt")
    >>> write_ckpt(p, [("lr", 0.01), ("flag", True)])
    >>> with CkptFile(p) as f: print([(n, f.entry(n).dtype.name) for n in f.names()])
    [('lr', 'Float32'), ('flag', 'Bool')]
    """
    if chunk_bytes <= 0:
        raise ValueError(f"chunk_bytes must be positive, got {chunk_bytes}")
    with atomic_output(path) as fh:
        crc = 0
        for name, value in items:
            ttype, dims, data = _encode(name, value)
            bname, btype = name.encode("utf-8"), ttype.encode("ascii")
            n = len(data)
            cuts = range(0, n, chunk_bytes) if n else [0]
            for a in cuts:
                piece = data[a: a + chunk_bytes]
                head = _record_header(bname, btype, dims, len(piece))
                fh.write(head)
                fh.write(piece)
                if crc_check:
                    crc = zlib.crc32(piece, zlib.crc32(head, crc))
        if crc_check:
            fh.write(CRC_MAGIC + crc.to_bytes(10, "big"))
