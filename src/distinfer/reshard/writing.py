"""Where checkpoint files are written: one rank-file writer, and one fan-out over processes or MPI ranks.

Every file the resharding engine writes (``transform_checkpoints`` rank files, the part files
and hyper params of ``unified_safetensors``, the per-rank files ``load_distributed_checkpoint``
slices from a unified directory) is an :class:`OutputFile`: blocks read from a source set, then
entries copied unchanged from one file. :func:`write_file` streams it to a ``.ckpt`` or
``.safetensors`` file (one block held at a time, the next read ahead meanwhile), atomically
(temporary file, fsync, rename). :func:`fan_out` writes a whole output set (an
:class:`OutputSet`: ``key -> OutputFile``): here, on spawned worker processes, or dealt to the
ranks of an ``mpirun`` job, then commits it (``commit``) and waits for every rank.

>>> import os, tempfile, numpy as np
>>> from distinfer.io import CkptFile, write_ckpt
>>> from distinfer.layout import Layout
>>> from distinfer.reshard.sources import SourceCheckpoint
>>> d = tempfile.mkdtemp(); write_ckpt(f"{d}/full.ckpt", [("w", np.arange(8.0).reshape(4, 2)), ("step", 3)])
>>> with SourceCheckpoint(None, {0: f"{d}/full.ckpt"}) as src:
...     rows = Layout((2,), (0, -1), (4, 2))                    # rank 1 of 2 gets rows 2..3
...     write_file(OutputFile(src, (("w", "w", rows),), dst_rank=1, hint=1, copied=(("step", src.reader(0)),)),
...                f"{d}/rank1.ckpt")
32
>>> with CkptFile(f"{d}/rank1.ckpt") as f: print(f.names(), f.read("w").tolist())
['w', 'step'] [[4.0, 5.0], [6.0, 7.0]]
"""
from __future__ import annotations

import json
import logging
import os
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from itertools import chain
from multiprocessing import get_context
from typing import Any, Callable, Mapping, Optional, Protocol, Sequence, Union

import numpy as np

from .. import dtype as mstype
from ..communication import _backend
from ..io._atomic import atomic_output
from ..io.ckpt import RawValue, write_ckpt
from ..io.safetensors_io import safetensors_order, write_safetensors, write_safetensors_stream
from ..layout import Layout
from .sources import (HYPER_PARAM_FILE, PARAM_MAP_FILE, Reader, Renamed, SourceSet, block_shape, iter_blocks,
                      open_checkpoint)

__all__ = ["OutputFile", "OutputSet", "write_file", "fan_out", "write_unified_index", "safetensors_storable"]

log = logging.getLogger(__name__)

PathLike = Union[str, os.PathLike]


@dataclass(frozen=True)
class OutputFile:
    """What one output file holds.

    ``blocks`` are ``(name written, name in the source, destination layout)``: ``dst_rank``'s
    block of each (the whole tensor when the layout is None) read from ``source``, ``hint``
    being the destination rank in the source's terms (the replica choice). ``copied`` lists
    entries copied unchanged, each with the reader of the file it comes from (``global_step``,
    hyper params, or a slice the destination keeps as it is).
    A ``.ckpt`` holds the blocks in the given order, then the copied entries; a
    ``.safetensors`` file holds everything in :func:`~distinfer.io.safetensors_order`.
    """

    source: Optional[SourceSet]
    blocks: Sequence[tuple[str, str, Optional[Layout]]]
    dst_rank: int = 0
    hint: int = 0
    copied: Sequence[tuple[str, Reader]] = ()


class OutputSet(Protocol):
    """Output files by key (a destination rank, a part number): what :func:`fan_out` writes."""

    def file(self, key: int) -> OutputFile:
        """What file ``key`` holds (every read already planned)."""

    def size(self, key: int) -> int:
        """Bytes of the blocks of file ``key`` (for progress)."""

    def rebuild(self, keys: Sequence[int]) -> tuple[Callable[..., "OutputSet"], tuple]:
        """``(factory, args)`` that build this set in a spawned worker process that writes ``keys``:
        a module-level callable and plain data (paths, strategies), never pickled user data."""


def safetensors_storable(reader: Any, name: str) -> bool:
    """True when entry ``name`` of ``reader`` can be stored in safetensors (else a warning: it is skipped)."""
    e = reader.entry(name)
    if not e.dtype.safetensors:  # str and Int4 records
        log.warning("%s: %s record %r cannot be stored in safetensors; skipped", reader.path, e.dtype, name)
        return False
    return True


def _copied_value(reader: Any, name: str) -> Any:
    """An entry as write_ckpt writes it back unchanged (packed Int4 as its raw bytes)."""
    e = reader.entry(name)
    value = reader.read(name)
    return RawValue(e.dtype, e.shape, value) if e.dtype is mstype.qint4x2 else value


def write_file(out: OutputFile, path: PathLike, on_done: Optional[Callable[[str, int], None]] = None) -> int:
    """Write ``out`` to ``path`` (safetensors iff the name ends with ``.safetensors``, else ``.ckpt``),
    atomically, streaming one block at a time; ``on_done(name, bytes)`` after each block.
    Returns the bytes of the blocks."""
    path = os.fspath(path)
    # Read under the written names, so that two written names of one stored tensor keep their layouts.
    view = Renamed(out.source, {name: stored for name, stored, _ in out.blocks})
    layouts = {name: lay for name, _, lay in out.blocks}
    copied = dict(out.copied)
    written = 0

    def done(name: str, n: int) -> None:
        nonlocal written
        written += n
        if on_done is not None:
            on_done(name, n)

    if path.endswith(".safetensors"):
        # The header comes first, from the shapes alone; then the data in the header's order.
        stored = {n: rd.entry(n) for n, rd in copied.items() if safetensors_storable(rd, n)}
        specs = safetensors_order([(n, np.dtype(view.dtype(n)), block_shape(view, n, lay)) for n, lay in layouts.items()]
                                  + [(n, e.dtype.np, e.shape) for n, e in stored.items()])
        blocks = iter_blocks(view, [n for n, _, _ in specs if n in layouts], layouts, out.dst_rank, out.hint, done,
                             reuse=True)
        write_safetensors_stream(path, specs, ((n, copied[n].read(n)) if n in stored else next(blocks)
                                               for n, _, _ in specs))
    else:
        # write_ckpt is done with each block before asking for the next: reused buffers.
        blocks = iter_blocks(view, list(layouts), layouts, out.dst_rank, out.hint, done, reuse=True)
        write_ckpt(path, chain(blocks, ((n, _copied_value(rd, n)) for n, rd in out.copied)))
    log.info("wrote %s (%d tensors, %d bytes of blocks)", path, len(layouts) + len(out.copied), written)
    return written


# ------------------------------------------------------------------------------ fan-out
_WORKER: Optional[OutputSet] = None


def _worker_init(factory: Callable[..., OutputSet], args: tuple) -> None:
    global _WORKER
    _WORKER = factory(*args)


def _worker_write(key: int, path: str) -> int:
    assert _WORKER is not None
    return write_file(_WORKER.file(key), path)


def fan_out(outputs: OutputSet, paths: Mapping[int, str], processes: int = 1, desc: str = "write",
            divide: bool = True, commit: Optional[Callable[[], None]] = None) -> None:
    """Write file ``paths[key]`` of ``outputs`` for every key: the one place output sets are written.

    Under ``mpirun`` (with ``divide``) the keys are dealt to the MPI ranks (``keys[rank::size]``),
    each writing its share itself; otherwise up to ``processes`` spawned worker processes write
    them, each rebuilding the set with ``outputs.rebuild``. Parent directories are created.
    ``commit`` then runs once (on MPI rank 0) after this process's files, and every MPI rank
    waits for the others, so that no rank returns before the whole set is written.
    """
    from tqdm.auto import tqdm

    world = _backend.world() if _backend.launched_size() > 1 else None
    divided = world is not None and divide and world.size > 1
    if divided:
        keys = list(paths)[world.rank::world.size]
        paths = {k: paths[k] for k in keys}
    for p in paths.values():
        os.makedirs(os.path.dirname(os.path.abspath(p)), exist_ok=True)
    with tqdm(total=sum(outputs.size(k) for k in paths), unit="B", unit_scale=True, desc=desc, disable=None,
              leave=False) as bar:
        if divided or processes <= 1 or len(paths) <= 1:
            for k, p in paths.items():
                write_file(outputs.file(k), p, lambda _name, n: bar.update(n))
        else:
            with ProcessPoolExecutor(max_workers=min(processes, len(paths)), mp_context=get_context("spawn"),
                                     initializer=_worker_init, initargs=outputs.rebuild(list(paths))) as pool:
                for fut in as_completed([pool.submit(_worker_write, k, p) for k, p in paths.items()]):
                    bar.update(fut.result())
    if commit is not None and (not divided or world.rank == 0):
        commit()
    if divided:
        world.barrier()


# ------------------------------------------------------------------------------ unified directories
def write_unified_index(dst_dir: str, weight_map: Mapping[str, str], total_size: int, hyper_file: Optional[str],
                        hyper: Sequence[str]) -> None:
    """Complete a unified directory with ``hyper_param.safetensors`` (the entries ``hyper`` of
    ``hyper_file``, if any) and ``param_name_map.json`` (``fan_out`` commits a unified set with it)."""
    if hyper:
        # Through the safetensors library, as MindSpore writes it (its order of same-size dtypes
        # differs from write_file's streamed order).
        with open_checkpoint(hyper_file) as rd:
            write_safetensors(os.path.join(dst_dir, HYPER_PARAM_FILE), {n: rd.read(n) for n in hyper})
    with atomic_output(os.path.join(dst_dir, PARAM_MAP_FILE)) as fh:
        fh.write(json.dumps({"metadata": {"total_size": total_size}, "weight_map": dict(weight_map)},
                            indent=4).encode("utf-8"))
