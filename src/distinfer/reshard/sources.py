"""Source sets: what the resharding engine reads blocks from, all behind one protocol (:class:`SourceSet`).

* :class:`SourceCheckpoint`: per-rank files (``.ckpt`` or ``.safetensors``) written under a
  training strategy (:class:`~.planning.TrainStrategy`), or one unsliced file;
* :class:`RoutedSource`: several sets behind one name space (the part files of a unified
  directory, or rank files saved with ``remove_redundancy``, one set per group of holders);
* :class:`Renamed`: a set seen under other names (``name_map``, ``choice_func``);
* :class:`UnifiedCheckpoint`: a unified directory of full tensors (``part*.safetensors`` and
  ``param_name_map.json``), as ``unified_safetensors`` writes it.

A set answers, per name, its full :class:`~distinfer.layout.Layout` and dtype, plans the read of
any destination block (:func:`~.planning.source_plan`: one replica per piece, pieces cut into
read-sized chunks) and reads it: each piece with one ranged read of one file
(:meth:`~distinfer.io.ranged.RangedReader.read_box`) straight into its place in the destination
block (a strided view when the piece is not contiguous there). Only the bytes of the block are
read, no full tensor is built unless the destination *is* the full tensor, no piece is copied
after it is read, and a process holds its destination block plus a bounded staging buffer.
:func:`iter_blocks` streams many blocks to a writer and :func:`read_blocks` fills many on threads.

Rank files are opened and checked in one place, :func:`open_source`.

>>> import os, tempfile, numpy as np
>>> from distinfer.io import write_ckpt
>>> from distinfer.io.strategy_file import ParamLayout
>>> d = tempfile.mkdtemp(); full = np.arange(32, dtype=np.float32).reshape(4, 8)
>>> src = Layout((2,), (-1, 0), (4, 8))                       # columns split over 2 ranks
>>> files = {}
>>> for r in range(2):
...     files[r] = os.path.join(d, f"r{r}.ckpt"); write_ckpt(files[r], [("w", src.slice(full, r))])
>>> sc = open_source(TrainStrategy({"w": ParamLayout([2], [-1, 0])}), files)
>>> dst = Layout((2,), (0, -1), (4, 8))                       # rows split over 2 ranks
>>> bool((sc.read_block("w", dst, 1) == full[2:4]).all()), sc.stats.bytes_read
(True, 64)
>>> sc.close()
"""
from __future__ import annotations

import json
import logging
import math
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Callable, Iterable, Iterator, Mapping, Optional, Protocol, Sequence, Union

import numpy as np

from ..communication import _backend
from ..errors import FormatError, LayoutError
from ..io.ckpt import CkptFile
from ..io.safetensors_io import SafetensorsFile
from ..layout import Layout, replicated
from ..plan import Piece, Plan, assemble, local_index
from .planning import PIECE_BYTES, TrainStrategy, infer_full_shape, source_plan

__all__ = ["SourceSet", "ReadStats", "SourceCheckpoint", "open_source", "open_checkpoint", "RoutedSource",
           "Renamed", "UnifiedCheckpoint", "PARAM_MAP_FILE", "HYPER_PARAM_FILE", "PREFETCH_BYTES", "file_box",
           "block_shape",
           "iter_blocks", "read_blocks", "read_threads"]

log = logging.getLogger(__name__)

PathLike = Union[str, os.PathLike]
Box = tuple[tuple[int, int], ...]
Reader = Union[CkptFile, SafetensorsFile]

#: Largest block read ahead (while the previous one is written) by ``iter_blocks(reuse=True)``.
PREFETCH_BYTES = 64 * 1024 * 1024
#: The files of a unified directory besides its ``part*.safetensors``.
PARAM_MAP_FILE = "param_name_map.json"
HYPER_PARAM_FILE = "hyper_param.safetensors"


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


def file_box(piece: Piece, src: Layout) -> Box:
    """The box ``piece`` covers inside its source rank's block, which that rank's file holds.

    >>> file_box(Piece(1, 0, ((0, 2), (6, 8))), Layout((2,), (-1, 0), (4, 8)))
    ((0, 2), (2, 4))
    """
    return tuple((s.start, s.stop) for s in local_index(piece.box, src.box(piece.src)))


def block_shape(source: SourceSet, name: str, dst: Optional[Layout]) -> tuple[int, ...]:
    """Shape of a destination block of ``name`` under ``dst`` (None: the full tensor)."""
    return tuple(dst.local_shape) if dst is not None else tuple(source.layout(name).shape)


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


class SourceSet(Protocol):
    """What the engine reads blocks from (every set of this module is one).

    ``layout(name)`` is the full tensor's source layout (None: not in the set), ``plan`` the read
    plan of ``dst_rank``'s block under ``dst`` (None: the full tensor; ``hint``: the destination
    rank in the source's terms, for the replica choice) and ``read_block`` reads that block,
    into ``out`` if given. ``stats`` counts the bytes read.
    """

    @property
    def stats(self) -> ReadStats: ...

    def names(self) -> list[str]: ...

    def layout(self, name: str) -> Optional[Layout]: ...

    def dtype(self, name: str) -> np.dtype: ...

    def plan(self, name: str, dst: Optional[Layout], dst_rank: int, hint: Optional[int] = None) -> Plan: ...

    def read_block(self, name: str, dst: Optional[Layout], dst_rank: int, hint: Optional[int] = None,
                   out: Optional[np.ndarray] = None) -> np.ndarray: ...

    def close(self) -> None: ...


class _Closing:
    """``with`` support: :meth:`close` on exit."""

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self):
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# ------------------------------------------------------------------------------ rank files
class SourceCheckpoint(_Closing):
    """Per-rank source files under a training strategy, read by ranged reads.

    ``files`` maps source ranks to paths: global ranks (``stage * stage_devices + local``) by
    default, or, with ``stage_local=True``, the local ranks of one pipeline stage (the files of
    whichever stage they hold, as ``load_distributed_checkpoint`` takes them). ``strategy=None``
    means one full (unsharded) checkpoint, ``files = {0: path}``. Files are opened (indexed,
    no tensor bytes read) on first use and kept open; :func:`open_source` opens them all first.

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

        ``hint`` is the destination rank in source terms (default ``dst_rank``; see
        :mod:`.planning` for the replica choice).
        """
        plan = self.plan(name, dst, dst_rank, hint)
        lrank = dst_rank % plan.dst.num_devices
        origin = plan.dst.box(lrank)
        if out is None:
            out = np.empty(plan.dst.local_shape, dtype=self.dtype(name))

        def fetch(piece: Piece) -> np.ndarray:
            key = self.file_rank(name, piece.src)
            idx = local_index(piece.box, origin)
            region = out[idx] if idx else out[...]  # out[()] of a 0-d array is a scalar, not a view
            self.stats.add(self.files[key], piece.size * out.itemsize)
            # Read in place, strided or not (the reader scatters runs into the view); assemble's
            # copy of the region onto itself is then a no-op.
            self.reader(key).read_box(name, file_box(piece, plan.src), out=region)
            return region

        return assemble(plan, lrank, fetch, out=out)


def open_source(strategy: Optional[TrainStrategy], files: Mapping[int, PathLike],
                stage_local: bool = False) -> SourceCheckpoint:
    """The rank files ``files`` under ``strategy`` (see :class:`SourceCheckpoint`), every one opened
    and indexed now: the one place a set of rank files is opened and checked, so that a bad
    file fails before anything is planned or written.

    >>> import os, tempfile
    >>> open_source(None, {0: os.path.join(tempfile.mkdtemp(), "missing.ckpt")})  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    distinfer.errors.FormatError: .../missing.ckpt: no such checkpoint file
    """
    source = SourceCheckpoint(strategy, files, stage_local)
    try:
        source.open_all()
    except BaseException:
        source.close()
        raise
    return source


# ------------------------------------------------------------------------------ views
class RoutedSource(_Closing):
    """Several source sets behind one name space: ``routes[name]`` serves ``name``.

    Each method is delegated to the name's set, so blocks are read by the same ranged reads as
    from one set.

    >>> import os, tempfile, numpy as np
    >>> from distinfer.io import write_safetensors
    >>> d = tempfile.mkdtemp()
    >>> write_safetensors(f"{d}/a.safetensors", {"x": np.arange(4.0)})
    >>> write_safetensors(f"{d}/b.safetensors", {"y": np.ones((2, 2), np.float32)})
    >>> a, b = SourceCheckpoint(None, {0: f"{d}/a.safetensors"}), SourceCheckpoint(None, {0: f"{d}/b.safetensors"})
    >>> with RoutedSource({"x": a, "y": b}) as src:
    ...     print(src.read_block("x", Layout((2,), (0,), (4,)), 1).tolist(), src.layout("y").shape)
    [2.0, 3.0] (2, 2)
    """

    def __init__(self, routes: Mapping[str, SourceSet]) -> None:
        self.routes = dict(routes)

    def sources(self) -> list[SourceSet]:
        """The distinct sets, in first-route order."""
        seen: dict[int, SourceSet] = {}
        for sc in self.routes.values():
            seen.setdefault(id(sc), sc)
        return list(seen.values())

    def source(self, name: str) -> SourceSet:
        try:
            return self.routes[name]
        except KeyError:
            raise KeyError(f"parameter {name!r} is not in the checkpoint files") from None

    def __contains__(self, name: object) -> bool:
        return name in self.routes

    def names(self) -> list[str]:
        return list(self.routes)

    def layout(self, name: str) -> Optional[Layout]:
        return self.source(name).layout(name)

    def dtype(self, name: str) -> np.dtype:
        return self.source(name).dtype(name)

    def plan(self, name: str, dst: Optional[Layout], dst_rank: int, hint: Optional[int] = None) -> Plan:
        return self.source(name).plan(name, dst, dst_rank, hint)

    def read_block(self, name: str, dst: Optional[Layout], dst_rank: int, hint: Optional[int] = None,
                   out: Optional[np.ndarray] = None) -> np.ndarray:
        return self.source(name).read_block(name, dst, dst_rank, hint, out=out)

    @property
    def stats(self) -> ReadStats:
        """Bytes read, summed over the sets."""
        total = ReadStats()
        for sc in self.sources():
            for path, n in sc.stats.per_file.items():
                total.add(path, n)
        return total

    def close(self) -> None:
        for sc in self.sources():
            sc.close()


class Renamed:
    """A source set seen under other names: ``stored_of[name]`` is the name it reads. A view:
    closing it leaves the set open.

    >>> import os, tempfile, numpy as np
    >>> from distinfer.io import write_ckpt
    >>> p = os.path.join(tempfile.mkdtemp(), "a.ckpt"); write_ckpt(p, [("w", np.arange(4.0))])
    >>> with SourceCheckpoint(None, {0: p}) as sc:
    ...     print(Renamed(sc, {"model.w": "w"}).read_block("model.w", None, 0).tolist())
    [0.0, 1.0, 2.0, 3.0]
    """

    def __init__(self, source: SourceSet, stored_of: Mapping[str, str]) -> None:
        self.src, self.stored_of = source, dict(stored_of)

    @property
    def stats(self) -> ReadStats:
        return self.src.stats

    def names(self) -> list[str]:
        return list(self.stored_of)

    def layout(self, name: str) -> Optional[Layout]:
        return self.src.layout(self.stored_of[name])

    def dtype(self, name: str) -> np.dtype:
        return self.src.dtype(self.stored_of[name])

    def plan(self, name: str, dst: Optional[Layout], dst_rank: int, hint: Optional[int] = None) -> Plan:
        return self.src.plan(self.stored_of[name], dst, dst_rank, hint)

    def read_block(self, name: str, dst: Optional[Layout], dst_rank: int, hint: Optional[int] = None,
                   out: Optional[np.ndarray] = None) -> np.ndarray:
        return self.src.read_block(self.stored_of[name], dst, dst_rank, hint, out=out)

    def close(self) -> None:
        pass


# ------------------------------------------------------------------------------ unified directories
class UnifiedCheckpoint(_Closing):
    """A unified directory opened for ranged reads: ``weight_map``, one set per part file, hyper params.

    A directory as ``unified_safetensors`` writes it: ``part{i}.safetensors`` (full tensors),
    ``param_name_map.json`` (``{"weight_map": {name: part file}}``) and ``hyper_param.safetensors``.
    Without the map, a directory holding exactly one weight file (besides the hyper params)
    maps every tensor to it, as in MindSpore. Part files are indexed on first use. Defects raise
    ValueError (no map) or :class:`~distinfer.errors.FormatError` naming the map, the part file
    and the parameter.

    >>> import os, tempfile, numpy as np
    >>> from distinfer.io import write_safetensors
    >>> d = tempfile.mkdtemp(); write_safetensors(f"{d}/part0.safetensors", {"w": np.arange(6.0).reshape(3, 2)})
    >>> with UnifiedCheckpoint(d) as uc:
    ...     print(uc.weight_map, uc.layout("w").shape, uc.read_block("w", Layout((3,), (0, -1), (3, 2)), 2))
    {'w': 'part0.safetensors'} (3, 2) [[4. 5.]]
    """

    def __init__(self, path: PathLike, api: str = "load_distributed_checkpoint") -> None:
        self.path = os.fspath(path)
        self.api = api
        if not os.path.isdir(self.path):
            raise ValueError(f"For '{api}', the unified safetensors directory {self.path} does not exist or is not "
                             f"a directory")
        self.map_file = os.path.join(self.path, PARAM_MAP_FILE)
        if os.path.isfile(self.map_file):
            self.weight_map = self._read_map()
        else:
            weights = sorted(f for f in os.listdir(self.path) if f.endswith(".safetensors") and f != HYPER_PARAM_FILE)
            if len(weights) != 1:
                raise ValueError(f"For '{api}', there must be a JSON file named '{PARAM_MAP_FILE}' in the unified "
                                 f"safetensors directory {self.path} (it holds {len(weights)} weight files"
                                 f"{': ' + ', '.join(weights[:4]) if weights else ''})")
            with open_checkpoint(os.path.join(self.path, weights[0])) as one:
                self.weight_map = {n: weights[0] for n in one.names()}
        hyper = os.path.join(self.path, HYPER_PARAM_FILE)
        self.hyper_path: Optional[str] = hyper if os.path.isfile(hyper) else None
        self._hyper: Optional[Reader] = None
        parts: dict[str, SourceCheckpoint] = {}
        for name, part in self.weight_map.items():
            if part not in parts:
                full = os.path.join(self.path, part)
                if not os.path.isfile(full):
                    raise FormatError(f"{self.map_file} maps parameter {name!r} to {part}, but {full} does not exist")
                parts[part] = SourceCheckpoint(None, {0: full})
        self.source = RoutedSource({n: parts[p] for n, p in self.weight_map.items()})

    def _read_map(self) -> dict[str, str]:
        try:
            with open(self.map_file, "rb") as fh:
                obj = json.loads(fh.read().decode("utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise FormatError(f"{self.map_file}: not a readable parameter map: {exc}") from None
        wm = obj.get("weight_map") if isinstance(obj, dict) and "weight_map" in obj else obj
        if not isinstance(wm, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in wm.items()):
            raise FormatError(f"{self.map_file}: 'weight_map' must map parameter names to part file names, got "
                              f"{type(wm).__name__}")
        for name, part in wm.items():
            if os.path.basename(part) != part or not part.endswith(".safetensors") or part == HYPER_PARAM_FILE:
                raise FormatError(f"{self.map_file}: parameter {name!r} maps to {part!r}, which is not a "
                                  f"'.safetensors' part file name in this directory")
        return dict(wm)

    def __contains__(self, name: object) -> bool:
        return name in self.weight_map

    def part_path(self, name: str) -> str:
        return os.path.join(self.path, self.weight_map[name])

    # ----------------------------------------------------------------- the SourceSet protocol
    @property
    def stats(self) -> ReadStats:
        return self.source.stats

    def names(self) -> list[str]:
        return list(self.weight_map)

    def layout(self, name: str) -> Layout:
        """The full-tensor layout of ``name`` (FormatError if its part file lacks it)."""
        lay = self.source.layout(name)
        if lay is None:
            raise FormatError(f"{self.part_path(name)}: parameter {name!r} is not in it, but {self.map_file} maps "
                              f"it there")
        return lay

    def dtype(self, name: str) -> np.dtype:
        return self.source.dtype(name)

    def plan(self, name: str, dst: Optional[Layout], dst_rank: int, hint: Optional[int] = None) -> Plan:
        return self.source.plan(name, dst, dst_rank, hint)

    def read_block(self, name: str, dst: Optional[Layout], dst_rank: int, hint: Optional[int] = None,
                   out: Optional[np.ndarray] = None) -> np.ndarray:
        return self.source.read_block(name, dst, dst_rank, hint, out=out)

    # -------------------------------------------------------------------------- hyper params
    def hyper(self) -> Optional[Reader]:
        """``hyper_param.safetensors`` opened (None if the directory has none)."""
        if self._hyper is None and self.hyper_path is not None:
            self._hyper = open_checkpoint(self.hyper_path)
        return self._hyper

    def hyper_params(self) -> dict[str, np.ndarray]:
        """The whole of ``hyper_param.safetensors`` (small: scalars and counters)."""
        rd = self.hyper()
        return {} if rd is None else {n: rd.read(n) for n in rd.names()}

    def close(self) -> None:
        self.source.close()
        if self._hyper is not None:
            self._hyper.close()
            self._hyper = None


# ------------------------------------------------------------------------------ many blocks
def read_threads() -> int:
    """Threads for reading many blocks: the cores this process may use (MPI ranks share them), at most 4."""
    return max(1, min(4, (os.cpu_count() or 1) // max(1, _backend.launched_size())))


def iter_blocks(source: SourceSet, names: Iterable[str], dst_layouts: Mapping[str, Optional[Layout]],
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
    shapes = [block_shape(source, n, dst_layouts.get(n)) for n in names]
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


def read_blocks(source: SourceSet, jobs: Sequence[tuple[str, Optional[Layout], np.ndarray]], dst_rank: int,
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
