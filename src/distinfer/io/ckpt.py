"""MindSpore ``.ckpt`` files: an index-only reader with ranged reads, and a streaming writer.

A ``.ckpt`` is a concatenation of one-``Value`` ``Checkpoint`` protobuf messages (spec §1).
:class:`CkptFile` walks the protobuf wire format record by record and keeps, per tensor, only
its dtype, shape and the file offsets of its ``tensor_content`` pieces: no tensor byte is read
until asked for, and :meth:`CkptFile.read_box` reads only the bytes of the requested block
(``os.preadv`` into the output array, never ``mmap``), so a process's memory stays at the
output size plus a bounded staging buffer.

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

import bisect
import logging
import math
import os
import stat
import threading
import zlib
from dataclasses import dataclass
from typing import Any, Iterable, Iterator, NamedTuple, Optional, Sequence, Union

import numpy as np

from .. import dtype as mstype
from ..errors import FormatError
from ._atomic import atomic_output

__all__ = ["CkptEntry", "CkptFile", "RawValue", "write_ckpt", "CRC_MAGIC", "DEFAULT_CHUNK_BYTES"]

log = logging.getLogger(__name__)

CRC_MAGIC = b"crc_num"
_CRC_TRAILER = len(CRC_MAGIC) + 10
DEFAULT_CHUNK_BYTES = 512 * 1024 * 1024  # MindSpore: 1024 * SLICE_SIZE, SLICE_SIZE = 512 KiB

# Runs closer than this are read together and the gap discarded: reading ~16 KiB from the page
# cache costs about as much as one extra syscall.
_GAP_COALESCE = 16 * 1024
# Upper bound of the scratch buffer used to coalesce small runs.
_STAGING_BYTES = 16 * 1024 * 1024
# Runs at least this long are read straight into the output, one iovec each; shorter runs with
# small gaps go through the staging buffer and one numpy copy. Measured (page cache, 2-core VM):
# the kernel spends ~0.3 us per iovec, so 2-8 KiB runs scatter at 4-7.5 GB/s but stage at 7-8;
# from 16 KiB on, scattering (9+ GB/s) wins.
_SCATTER_MIN = 16 * 1024
# Most iovecs one preadv takes (Linux UIO_MAXIOV).
_IOV_MAX = 1024
# Size of the header window the indexer reads at a time (tensor bytes are skipped, never read).
_WINDOW = 16 * 1024

PathLike = Union[str, os.PathLike]
Box = Sequence[tuple[int, int]]


class CkptEntry(NamedTuple):
    """One tensor of a checkpoint: where its bytes are and what they mean.

    ``chunks`` are ``(file_offset, length)`` pairs of the ``tensor_content`` of each
    same-tag record in file order; their concatenation is the C-order little-endian data.
    ``record`` is the index of its first record in the file (for error messages).

    >>> import os, tempfile, numpy as np
    >>> p = os.path.join(tempfile.mkdtemp(), "a.ckpt")
    >>> write_ckpt(p, [("x", np.zeros((4, 4), np.float32))], chunk_bytes=32)  # 64 bytes: two records
    >>> with CkptFile(p) as f:
    ...     e = f.entry("x")
    >>> e.name, e.dtype, e.shape, e.nbytes, [length for _, length in e.chunks], e.record
    ('x', Float32, (4, 4), 64, [32, 32], 0)
    """

    name: str
    dtype: mstype.Type
    shape: tuple[int, ...]
    chunks: tuple[tuple[int, int], ...]
    nbytes: int
    record: int


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


class _RangedReader:
    """Reads of byte ranges and boxes of a tensor whose C-order bytes lie in ``entry.chunks``.

    Subclasses set ``self.path`` and ``self._fd``.

    A box is read as *runs*: the longest byte ranges that are contiguous both in the file and
    in the output array. Runs of at least ``_SCATTER_MIN`` bytes, and runs too far apart to
    share a read, go straight into the output by ``preadv`` iovecs (nearby ones sharing one
    call, the gap bytes dropped into a scratch buffer). Shorter nearby runs are read together:
    the box's file span goes into a bounded staging buffer and out with one strided numpy
    assignment (the box is cut along its outer dims where the span outgrows the buffer).
    """

    path: str
    _fd: int
    _entries: dict[str, "CkptEntry"]

    # --- the index as a read-only mapping of names (shared by the .ckpt and safetensors readers)
    def __enter__(self):
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Release the file descriptor (idempotent)."""
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def names(self) -> list[str]:
        """Tensor names in index order."""
        return list(self._entries)

    def entry(self, name: str) -> "CkptEntry":
        """Index entry of ``name`` (KeyError naming the file if absent)."""
        try:
            return self._entries[name]
        except KeyError:
            raise KeyError(f"{self.path}: no tensor named {name!r}") from None

    def entries(self) -> list["CkptEntry"]:
        return list(self._entries.values())

    def _read_box_entry(self, e: CkptEntry, box: Box, out: np.ndarray | None) -> np.ndarray:
        box = tuple((int(a), int(b)) for a, b in box)
        if len(box) != len(e.shape) or any(not 0 <= a <= b <= n for (a, b), n in zip(box, e.shape)):
            raise ValueError(f"{self.path}: box {box} does not fit tensor {e.name!r} of shape {e.shape}")
        shape = tuple(b - a for a, b in box)
        if out is None:
            out = np.empty(shape, dtype=e.dtype.np)
        elif out.shape != shape or out.dtype != e.dtype.np or not out.flags.writeable or out.size and any(
                s <= 0 or s % out.itemsize for s, n in zip(out.strides, out.shape) if n > 1):
            raise ValueError(f"out must be a writeable {e.dtype.np} array (or a view with positive strides) of "
                             f"shape {shape}, got {out.dtype} {out.shape} strides {out.strides}")
        if out.size:
            self._read_region(e, box, out)
        return out

    def _read_logical(self, e: CkptEntry, start: int, stop: int, mv: memoryview) -> None:
        """Bytes ``[start, stop)`` of the tensor's concatenated content into ``mv``."""
        self._read_iov(e, start, [mv[: stop - start]])

    def _chunk_starts(self, e: CkptEntry) -> list[int]:
        cache = self.__dict__.setdefault("_starts", {})
        if e.name not in cache:
            cache[e.name] = [0, *np.cumsum([n for _, n in e.chunks[:-1]]).tolist()]
        return cache[e.name]

    def _read_iov(self, e: CkptEntry, start: int, iov: list[memoryview]) -> None:
        """Logical bytes from ``start`` on, as many as ``iov`` holds, scattered into ``iov``."""
        if len(e.chunks) == 1:
            self._preadv(e, e.chunks[0][0] + start, iov)
            return
        starts = self._chunk_starts(e)
        i = bisect.bisect_right(starts, start) - 1
        while iov:  # MindSpore cuts records anywhere: split the iovecs at chunk boundaries
            off, n = e.chunks[i]
            head, iov = _split_iov(iov, starts[i] + n - start)
            if head:
                self._preadv(e, off + start - starts[i], head)
                start += sum(map(len, head))
            i += 1

    def _preadv(self, e: CkptEntry, off: int, iov: list[memoryview]) -> None:
        while iov:
            batch, rest = iov[:_IOV_MAX], iov[_IOV_MAX:]
            want = sum(map(len, batch))
            got = os.preadv(self._fd, batch, off)
            if got <= 0 and want:
                raise FormatError(f"{self.path}: tensor {e.name!r}: file ends at "
                                  f"byte {off}, inside the tensor's content (truncated after it was "
                                  f"indexed?)")
            off += got
            iov = rest if got == want else _split_iov(batch, got)[1] + rest

    def _read_region(self, e: CkptEntry, box: tuple[tuple[int, int], ...], out: np.ndarray) -> None:
        shape, item = e.shape, e.dtype.itemsize
        nd = len(shape)
        if nd == 0:
            self._read_logical(e, 0, e.nbytes, memoryview(out.reshape(-1).view(np.uint8)))
            return
        # Copies below move raw bytes whatever the element type (bf16, bool, complex...).
        out = out.view(_RAW.get(item, f"V{item}"))
        sstr = tuple(item * math.prod(shape[d + 1:]) for d in range(nd))
        ext = [b - a for a, b in box]
        # A run is contiguous both in the file (dims ks.. are whole there, so a run spans dims
        # ks..) and in ``out`` (C-contiguous strides over dims kd..): it spans dims max(ks, kd)..
        ks = nd - 1
        while ks > 0 and box[ks] == (0, shape[ks]):
            ks -= 1
        kd, expect = nd, item
        for d in range(nd - 1, -1, -1):
            if ext[d] != 1 and out.strides[d] != expect:
                break
            kd, expect = d, expect * ext[d]
        k = max(ks, kd)
        run = item * math.prod(ext[k:])
        # Long runs, or short ones too far apart to share a read: one iovec per run. Otherwise
        # nearby short runs are read together and copied out of the staging buffer.
        if k and math.prod(ext[:k]) > 1 and (run >= _SCATTER_MIN or sstr[k - 1] - run >= _GAP_COALESCE):
            self._read_scatter(e, box, out, sstr, k, run)
        else:
            self._read_staged(e, box, out, sstr, 0)

    def _read_staged(self, e: CkptEntry, box: Box, out: np.ndarray, sstr: tuple[int, ...], d: int) -> None:
        """``box`` (dims before ``d`` of extent 1) into ``out``: straight in when it is one run in
        both the file and ``out``; otherwise its file span is read into the staging buffer and
        copied with one strided numpy assignment, the box being cut along its outer dims where
        the span outgrows the buffer or the file gap between two indices reaches ``_GAP_COALESCE``.
        """
        ext = [b - a for a, b in box]
        lo = sum(a * s for (a, _), s in zip(box, sstr))
        span = sum((n - 1) * s for n, s in zip(ext, sstr)) + out.itemsize
        if span == out.nbytes and out.flags.c_contiguous:  # one run: no staging
            self._read_iov(e, lo, [memoryview(out.reshape(-1).view(np.uint8))])
            return
        j = next(i for i in range(d, len(ext)) if ext[i] > 1)  # exists: span > one element
        one = span - (ext[j] - 1) * sstr[j]  # span of one index of dim j
        # Gaps only shrink towards inner dims, so a gap below the limit here is below it inside too.
        if sstr[j] - one < _GAP_COALESCE and span <= _STAGING_BYTES:
            buf = _buffers().staging(span)
            self._read_iov(e, lo, [memoryview(buf)])
            out[...] = np.ndarray(ext, out.dtype, buf, 0, sstr)
            return
        step = 1
        if sstr[j] - one < _GAP_COALESCE and one <= _STAGING_BYTES:
            step = 1 + (_STAGING_BYTES - one) // sstr[j]
        a, b = box[j]
        lead = (slice(None),) * j
        for s in range(a, b, step):
            t = min(s + step, b)
            self._read_staged(e, box[:j] + ((s, t),) + box[j + 1:], out[lead + (slice(s - a, t - a),)], sstr,
                              j if t - s > 1 else j + 1)

    def _read_scatter(self, e: CkptEntry, box: Box, out: np.ndarray, sstr: tuple[int, ...], k: int,
                      run: int) -> None:
        """Runs of ``run`` bytes (dims k.. of the box) straight into ``out``, one iovec each; file
        gaps below ``_GAP_COALESCE`` between them are read into a scratch buffer and dropped."""
        # File (logical) and output byte offsets of every run, row-major over dims 0..k-1.
        src = np.array([sum(a * s for (a, _), s in zip(box, sstr))], dtype=np.int64)
        dst = np.zeros(1, dtype=np.int64)
        for d in range(k - 1, -1, -1):
            idx = np.arange(box[d][1] - box[d][0], dtype=np.int64)[:, None]
            src = (idx * sstr[d] + src[None, :]).reshape(-1)
            dst = (idx * out.strides[d] + dst[None, :]).reshape(-1)
        item = out.itemsize
        span = item + sum((n - 1) * s for n, s in zip(out.shape, out.strides))
        flat = out if out.flags.c_contiguous else np.lib.stride_tricks.as_strided(
            out, shape=(span // item,), strides=(item,))
        u8 = flat.reshape(-1).view(np.uint8)
        # Merge runs adjacent in both the file and the output into segments.
        brk = np.flatnonzero((np.diff(src) != run) | (np.diff(dst) != run)) + 1
        first = np.r_[0, brk]
        seg_src, seg_dst = src[first], dst[first]
        seg_len = np.diff(np.r_[first, len(src)]) * run
        gap = seg_src[1:] - seg_src[:-1] - seg_len[:-1]
        cut = np.r_[0, np.flatnonzero(gap >= _GAP_COALESCE) + 1, len(seg_src)].tolist()
        mv = memoryview(u8)
        scratch = _buffers().gap(int(gap[gap < _GAP_COALESCE].max(initial=0)))
        s_l, d_l, n_l, g_l = seg_src.tolist(), seg_dst.tolist(), seg_len.tolist(), gap.tolist()
        for g0, g1 in zip(cut[:-1], cut[1:]):
            iov = []
            for i in range(g0, g1):  # one iovec per segment (and per gap): a per-run loop
                d = d_l[i]
                iov.append(mv[d: d + n_l[i]])
                if i + 1 < g1 and g_l[i]:
                    iov.append(scratch[: g_l[i]])
            self._read_iov(e, s_l[g0], iov)


# Unsigned integer types by item size: raw-byte copies for any element type.
_RAW = {1: np.dtype(np.uint8), 2: np.dtype(np.uint16), 4: np.dtype(np.uint32), 8: np.dtype(np.uint64)}


def _split_iov(iov: list[memoryview], n: int) -> tuple[list[memoryview], list[memoryview]]:
    """The first ``n`` bytes of ``iov`` and the rest (slicing the iovec that straddles ``n``)."""
    head: list[memoryview] = []
    for j, b in enumerate(iov):
        if n <= 0:
            return head, iov[j:]
        if len(b) > n:
            return head + [b[:n]], [b[n:]] + iov[j + 1:]
        head.append(b)
        n -= len(b)
    return head, []


class _Buffers(threading.local):
    """Per-thread reusable read buffers (no allocation per call; pages are touched only when used)."""

    def __init__(self) -> None:
        self._staging = np.empty(0, np.uint8)
        self._gap = memoryview(bytearray(0))

    def staging(self, n: int) -> np.ndarray:
        if len(self._staging) < n:
            self._staging = np.empty(n, np.uint8)
        return self._staging[:n]

    def gap(self, n: int) -> memoryview:
        if len(self._gap) < n:
            self._gap = memoryview(bytearray(max(n, _GAP_COALESCE)))
        return self._gap


_BUFFERS = _Buffers()


def _buffers() -> _Buffers:
    return _BUFFERS


class CkptFile(_RangedReader):
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
        block = bytearray(min(_STAGING_BYTES, end) or 1)
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
