"""Checkpoint resharding engine: per-rank checkpoint files in one layout -> blocks of another.

The source is a set of per-rank files (``.ckpt`` or ``.safetensors``) written under a training
strategy; the destination is, per parameter, a :class:`~distinfer.layout.Layout` (or the full
tensor). Every destination block is built by :func:`distinfer.plan.assemble` from a plan of
:class:`~distinfer.plan.Piece` s, and each piece is read straight from one source file with a
ranged read (:meth:`CkptFile.read_box`) straight into its place in the destination block (a
strided view when the piece is not contiguous there): only the bytes of the block are read, no
full tensor is ever built unless the destination *is* the full tensor, no piece is copied after
it is read, and a process holds its destination block plus a bounded staging buffer (pieces that
do not land contiguously in the destination are read in chunks of at most ``PIECE_BYTES``).

Which replica is read. Among the source ranks holding a piece, the one whose device-matrix
coordinates agree most with the destination rank's own coordinates (``dst_rank % source stage
devices``) is chosen, lowest rank on ties. This is the rank MindSpore's ``TensorTransform``
takes (its redistribution keeps each device's own slice and all-concats along split axes), so
:func:`rank_list` reproduces ``rank_list_for_transform``, and it spreads reads over the replicas
deterministically: destination ranks with different coordinates read different files.

Optimizer-sharded sources are ordinary layouts (``opt_shard_size``) and pipeline sources are
merged strategies whose names are ``"<stage>-<name>"`` (stage ``s`` = global ranks ``s*n ..
s*n+n-1``): the same code handles both.

>>> import os, tempfile, numpy as np
>>> from distinfer.io import write_ckpt
>>> from distinfer.io.strategy_file import ParamLayout
>>> d = tempfile.mkdtemp(); full = np.arange(32, dtype=np.float32).reshape(4, 8)
>>> src = Layout((2,), (-1, 0), (4, 8))                       # columns split over 2 ranks
>>> files = {}
>>> for r in range(2):
...     files[r] = os.path.join(d, f"r{r}.ckpt"); write_ckpt(files[r], [("w", src.slice(full, r))])
>>> sc = SourceCheckpoint(TrainStrategy({"w": ParamLayout([2], [-1, 0])}), files)
>>> dst = Layout((2,), (0, -1), (4, 8))                       # rows split over 2 ranks
>>> bool((sc.read_block("w", dst, 1) == full[2:4]).all())
True
"""
from __future__ import annotations

import logging
import math
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Callable, Iterable, Iterator, Mapping, Optional, Sequence, Union

import numpy as np

from ..errors import FormatError, LayoutError, StrategyError
from ..io.ckpt import CkptFile
from ..io.safetensors_io import SafetensorsFile
from ..io.strategy_file import ParamLayout, read_strategy, split_stage_name
from ..layout import Layout, replicated
from ..plan import NearestCoords, Piece, Plan, assemble, local_index, make_plan

__all__ = ["PIECE_BYTES", "TrainStrategy", "SourceCheckpoint", "open_checkpoint",
           "source_plan", "rank_list", "ReadStats", "read_cost", "infer_full_shape"]

log = logging.getLogger(__name__)

PathLike = Union[str, os.PathLike]
Box = tuple[tuple[int, int], ...]
Reader = Union[CkptFile, SafetensorsFile]

#: Largest piece read through a temporary buffer (pieces that land contiguously in the
#: destination block are read in place whatever their size).
PIECE_BYTES = 16 * 1024 * 1024
#: Largest block read ahead (while the previous one is written) by ``iter_blocks(reuse=True)``.
PREFETCH_BYTES = 64 * 1024 * 1024
# Coalescing threshold of the ranged reader (io.ckpt._GAP_COALESCE), for cost estimates.
_GAP_COALESCE = 16 * 1024


def open_checkpoint(path: PathLike) -> Reader:
    """Open a checkpoint for ranged reads: safetensors iff the name ends with ``.safetensors``.

    >>> import os, tempfile, numpy as np
    >>> from distinfer.io import write_ckpt
    >>> p = os.path.join(tempfile.mkdtemp(), "a.ckpt"); write_ckpt(p, [("x", np.ones(3))])
    >>> type(open_checkpoint(p)).__name__
    'CkptFile'
    """
    path = os.fspath(path)
    return SafetensorsFile(path) if path.endswith(".safetensors") else CkptFile(path)


def infer_full_shape(pl: ParamLayout, local_shape: Sequence[int]) -> tuple[int, ...]:
    """Full shape of a tensor whose per-rank block is ``local_shape`` under ``pl``.

    >>> infer_full_shape(ParamLayout([2, 2, 2], [-1, 1]), (784, 256))
    (784, 512)
    >>> infer_full_shape(ParamLayout([4], [-1, -1], opt_weight_shard_step=1, opt_weight_shard_size=-1), (128, 512))
    (512, 512)
    """
    return Layout.from_local_shape(pl.dev_matrix, pl.tensor_map, local_shape, pl.opt_weight_shard_size).shape


@dataclass(frozen=True)
class _Param:
    name: str
    stage: int
    layout: ParamLayout


class TrainStrategy:
    """A training (source) or destination strategy: layouts by plain name, with pipeline stages.

    ``layouts`` maps names as a strategy file records them (``"<stage>-<name>"`` in merged
    pipeline files) to :class:`ParamLayout`. ``stage_devices`` is ``prod(dev_matrix)`` (one
    pipeline stage, as MindSpore counts), ``num_stages`` the number of pipeline stages.

    >>> s = TrainStrategy({"0-a": ParamLayout([4], [-1]), "1-b": ParamLayout([4], [0])})
    >>> s.stage_devices, s.num_stages, s.device_num, s.stage_of("b")
    (4, 2, 8, 1)
    """

    def __init__(self, layouts: Mapping[str, ParamLayout], path: Optional[str] = None) -> None:
        self.path = path
        self.params: dict[str, _Param] = {}
        self.is_pipeline = False
        for raw, pl in layouts.items():
            stage, name = split_stage_name(raw)
            if stage is not None:
                self.is_pipeline = True
            if name in self.params:
                raise StrategyError(f"{self._where()}: parameter {name!r} appears in more than one pipeline stage")
            self.params[name] = _Param(name, stage or 0, pl)
        counts = {n: math.prod(p.layout.dev_matrix) for n, p in self.params.items()}
        self.stage_devices = next(iter(counts.values()), 1)
        bad = {n: c for n, c in counts.items() if c != self.stage_devices}
        if bad:
            first = next(iter(counts))
            raise StrategyError(
                f"{self._where()}: the device matrices do not describe one device count per stage: "
                f"{first!r} has {self.stage_devices} devices but "
                + ", ".join(f"{n!r} has {c}" for n, c in list(bad.items())[:4]))
        self.num_stages = 1 + max((p.stage for p in self.params.values()), default=0)

    @classmethod
    def from_file(cls, path: PathLike) -> "TrainStrategy":
        """Read a strategy file (protobuf, or JSON iff ``.json``)."""
        path = os.fspath(path)
        return cls(read_strategy(path).layouts, path)

    def _where(self) -> str:
        return self.path or "strategy"

    @property
    def device_num(self) -> int:
        """All devices: stage devices times pipeline stages."""
        return self.stage_devices * self.num_stages

    def __contains__(self, name: object) -> bool:
        return name in self.params

    def __len__(self) -> int:
        return len(self.params)

    def names(self) -> list[str]:
        return list(self.params)

    def stage_of(self, name: str) -> int:
        return self.params[name].stage

    def param_layout(self, name: str) -> ParamLayout:
        return self.params[name].layout

    def layout(self, name: str, shape: Sequence[int]) -> Layout:
        """``name``'s Layout for a tensor of full ``shape`` (LayoutError naming everything)."""
        pl = self.params[name].layout
        try:
            return pl.to_layout(tuple(shape))
        except LayoutError as exc:
            raise LayoutError(f"{self._where()}: parameter {name!r} of shape {tuple(shape)} cannot take "
                              f"dev_matrix {pl.dev_matrix}, tensor_map {pl.tensor_map}: {exc}") from None


# ------------------------------------------------------------------------------ planning
def _split_box(box: Box, itemsize: int, limit: int) -> list[Box]:
    """Cut ``box`` along its outer dims into boxes of at most ``limit`` bytes (where possible)."""
    ext = [b - a for a, b in box]
    if not box or math.prod(ext) * itemsize <= limit:
        return [box]
    for d in range(len(box)):
        inner = math.prod(ext[d + 1:]) * itemsize
        if ext[d] > 1 and inner <= limit:
            step = max(limit // max(inner, 1), 1)
            a, b = box[d]
            return [box[:d] + ((s, min(s + step, b)),) + box[d + 1:] for s in range(a, b, step)]
        if ext[d] > 1:  # one index of this dim is still too big: recurse per index
            out: list[Box] = []
            a, b = box[d]
            for s in range(a, b):
                out.extend(_split_box(box[:d] + ((s, s + 1),) + box[d + 1:], itemsize, limit))
            return out
    return [box]


def _is_contiguous_region(box: Box, origin: Box) -> bool:
    """True when ``box`` is one C-contiguous run inside the block spanning ``origin``."""
    ext = [b - a for a, b in box]
    full = [b - a for a, b in origin]
    j = next((i for i, e in enumerate(ext) if e > 1), None)
    return j is None or all(ext[i] == full[i] for i in range(j + 1, len(ext)))


@lru_cache(maxsize=4096)
def source_plan(src: Layout, dst: Layout, dst_rank: int, hint: Optional[int] = None,
                available: Optional[frozenset[int]] = None, itemsize: int = 1,
                piece_bytes: Optional[int] = PIECE_BYTES) -> Plan:
    """Plan of ``dst_rank``'s block from ``src`` blocks, with MindSpore's replica choice.

    ``hint`` (default ``dst_rank``) is the destination's rank in the source's terms; holders of
    a block are ranked by coordinate agreement with it. ``available`` restricts the source
    ranks (LayoutError naming the missing ranks if a piece has no available holder). Pieces
    that would not land contiguously are cut into chunks of at most ``piece_bytes``.

    >>> p = source_plan(Layout((2, 2, 2), (-1, 1), (784, 512)), Layout((4,), (0, -1), (784, 512)), 1)
    >>> sorted({x.src for x in p.pieces})
    [1, 3]
    """
    base = make_plan(src, dst, NearestCoords(hint, available), (dst_rank,))
    if piece_bytes is None:
        return base
    origin = dst.box(dst_rank)
    pieces: list[Piece] = []
    for p in base.pieces:
        if _is_contiguous_region(p.box, origin):
            pieces.append(p)
        else:
            pieces.extend(Piece(p.src, dst_rank, b) for b in _split_box(p.box, itemsize, piece_bytes))
    return Plan(src, dst, tuple(pieces))


def read_cost(file_shape: Sequence[int], box: Box, itemsize: int) -> int:
    """Bytes the ranged reader reads for ``box`` of a tensor of ``file_shape`` (gaps it coalesces included).

    >>> read_cost((4, 1000), ((0, 4), (0, 10)), 4)   # 4 runs of 40 B, 3960 B gaps coalesced
    12040
    """
    shape = tuple(int(n) for n in file_shape)
    nd = len(shape)
    need = math.prod(b - a for a, b in box) * itemsize
    if nd == 0 or need == 0:
        return need
    k = nd - 1
    while k > 0 and tuple(box[k]) == (0, shape[k]):
        k -= 1
    outer = math.prod(b - a for a, b in box[:k])
    if outer <= 1:
        return need
    stride = [itemsize * math.prod(shape[d + 1:]) for d in range(nd)]
    run = (box[k][1] - box[k][0]) * stride[k]
    # The gap after a run depends only on which outer dim advanced; gaps between consecutive
    # runs are (the stride of the innermost advancing dim) - (the advance of the ones below).
    gaps = np.zeros(0, dtype=np.int64)
    starts = np.array([box[k][0] * stride[k]], dtype=np.int64)
    for d in range(k - 1, -1, -1):
        starts = (np.arange(box[d][0], box[d][1], dtype=np.int64)[:, None] * stride[d] + starts[None, :]).reshape(-1)
        if len(starts) > 1 << 22:  # huge: estimate from the first 4M runs
            break
    gaps = np.diff(starts) - run
    extra = int(gaps[gaps < _GAP_COALESCE].sum())
    scale = outer / len(starts)
    return need + int(extra * scale)


# ------------------------------------------------------------------------------ sources
@dataclass
class ReadStats:
    """What a reshard read: bytes per source file and the files touched.

    >>> stats = ReadStats()
    >>> stats.add("rank0.ckpt", 16); stats.add("rank1.ckpt", 8); stats.add("rank0.ckpt", 8)
    >>> stats.bytes_read, stats.per_file
    (32, {'rank0.ckpt': 24, 'rank1.ckpt': 8})
    """

    bytes_read: int = 0
    per_file: dict[str, int] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def add(self, path: str, n: int) -> None:
        with self._lock:  # blocks may be read by several threads (read_blocks)
            self.bytes_read += n
            self.per_file[path] = self.per_file.get(path, 0) + n


class SourceCheckpoint:
    """Per-rank source files under a training strategy, read by ranged reads.

    ``files`` maps source ranks to paths: global ranks (``stage * stage_devices + local``) by
    default, or, with ``stage_local=True``, the local ranks of one pipeline stage (the files of
    whichever stage they hold, as ``load_distributed_checkpoint`` takes them). ``strategy=None``
    means one full (unsharded) checkpoint, ``files = {0: path}``. Files are opened (indexed,
    no tensor bytes read) on first use and kept open.

    >>> import os, tempfile, numpy as np
    >>> from distinfer.io import write_ckpt
    >>> p = os.path.join(tempfile.mkdtemp(), "full.ckpt"); write_ckpt(p, [("w", np.arange(6.0).reshape(2, 3))])
    >>> with SourceCheckpoint(None, {0: p}) as sc:  # no strategy: one unsharded file
    ...     rows = Layout((2,), (0, -1), (2, 3))  # the destination: rows split over 2 ranks
    ...     print(sc.names(), sc.read_block("w", rows, 1).tolist(), sc.stats.bytes_read)
    ['w'] [[3.0, 4.0, 5.0]] 24
    """

    def __init__(self, strategy: Optional[TrainStrategy], files: Mapping[int, PathLike],
                 stage_local: bool = False) -> None:
        self.strategy = strategy
        self.files = {int(r): os.fspath(p) for r, p in files.items()}
        self.stage_local = stage_local
        self._readers: dict[int, Reader] = {}
        self._layouts: dict[str, Optional[Layout]] = {}
        self.stats = ReadStats()
        self.piece_bytes = PIECE_BYTES
        self._plans: dict[tuple, Plan] = {}

    # ------------------------------------------------------------------------- files
    @property
    def stage_devices(self) -> int:
        return self.strategy.stage_devices if self.strategy is not None else 1

    def reader(self, rank: int) -> Reader:
        """The opened file of source rank ``rank`` (FormatError naming the file if unreadable)."""
        if rank not in self._readers:
            if rank not in self.files:
                raise FormatError(f"no checkpoint file was given for source rank {rank}")
            self._readers[rank] = open_checkpoint(self.files[rank])
        return self._readers[rank]

    def open_all(self) -> None:
        """Index every file now (so that bad files fail before anything is written)."""
        for r in sorted(self.files):
            self.reader(r)

    def close(self) -> None:
        for rd in self._readers.values():
            rd.close()
        self._readers.clear()

    def __enter__(self) -> "SourceCheckpoint":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _stage_ranks(self, name: str) -> dict[int, int]:
        """``{local rank: file key}`` of the files that should hold ``name``."""
        if self.strategy is None:
            return {0: min(self.files)} if self.files else {}
        n = self.strategy.stage_devices
        off = 0 if self.stage_local else self.strategy.stage_of(name) * n
        return {loc: off + loc for loc in range(n) if off + loc in self.files}

    def available_local(self, name: str) -> frozenset[int]:
        return frozenset(self._stage_ranks(name))

    def file_rank(self, name: str, local: int) -> int:
        """Key in ``files`` of the file holding local rank ``local``'s block of ``name``."""
        if self.strategy is None:
            return min(self.files)
        return local + (0 if self.stage_local else self.strategy.stage_of(name) * self.strategy.stage_devices)

    # --------------------------------------------------------------------- layouts
    def names(self) -> list[str]:
        """Strategy parameters present in the files, in strategy order (file order if no strategy)."""
        if self.strategy is None:
            return self.reader(min(self.files)).names() if self.files else []
        return [n for n in self.strategy.names() if self.layout(n) is not None]

    def layout(self, name: str) -> Optional[Layout]:
        """The source Layout of ``name`` (full shape inferred from the files), None if absent.

        Checks that every given file of ``name``'s stage holds it with the same dtype and the
        block shape the strategy implies; FormatError naming the files and shapes otherwise.
        """
        if name in self._layouts:
            return self._layouts[name]
        ranks = self._stage_ranks(name)
        found: dict[int, tuple] = {}
        for loc, key in ranks.items():
            rd = self.reader(key)
            if name in rd:
                e = rd.entry(name)
                found[loc] = (e.shape, e.dtype)
        if not found:
            self._layouts[name] = None
            return None
        if len(found) != len(ranks):
            missing = [self.files[ranks[loc]] for loc in ranks if loc not in found]
            have = self.files[ranks[next(iter(found))]]
            raise FormatError(f"parameter {name!r} is in {have} but missing from {', '.join(missing[:4])}"
                              + (f" and {len(missing) - 4} more" if len(missing) > 4 else ""))
        shapes = {v for v in found.values()}
        if len(shapes) > 1:
            desc = ", ".join(f"{self.files[ranks[loc]]}: {s} {t}" for loc, (s, t) in list(found.items())[:6])
            raise FormatError(f"parameter {name!r} has different block shapes or dtypes in the rank files: {desc}")
        shape, dt = shapes.pop()
        if dt.np is None:
            raise FormatError(f"parameter {name!r} in {self.files[ranks[next(iter(found))]]} is a {dt} record, "
                              f"which cannot be resharded")
        if self.strategy is None:
            lay = replicated(shape, 1)
        else:
            pl = self.strategy.param_layout(name)
            example = self.files[ranks[next(iter(found))]]
            try:
                full = infer_full_shape(pl, shape)
                lay = pl.to_layout(full)
            except LayoutError as exc:
                raise FormatError(f"parameter {name!r}: block shape {shape} in {example} does not fit the "
                                  f"strategy {self.strategy._where()} (dev_matrix {pl.dev_matrix}, tensor_map "
                                  f"{pl.tensor_map}): {exc}") from None
            if pl.tensor_shape is not None and tuple(pl.tensor_shape) != full:
                raise FormatError(f"parameter {name!r}: strategy {self.strategy._where()} records tensor_shape "
                                  f"{tuple(pl.tensor_shape)} but the block shape {shape} in {example} implies "
                                  f"{full}")
            if lay.local_shape != tuple(shape):
                raise FormatError(f"parameter {name!r}: block shape {shape} in {example} is not the block "
                                  f"{lay.local_shape} of {lay}")
        self._layouts[name] = lay
        return lay

    def dtype(self, name: str) -> np.dtype:
        loc = min(self._stage_ranks(name))
        return self.reader(self.file_rank(name, loc)).entry(name).dtype.np

    # ------------------------------------------------------------------------- reads
    def plan(self, name: str, dst: Optional[Layout], dst_rank: int, hint: Optional[int] = None) -> Plan:
        """The read plan of ``dst_rank``'s block of ``name`` (``dst=None``: the full tensor)."""
        src = self.layout(name)
        if src is None:
            raise KeyError(f"parameter {name!r} is not in the checkpoint files")
        dst = dst or replicated(src.shape, 1)
        if dst.shape != src.shape:
            raise LayoutError(f"parameter {name!r}: destination layout shape {dst.shape} != source shape {src.shape}")
        hint = dst_rank if hint is None else hint
        # Validation plans every block before reading it: plan each (name, destination) once.
        key = (name, dst, dst_rank % dst.num_devices, hint % src.num_devices, self.piece_bytes)
        plan = self._plans.get(key)
        if plan is None:
            try:
                plan = source_plan(src, dst, key[2], key[3], self.available_local(name),
                                   np.dtype(self.dtype(name)).itemsize, self.piece_bytes)
            except LayoutError as exc:
                raise FormatError(f"parameter {name!r}: {exc} (files given: {sorted(self.files)})") from None
            self._plans[key] = plan
        return plan

    def read_block(self, name: str, dst: Optional[Layout], dst_rank: int, hint: Optional[int] = None,
                   out: Optional[np.ndarray] = None) -> np.ndarray:
        """``dst_rank``'s block of ``name`` under ``dst`` (``None``: the full tensor), read by ranges.

        ``hint`` is the destination rank in source terms (default ``dst_rank``; see module doc).
        """
        plan = self.plan(name, dst, dst_rank, hint)
        src = plan.src
        lrank = dst_rank % plan.dst.num_devices
        origin = plan.dst.box(lrank)
        if out is None:
            out = np.empty(plan.dst.local_shape, dtype=self.dtype(name))

        def fetch(piece: Piece) -> np.ndarray:
            key = self.file_rank(name, piece.src)
            rd = self.reader(key)
            box = tuple((a - o, b - o) for (a, b), (o, _) in zip(piece.box, src.box(piece.src)))
            idx = local_index(piece.box, origin)
            region = out[idx] if idx else out[...]  # out[()] of a 0-d array is a scalar, not a view
            self.stats.add(self.files[key], piece.size * out.itemsize)
            # Read in place, strided or not (the reader scatters runs into the view); assemble's
            # copy of the region onto itself is then a no-op.
            rd.read_box(name, box, out=region)
            return region

        return assemble(plan, lrank, fetch, out=out)


def rank_list(src: Optional[TrainStrategy], dst: Optional[TrainStrategy], rank_id: int) -> list[int]:
    """Source ranks destination ``rank_id`` needs, descending (MindSpore's ``rank_list_for_transform``).

    Computed from the layouts alone: each dim gets a synthetic length divisible by both splits
    (the needed ranks do not depend on the length when splits are even). A pipeline source's
    needed local ranks are expanded to every stage, as MindSpore does.

    >>> rank_list(TrainStrategy({"w": ParamLayout([2, 2, 2], [-1, 1])}), None, 0)
    [2, 0]
    """
    if src is None:
        return [0]
    dst_total = dst.device_num if dst is not None else 1
    if not 0 <= rank_id < dst_total:
        raise ValueError(f"Rank {rank_id} is not in the current stage! (the destination has {dst_total} devices)")
    n = src.stage_devices
    needed: set[int] = set()
    for name, p in src.params.items():
        dl: Optional[ParamLayout] = None
        if dst is not None and name in dst:
            dl = dst.param_layout(name)
            if dst.is_pipeline and dst.stage_of(name) != rank_id // dst.stage_devices:
                continue
        ndim = len(p.layout.tensor_map)
        if dl is not None and len(dl.tensor_map) != ndim:
            raise StrategyError(f"parameter {name!r} has {ndim} dims in the source strategy but "
                                f"{len(dl.tensor_map)} in the destination strategy")
        # The smallest shape both layouts split evenly: the needed ranks do not depend on the length.
        s_unit = infer_full_shape(p.layout, (1,) * ndim)
        d_unit = infer_full_shape(dl, (1,) * ndim) if dl is not None else (1,) * ndim
        shape = tuple(math.lcm(a, b) for a, b in zip(s_unit, d_unit))
        slay = p.layout.to_layout(shape)
        dlay = dl.to_layout(shape) if dl is not None else replicated(shape, 1)
        plan = source_plan(slay, dlay, rank_id % dlay.num_devices, rank_id % n, piece_bytes=None)
        needed.update(pc.src for pc in plan.pieces)
    out = {loc + s * n for loc in needed for s in range(src.num_stages)}
    return sorted(out, reverse=True)


def iter_blocks(source: SourceCheckpoint, names: Iterable[str], dst_layouts: Mapping[str, Optional[Layout]],
                dst_rank: int, hint: int, on_done: Optional[Callable[[str, int], None]] = None,
                reuse: bool = False) -> Iterator[tuple[str, np.ndarray]]:
    """``(name, block)`` one at a time, so a writer streaming them holds one block at a time.

    With ``reuse`` blocks are read into two reused buffers (the next block is read ahead on a
    thread while the caller writes the current one), so each yielded block is valid only until
    the next one is requested: for a writer that is done with a block by then. Reusing buffers
    saves the page faults of a fresh allocation per block, which cost more than reading the
    bytes (~2 GB/s for 4 KiB pages).
    """
    names = list(names)
    if not reuse:
        for name in names:
            block = source.read_block(name, dst_layouts.get(name), dst_rank, hint)
            if on_done is not None:
                on_done(name, block.nbytes)
            yield name, block
        return
    shapes = [(dst_layouts[n].local_shape if dst_layouts.get(n) is not None else source.layout(n).shape)
              for n in names]
    sizes = [math.prod(shape) * np.dtype(source.dtype(n)).itemsize for n, shape in zip(names, shapes)]
    # Two buffers: the block the writer holds, and the next one, read meanwhile on a thread
    # (preadv releases the GIL; so does the writer's write()). The second buffer is at most
    # PREFETCH_BYTES, so the two never hold more than the largest block plus that; a block too
    # big for it is read when the writer is done with the previous one.
    bufs = [np.empty(max(sizes, default=0), np.uint8)]
    if len(names) > 1 and read_threads() > 1:
        bufs.append(np.empty(min(sorted(sizes)[-2], PREFETCH_BYTES), np.uint8))

    def read(i: int, b: int) -> np.ndarray:
        out = bufs[b][:sizes[i]].view(source.dtype(names[i])).reshape(shapes[i])
        return source.read_block(names[i], dst_layouts.get(names[i]), dst_rank, hint, out=out)

    def free_buffer(i: int, held: Optional[int]) -> Optional[int]:
        fits = [b for b in range(len(bufs)) if b != held and len(bufs[b]) >= sizes[i]]
        return min(fits, key=lambda b: len(bufs[b])) if fits else None

    pool = ThreadPoolExecutor(max_workers=1) if len(bufs) > 1 else None
    try:
        ahead = None  # (future, buffer) of the block being read ahead
        for i, name in enumerate(names):
            if ahead is not None:
                block, held = ahead[0].result(), ahead[1]
            else:  # the writer holds no block now: any buffer will do
                held = free_buffer(i, None)
                block = read(i, held)
            ahead = None
            if pool is not None and i + 1 < len(names):
                b = free_buffer(i + 1, held)
                if b is not None:
                    ahead = (pool.submit(read, i + 1, b), b)
            if on_done is not None:
                on_done(name, block.nbytes)
            yield name, block
    finally:
        if pool is not None:
            pool.shutdown(wait=True)


def read_threads() -> int:
    """Threads for reading many blocks: the cores this process may use (MPI ranks share them), at most 4."""
    from ..communication import _backend

    return max(1, min(4, (os.cpu_count() or 1) // max(1, _backend.launched_size())))


def read_blocks(source: SourceCheckpoint, jobs: Sequence[tuple[str, Optional[Layout], np.ndarray]], dst_rank: int,
                hint: int, threads: Optional[int] = None) -> None:
    """Read each ``(name, destination layout, out)`` block into its ``out``, on ``threads`` threads.

    ``preadv`` and numpy's copies release the GIL, so a second core roughly halves the time of
    page-cache reads. Blocks are dealt to the threads largest first, to balance their bytes.
    All blocks should be planned (``source.plan``) and the files opened first.
    """
    threads = read_threads() if threads is None else threads
    if threads <= 1 or len(jobs) < 2:
        for name, dst, out in jobs:
            source.read_block(name, dst, dst_rank, hint, out=out)
        return
    lanes: list[list[int]] = [[] for _ in range(threads)]
    load = [0] * threads
    for i in sorted(range(len(jobs)), key=lambda j: -jobs[j][2].nbytes):
        k = load.index(min(load))
        lanes[k].append(i)
        load[k] += jobs[i][2].nbytes

    def lane(idx: list[int]) -> None:
        for i in sorted(idx):  # file order within a lane
            name, dst, out = jobs[i]
            source.read_block(name, dst, dst_rank, hint, out=out)

    with ThreadPoolExecutor(max_workers=threads) as pool:
        for fut in [pool.submit(lane, idx) for idx in lanes if idx]:
            fut.result()  # re-raises a thread's error
