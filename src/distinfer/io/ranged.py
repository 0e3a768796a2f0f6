"""Ranged reads of a tensor stored as C-order bytes in a file: only the bytes of a block are read.

The ``.ckpt`` and safetensors readers index their files differently but both end with, per
tensor, the file byte ranges holding its C-order content (a :class:`CkptEntry`);
:class:`RangedReader` reads any block (box) of such a tensor with ``os.preadv`` straight into the
destination array, and :func:`read_cost` says, from the same run logic and thresholds, how many
bytes a block read costs, so the resharding engine's cost model and the reader cannot drift.

A box is read as *runs*: the longest byte ranges contiguous both in the file and in the output.
Runs closer than ``_GAP_COALESCE`` are read together and the gap discarded.

>>> import os, tempfile, numpy as np
>>> from distinfer.io import CkptFile, write_ckpt
>>> p = os.path.join(tempfile.mkdtemp(), "t.ckpt")
>>> write_ckpt(p, [("w", np.arange(4000, dtype=np.float32).reshape(4, 1000))])
>>> with CkptFile(p) as f:
...     print(f.read_box("w", ((0, 4), (0, 2))).tolist(), read_cost(f.entry("w").shape, ((0, 4), (0, 2)), 4))
[[0.0, 1.0], [1000.0, 1001.0], [2000.0, 2001.0], [3000.0, 3001.0]] 12008
"""
from __future__ import annotations

import bisect
import math
import os
import threading
from typing import Iterator, NamedTuple, Optional, Sequence

import numpy as np

from .. import dtype as mstype
from ..errors import FormatError

__all__ = ["Box", "CkptEntry", "RangedReader", "read_cost", "staging_limit"]

# Runs closer than this are read together and the gap discarded: reading ~16 KiB from the page
# cache costs about as much as one extra syscall.
_GAP_COALESCE = 16 * 1024
# Upper bound of the staging buffer used to coalesce small runs.
_STAGING_BYTES = 16 * 1024 * 1024
# Runs at least this long are read straight into the output, one iovec each; shorter runs with
# small gaps go through the staging buffer and one numpy copy. Measured (page cache, 2-core VM):
# the kernel spends ~0.3 us per iovec, so 2-8 KiB runs scatter at 4-7.5 GB/s but stage at 7-8;
# from 16 KiB on, scattering (9+ GB/s) wins.
_SCATTER_MIN = 16 * 1024
# Most iovecs one preadv takes (Linux UIO_MAXIOV).
_IOV_MAX = 1024
# read_cost estimates from the offsets of at most this many runs (a huge box repeats itself).
_COST_RUNS = 1 << 22

Box = Sequence[tuple[int, int]]


class CkptEntry(NamedTuple):
    """One tensor of a checkpoint: where its bytes are and what they mean.

    ``chunks`` are ``(file_offset, length)`` pairs of the ``tensor_content`` of each
    same-tag record in file order; their concatenation is the C-order little-endian data.
    ``record`` is the index of its first record in the file (for error messages).

    >>> import os, tempfile, numpy as np
    >>> from distinfer.io import CkptFile, write_ckpt
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


class RangedReader:
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
    _entries: dict[str, CkptEntry]

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

    def entry(self, name: str) -> CkptEntry:
        """Index entry of ``name`` (KeyError naming the file if absent)."""
        try:
            return self._entries[name]
        except KeyError:
            raise KeyError(f"{self.path}: no tensor named {name!r}") from None

    def entries(self) -> list[CkptEntry]:
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
        sstr = _strides(shape, item)
        ext = [b - a for a, b in box]
        # A run is contiguous both in the file (dims ks.. are whole there, so a run spans dims
        # ks..) and in ``out`` (C-contiguous strides over dims kd..): it spans dims max(ks, kd)..
        ks = _file_run_dim(shape, box)
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
        src = _run_offsets(box, sstr, k)
        dst = _run_offsets(tuple((0, b - a) for a, b in box), out.strides, k)
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



# ---------------------------------------------------------------------------- run logic and cost
def _strides(shape: Sequence[int], itemsize: int) -> tuple[int, ...]:
    """C-order byte strides of a tensor of ``shape`` in its file."""
    return tuple(itemsize * math.prod(shape[d + 1:]) for d in range(len(shape)))


def _file_run_dim(shape: Sequence[int], box: Box) -> int:
    """The dim from which ``box`` is contiguous in the file: every dim after it is whole."""
    k = len(shape) - 1
    while k > 0 and tuple(box[k]) == (0, shape[k]):
        k -= 1
    return k


def _run_offsets(box: Box, strides: Sequence[int], k: int, limit: Optional[int] = None) -> np.ndarray:
    """Byte offsets of the runs of ``box`` (one per index of dims ``0..k-1``, row-major) under
    ``strides``; with ``limit``, outer dims are no longer expanded once there are more runs."""
    off = np.array([sum(a * s for (a, _), s in zip(box, strides))], dtype=np.int64)
    for d in range(k - 1, -1, -1):
        idx = np.arange(box[d][1] - box[d][0], dtype=np.int64)[:, None]
        off = (idx * strides[d] + off[None, :]).reshape(-1)
        if limit is not None and len(off) > limit:
            break
    return off


def staging_limit() -> int:
    """The most bytes a reading thread's staging buffer holds (for memory estimates)."""
    return _STAGING_BYTES


def read_cost(file_shape: Sequence[int], box: Box, itemsize: int) -> int:
    """Bytes :class:`RangedReader` reads for ``box`` of a tensor of ``file_shape``: the block's
    own bytes plus the file gaps under ``_GAP_COALESCE`` between its runs, which it reads and drops.

    >>> read_cost((4, 1000), ((0, 4), (0, 10)), 4)   # 4 runs of 40 B, 3960 B gaps coalesced
    12040
    """
    shape = tuple(int(n) for n in file_shape)
    box = tuple((int(a), int(b)) for a, b in box)
    need = math.prod(b - a for a, b in box) * itemsize
    if not shape or not need:
        return need
    strides = _strides(shape, itemsize)
    k = _file_run_dim(shape, box)
    outer = math.prod(b - a for a, b in box[:k])
    if outer <= 1:
        return need
    run = (box[k][1] - box[k][0]) * strides[k]
    starts = _run_offsets(box, strides, k, _COST_RUNS)
    # The gap after a run depends only on which outer dim advanced, so a huge box is estimated
    # from its first _COST_RUNS runs.
    gaps = np.diff(starts) - run
    extra = int(gaps[gaps < _GAP_COALESCE].sum())
    return need + int(extra * (outer / len(starts)))
