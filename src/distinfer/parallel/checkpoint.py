"""MindSpore's distributed checkpoint APIs: loading, merging and transforming sliced checkpoints.

``load_distributed_checkpoint``, ``merge_sliced_parameter``, ``rank_list_for_transform``,
``transform_checkpoint_by_rank`` and ``transform_checkpoints`` keep MindSpore 2.10's signatures,
file naming and error cases (spec §6, §7, §8). They run on the resharding engine
(:mod:`distinfer.parallel.reshard`): every destination block is assembled from ranged reads of
the source files, so unlike MindSpore no rank loads whole files or builds full tensors it does not
need, and every check (file count, unreadable files, strategy vs. file shapes, indivisible
destinations, a strategy for another network) runs before the network or any output file is
touched.

Where distinfer differs from MindSpore (on purpose):

* bf16 stays bf16 in ``load_distributed_checkpoint`` (MindSpore merges in float32 and converts
  back with a warning, or fails with ``strict_load=True``); ``transform_*`` write bf16 as MindSpore
  does; ``merge_sliced_parameter`` returns float32 for bf16 slices, as MindSpore does.
* ``transform_checkpoints`` also writes safetensors from ckpt input (``output_format``), and does
  not require the device counts to divide each other.
* ``transform_checkpoints(..., split_among_ranks=True)`` divides the destination ranks among the
  ranks of an ``mpirun`` job (by default, as in MindSpore, each caller writes them all, with
  ``process_num`` worker processes).
"""
from __future__ import annotations

import glob
import logging
import math
import os
import re
from concurrent.futures import ProcessPoolExecutor, as_completed
from multiprocessing import get_context
from typing import Any, Iterable, Mapping, Optional, Sequence, Union

import numpy as np

from .. import dtype as mstype
from ..errors import LayoutError, StrategyError
from ..io.ckpt import RawValue, write_ckpt
from ..io.safetensors_io import safetensors_order, write_safetensors_stream
from ..io.strategy_file import (ParamLayout, _layout_from_pb, build_searched_strategy,
                                merge_pipeline_strategys, read_strategy)
from ..layout import Layout, replicated
from ..plan import assemble, make_plan
from .reshard import (PREFETCH_BYTES, SourceCheckpoint, read_blocks, read_cost, TrainStrategy, infer_full_shape, iter_blocks,
                      rank_list)

__all__ = ["load_distributed_checkpoint", "merge_sliced_parameter", "rank_list_for_transform",
           "transform_checkpoint_by_rank", "transform_checkpoints", "build_searched_strategy",
           "merge_pipeline_strategys", "convert_checkpoints", "convert_checkpoint_by_rank",
           "rank_list_for_convert", "plan_transform", "TransformJob"]

log = logging.getLogger(__name__)

PathLike = Union[str, os.PathLike]
# Bound of the ranged reader's coalescing buffer (io.ckpt._STAGING_BYTES).
_READER_STAGING = 16 * 1024 * 1024


# ------------------------------------------------------------------------------ helpers
def _strategy(path: Optional[PathLike]) -> Optional[TrainStrategy]:
    if path is None:
        return None
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"a strategy file must be a str path, got {type(path).__name__}")
    return TrainStrategy.from_file(path)


def _dst_layout(dst: Optional[TrainStrategy], name: str, shape: tuple[int, ...], rank: int) -> tuple[bool, Optional[Layout]]:
    """(write it?, layout or None for the full tensor) of ``name`` on destination ``rank``."""
    if dst is None:
        return True, None
    if dst.is_pipeline and dst.stage_of(name) != rank // dst.stage_devices:
        return False, None
    return True, dst.layout(name, shape)


class TransformJob:
    """A validated transform: source files and strategies, and what each destination rank gets.

    Building one opens (indexes) every source file and plans every destination rank, so all
    errors surface before anything is written. :meth:`write` then writes one rank.

    >>> import os, tempfile, numpy as np
    >>> from distinfer.io import ParamLayout, StrategyFile, write_ckpt, write_strategy
    >>> d = tempfile.mkdtemp(); full = np.arange(8, dtype=np.float32).reshape(2, 4)
    >>> for r in range(2):  # training saved w's column blocks on 2 ranks, and a global_step
    ...     write_ckpt(f"{d}/rank{r}.ckpt", [("w", full[:, 2 * r:2 * r + 2]), ("global_step", 5)])
    >>> write_strategy(f"{d}/src_strategy.ckpt", StrategyFile(layouts={"w": ParamLayout([2], [-1, 0])}))
    >>> job = TransformJob(f"{d}/src_strategy.ckpt", None, {r: f"{d}/rank{r}.ckpt" for r in range(2)}, [0])
    >>> job.params, job.extras(0), job.write(0, f"{d}/full.ckpt")  # no destination strategy: the full tensor
    (['w'], ['global_step'], 32)
    >>> job.close()
    """

    def __init__(self, src_strategy: Optional[PathLike], dst_strategy: Optional[PathLike],
                 files: Mapping[int, PathLike], dst_ranks: Sequence[int]) -> None:
        self.src_strategy_file = None if src_strategy is None else os.fspath(src_strategy)
        self.dst_strategy_file = None if dst_strategy is None else os.fspath(dst_strategy)
        self.src = _strategy(src_strategy)
        if self.src is not None and not len(self.src):
            self.src = None  # an empty source strategy: the files are unsliced
        self.dst = _strategy(dst_strategy)
        self.files = {int(r): os.fspath(p) for r, p in files.items()}
        if not self.files:
            raise ValueError("no source checkpoint files were given")
        self.source = SourceCheckpoint(self.src, self.files)
        self.dst_devices = self.dst.device_num if self.dst is not None else 1
        for r in dst_ranks:
            if not 0 <= r < self.dst_devices:
                raise ValueError(f"Rank {r} is not in the current stage! (the destination has {self.dst_devices} "
                                 f"devices)")
        self.source.open_all()
        self.src_devices = self.src.device_num if self.src is not None else 1
        # Parameters to reshard: the source strategy's (present in the files), or for an
        # unsliced source, the destination strategy's.
        if self.source.strategy is not None:
            self.params = self.source.names()
        else:
            names = self.source.reader(min(self.files)).names()
            self.params = [n for n in names if self.dst is not None and n in self.dst]
        # Sliced parameters the destination strategy does not name (optimizer state of a training
        # strategy going to a predict strategy): each destination rank keeps a source rank's slice
        # unchanged, as MindSpore's transform does (see _kept_source).
        self.kept = [n for n in self.params if self.dst is not None and n not in self.dst]
        self.params = [n for n in self.params if n not in self.kept]
        self.layouts: dict[int, dict[str, Optional[Layout]]] = {}
        for r in dst_ranks:
            lay: dict[str, Optional[Layout]] = {}
            for name in self.params:
                shape = self.source.layout(name).shape
                ok, dl = _dst_layout(self.dst, name, shape, r)
                if not ok:
                    continue
                if dl is not None and self.dst.param_layout(name).tensor_shape is not None and \
                        tuple(self.dst.param_layout(name).tensor_shape) != shape:
                    raise StrategyError(
                        f"{self.dst.path}: parameter {name!r} has tensor_shape "
                        f"{tuple(self.dst.param_layout(name).tensor_shape)} but the source checkpoint's is {shape}: "
                        f"the destination strategy is for a different network")
                lay[name] = dl
                self.source.plan(name, dl, r, self._hint(r))  # every piece has a readable source
            self.layouts[r] = lay
            self._reference(r)
            self._copied(r)  # every kept slice has its source file

    def _hint(self, rank: int) -> int:
        return rank % self.source.stage_devices

    def _reference(self, rank: int) -> int:
        """Source rank whose non-strategy entries (``global_step``...) the destination copies."""
        ref = rank % self.src_devices
        if ref not in self.files:
            ref = min(self.files)
        return ref

    def extras(self, rank: int) -> list[str]:
        """Entries copied unchanged to ``rank`` (not in the strategy), in file order."""
        rd = self.source.reader(self._reference(rank))
        skip = set(self.source.strategy.params) if self.source.strategy is not None else set(self.params)
        return [n for n in rd.names() if n not in skip]

    def _kept_source(self, rank: int, name: str) -> int:
        """The source rank whose slice of ``name`` (in the source strategy, not in the destination's)
        destination ``rank`` keeps: the same local rank, in the stage that holds ``name`` (MindSpore
        takes source local rank ``dst local rank % source stage devices``)."""
        src = self.source.strategy
        local = (rank % self.dst.stage_devices) % src.stage_devices
        global_rank = src.stage_of(name) * src.stage_devices + local
        key = local if self.source.stage_local else global_rank
        if key not in self.files:
            raise ValueError(f"parameter {name!r} is in the source strategy but not in the destination strategy "
                             f"{self.dst.path}, so destination rank {rank} keeps source rank {global_rank}'s slice of "
                             f"it unchanged (as MindSpore does), but no checkpoint file of source rank {global_rank} "
                             f"was given")
        return key

    def _copied(self, rank: int) -> list[tuple[str, int]]:
        """``(name, source file rank)`` of every entry written to ``rank`` as it is in a source file."""
        ref = self._reference(rank)
        return [(n, ref) for n in self.extras(rank)] + [(n, self._kept_source(rank, n)) for n in self.kept]

    def output_bytes(self, rank: int) -> int:
        return sum(math.prod(dl.local_shape if dl is not None else self.source.layout(n).shape)
                   * np.dtype(self.source.dtype(n)).itemsize for n, dl in self.layouts[rank].items())

    def cost(self, rank: int) -> dict:
        """What writing ``rank`` reads and holds, from the plans alone (no tensor byte is read).

        ``files``: bytes read per source file (gaps the ranged reader coalesces included);
        ``over_read``: bytes read / bytes needed; ``peak_bytes``: the largest destination block,
        the read-ahead buffer (the second largest block, at most ``PREFETCH_BYTES``) and the
        reader's bounded staging buffer (ckpt output streams the blocks through these buffers).
        """
        files: dict[str, int] = {}
        needed = 0
        blocks = [0, 0]
        for name, dl in self.layouts[rank].items():
            plan = self.source.plan(name, dl, rank, self._hint(rank))
            item = np.dtype(self.source.dtype(name)).itemsize
            src = plan.src
            blocks.append(math.prod(plan.dst.local_shape) * item)
            for pc in plan.pieces:
                key = self.source.file_rank(name, pc.src)
                box = tuple((a - o, b - o) for (a, b), (o, _) in zip(pc.box, src.box(pc.src)))
                n = read_cost(src.local_shape, box, item)
                files[self.files[key]] = files.get(self.files[key], 0) + n
                needed += pc.size * item
        extras = sum(self.source.reader(r).entry(n).nbytes for n, r in self._copied(rank))
        read = sum(files.values())
        return {"rank": rank, "files": dict(sorted(files.items())), "bytes_read": read, "bytes_needed": needed,
                "over_read": read / needed if needed else 1.0, "bytes_written": self.output_bytes(rank) + extras,
                "peak_bytes": max(blocks) + min(sorted(blocks)[-2], PREFETCH_BYTES) + _READER_STAGING}

    def write(self, rank: int, path: PathLike, output_format: str = "ckpt") -> int:
        """Write destination ``rank`` to ``path`` (atomically); returns the bytes of tensor data."""
        lays = self.layouts[rank]
        copied = {n: self.source.reader(r) for n, r in self._copied(rank)}
        written = [0]

        def count(_name: str, n: int) -> None:
            written[0] += n

        if output_format == "safetensors":
            # Streamed in the file's data order: one block held at a time, as for .ckpt output.
            kept = {}
            for n, rd in copied.items():
                e = rd.entry(n)
                if not e.dtype.safetensors:  # str and Int4 records
                    log.warning("%s: %s record %r cannot be stored in safetensors; skipped", rd.path, e.dtype, n)
                    continue
                kept[n] = e
            specs = safetensors_order(
                [(n, np.dtype(self.source.dtype(n)), lay.local_shape if lay is not None else self.source.layout(n).shape)
                 for n, lay in lays.items()] + [(n, e.dtype.np, e.shape) for n, e in kept.items()])
            blocks = iter_blocks(self.source, [n for n, _, _ in specs if n in lays], lays, rank, self._hint(rank),
                                 count, reuse=True)
            write_safetensors_stream(path, specs, ((n, copied[n].read(n)) if n in kept else next(blocks)
                                                   for n, _, _ in specs))
        else:
            # write_ckpt is done with each block before asking for the next: one reused buffer.
            blocks = iter_blocks(self.source, list(lays), lays, rank, self._hint(rank), count, reuse=True)

            def items():
                yield from blocks
                for n, rd in copied.items():
                    e = rd.entry(n)
                    value = rd.read(n)
                    if e.dtype is mstype.qint4x2:
                        value = RawValue(e.dtype, e.shape, value)
                    yield n, value

            write_ckpt(path, items())
        return written[0]

    def close(self) -> None:
        self.source.close()


# ------------------------------------------------------------------------------ transform
def rank_list_for_transform(rank_id: int, src_strategy_file: Optional[str] = None,
                            dst_strategy_file: Optional[str] = None) -> list[int]:
    """Source ranks needed to build destination ``rank_id``, in descending order (MindSpore's order).

    >>> import os
    >>> s = os.path.join(os.environ.get("DISTINFER_MS_FIXTURES", "../shared/fixtures/mindspore"), "strategy")
    >>> rank_list_for_transform(0, f"{s}/seed_8dev.ckpt", f"{s}/dst_4dev.ckpt")  # doctest: +SKIP
    [2, 0]
    """
    if not isinstance(rank_id, int) or isinstance(rank_id, bool) or rank_id < 0:
        raise TypeError(f"For 'rank_list_for_transform', 'rank_id' must be a non-negative int, got {rank_id!r}")
    return rank_list(_strategy(src_strategy_file), _strategy(dst_strategy_file), rank_id)


def transform_checkpoint_by_rank(rank_id: int, checkpoint_files_map: Mapping[int, str], save_checkpoint_file_name: str,
                                 src_strategy_file: Optional[str] = None, dst_strategy_file: Optional[str] = None) -> None:
    """Write destination ``rank_id``'s checkpoint from the source files in ``checkpoint_files_map``.

    ``checkpoint_files_map`` is ``{source rank: path}`` and needs the ranks
    :func:`rank_list_for_transform` names; ``save_checkpoint_file_name`` must end with ``.ckpt``
    (or ``.safetensors``) and its directory must exist, as in MindSpore.

    With one pipeline stage's strategy file as the source (the per-sub-network mode of
    :func:`transform_checkpoints`) the map is keyed by the stage's local ranks (``rank_list_for_transform``
    gives those), e.g. ``{0: "rank_4/...", 1: "rank_5/..."}`` for stage 1 of 4 devices, and the
    output holds that stage's parameters: the ``_part<stage>`` file of that rank.

    >>> import tempfile, numpy as np
    >>> from distinfer.io import CkptFile, ParamLayout, StrategyFile, write_ckpt, write_strategy
    >>> d = tempfile.mkdtemp(); full = np.arange(8, dtype=np.float32).reshape(2, 4)
    >>> for r in range(2):  # training saved w's column blocks on 2 ranks
    ...     write_ckpt(f"{d}/rank{r}.ckpt", [("w", full[:, 2 * r:2 * r + 2])])
    >>> write_strategy(f"{d}/src_strategy.ckpt", StrategyFile(layouts={"w": ParamLayout([2], [-1, 0])}))
    >>> write_strategy(f"{d}/dst_strategy.ckpt", StrategyFile(layouts={"w": ParamLayout([2], [0, -1])}))  # rows
    >>> transform_checkpoint_by_rank(1, {r: f"{d}/rank{r}.ckpt" for r in range(2)}, f"{d}/dst1.ckpt",
    ...                              f"{d}/src_strategy.ckpt", f"{d}/dst_strategy.ckpt")
    >>> with CkptFile(f"{d}/dst1.ckpt") as f: print(f.read("w").tolist())
    [[4.0, 5.0, 6.0, 7.0]]
    >>> convert_checkpoint_by_rank is transform_checkpoint_by_rank  # MindSpore >= 2.4's name for it
    True
    """
    if not isinstance(checkpoint_files_map, Mapping):
        raise TypeError(f"For 'transform_checkpoint_by_rank', 'checkpoint_files_map' must be a dict, got "
                        f"{type(checkpoint_files_map).__name__}")
    if not _is_int(rank_id):
        raise TypeError(f"For 'transform_checkpoint_by_rank', 'rank_id' must be an int, got "
                        f"{type(rank_id).__name__} ({rank_id!r:.80})")
    for k, v in checkpoint_files_map.items():
        if not isinstance(k, int) or isinstance(k, bool) or k < 0:
            raise ValueError(f"For 'transform_checkpoint_by_rank', the key {k!r} of 'checkpoint_files_map' must "
                             f"be a non-negative int rank")
        if not isinstance(v, (str, os.PathLike)) or not os.path.isfile(v):
            raise ValueError(f"For 'transform_checkpoint_by_rank', the checkpoint file {v!r} of rank {k} does not "
                             f"exist")
    out = os.fspath(save_checkpoint_file_name)
    if not (out.endswith(".ckpt") or out.endswith(".safetensors")):
        raise ValueError(f"For 'transform_checkpoint_by_rank', 'save_checkpoint_file_name' must end with '.ckpt', "
                         f"got {out!r}")
    parent = os.path.dirname(os.path.abspath(out))
    if not os.path.isdir(parent):
        raise ValueError(f"For 'transform_checkpoint_by_rank', the directory {parent} of "
                         f"'save_checkpoint_file_name' does not exist")
    job = TransformJob(src_strategy_file, dst_strategy_file, checkpoint_files_map, [rank_id])
    try:
        job.write(rank_id, out, "safetensors" if out.endswith(".safetensors") else "ckpt")
    finally:
        job.close()


def _trailing_numbers(path: str) -> tuple[int, ...]:
    nums = re.findall(r"\d+", os.path.basename(path))
    return tuple(int(n) for n in nums[-2:])


def _pick_one(d: str, ext: str, file_suffix: Optional[str], api: str) -> Optional[str]:
    """The file of one rank directory among ``*.{ext}`` (None if there is none).

    ``.ckpt`` without ``file_suffix``: the lexicographically last (MindSpore's transform);
    ``.safetensors``: the largest last two numbers in the name. With ``file_suffix``: the files
    ending with ``{file_suffix}.{ext}``, the shortest name if several (ValueError on a tie).
    """
    found = glob.glob(os.path.join(glob.escape(d), f"*{glob.escape(file_suffix or '')}.{ext}"))
    if not found:
        return None
    if file_suffix is not None and len(found) > 1:
        shortest = min(len(os.path.basename(p)) for p in found)
        best = sorted(p for p in found if len(os.path.basename(p)) == shortest)
        if len(best) > 1:
            raise ValueError(f"For '{api}', several .{ext} files in {d} end with {file_suffix!r}: "
                             f"{[os.path.basename(p) for p in best]}; set 'file_suffix' to a longer common suffix")
        return best[0]
    if ext == "ckpt":
        return sorted(found)[-1]
    return max(found, key=lambda p: (_trailing_numbers(p), p))


def _pick_rank_files(src_dir: str, ranks: Union[int, Iterable[int]], api: str = "transform_checkpoints",
                     file_suffix: Optional[str] = None) -> dict[int, str]:
    """MindSpore's input selection: ``{rank: file}`` from ``src_dir/rank_<r>/`` for each of ``ranks``.

    ``ranks`` is a device count (ranks ``0 .. n-1``) or the ranks themselves. Each directory
    must hold ``.ckpt`` or ``.safetensors`` files (see :func:`_pick_one` for which one is used),
    and all the ranks one kind.
    """
    rank_ids = list(range(ranks)) if isinstance(ranks, int) else list(ranks)
    files: dict[int, str] = {}
    kinds: set[str] = set()
    for r in rank_ids:
        d = os.path.join(src_dir, f"rank_{r}")
        if not os.path.isdir(d):
            raise ValueError(f"For '{api}', the source directory {src_dir} has no rank_{r} sub-directory, but "
                             f"the source strategy needs rank {r} (ranks {rank_ids[0]}..{rank_ids[-1]})")
        for ext in ("ckpt", "safetensors"):
            f = _pick_one(d, ext, file_suffix, api)
            if f is not None:
                files[r] = f
                kinds.add(ext)
                break
        else:
            what = f" ending with {file_suffix!r}" if file_suffix is not None else ""
            raise ValueError(f"For '{api}', {d} holds no .ckpt or .safetensors file{what}")
    if len(kinds) > 1:
        raise ValueError(f"For '{api}', {src_dir} mixes .ckpt and .safetensors rank files; use one kind")
    return files


def plan_transform(src_checkpoints_dir: Optional[str], src_strategy_file: Optional[str],
                   dst_strategy_file: Optional[str], files: Optional[Mapping[int, str]] = None) -> TransformJob:
    """A validated :class:`TransformJob` for all destination ranks (nothing is written).

    >>> import os, tempfile, numpy as np
    >>> from distinfer.io import ParamLayout, StrategyFile, write_ckpt, write_strategy
    >>> d = tempfile.mkdtemp(); full = np.arange(8, dtype=np.float32).reshape(2, 4)
    >>> for r in range(2):  # training saved w's column blocks in src/rank_0 and src/rank_1
    ...     os.makedirs(f"{d}/src/rank_{r}")
    ...     write_ckpt(f"{d}/src/rank_{r}/net.ckpt", [("w", full[:, 2 * r:2 * r + 2])])
    >>> write_strategy(f"{d}/src_strategy.ckpt", StrategyFile(layouts={"w": ParamLayout([2], [-1, 0])}))
    >>> write_strategy(f"{d}/dst_strategy.ckpt", StrategyFile(layouts={"w": ParamLayout([2], [0, -1])}))  # rows
    >>> job = plan_transform(f"{d}/src", f"{d}/src_strategy.ckpt", f"{d}/dst_strategy.ckpt")
    >>> sorted(job.layouts), job.layouts[1]["w"].local_shape, job.cost(1)["bytes_read"]  # rank 1 reads 2 x 8 bytes
    ([0, 1], (1, 4), 16)
    >>> job.close()
    """
    src = _strategy(src_strategy_file)
    dst = _strategy(dst_strategy_file)
    if files is None:
        n_src = src.device_num if src is not None and len(src) else 1
        files = _pick_rank_files(os.fspath(src_checkpoints_dir), n_src)
    n_dst = dst.device_num if dst is not None else 1
    return TransformJob(src_strategy_file, dst_strategy_file, files, list(range(n_dst)))


# Spawned workers rebuild the job from paths (no user data is pickled).
_WORKER_JOB: Optional[TransformJob] = None


def _worker_init(src_strategy: Optional[str], dst_strategy: Optional[str], files: dict[int, str],
                 ranks: list[int]) -> None:
    global _WORKER_JOB
    _WORKER_JOB = TransformJob(src_strategy, dst_strategy, files, ranks)


def _worker_write(rank: int, path: str, output_format: str) -> tuple[int, int]:
    assert _WORKER_JOB is not None
    return rank, _WORKER_JOB.write(rank, path, output_format)


_NOT_MODEL = ("accu_grads", "adam_v", "adam_m")


def _source_stage(src_strategy_file: Optional[PathLike], dst_strategy_file: Optional[PathLike]) -> Optional[int]:
    """The pipeline stage of a per-sub-network transform (spec §7), or None for an ordinary one.

    MindSpore's condition: both strategies are given, neither has more than one stage, and the
    source's parameters (``accu_grads*``, ``adam_v*``, ``adam_m*`` aside) are a strict subset of
    the destination's. The stage is the one recorded in the source strategy file's first
    operator strategy item (a per-stage file written by pipeline training records its stage).
    """
    src, dst = _strategy(src_strategy_file), _strategy(dst_strategy_file)
    if src is None or dst is None or not len(src) or not len(dst) or src.num_stages != 1 or dst.num_stages != 1:
        return None
    src_keys = {n for n in src.names() if not n.startswith(_NOT_MODEL)}
    dst_keys = {n for n in dst.names() if not n.startswith(_NOT_MODEL)}
    if not src_keys < dst_keys:
        return None
    items = read_strategy(os.fspath(src_strategy_file)).items
    if not items:
        raise ValueError(f"For 'transform_checkpoints', the parameters of the source strategy {src.path} are a strict "
                         f"subset of the destination strategy's ({len(src_keys)} of {len(dst_keys)}), so it is taken "
                         f"as one pipeline stage's strategy file, but it has no operator strategy items recording "
                         f"which stage")
    return int(next(iter(items.values()))[0])


def transform_checkpoints(src_checkpoints_dir: str, dst_checkpoints_dir: str, ckpt_prefix: str,
                          src_strategy_file: Optional[str] = None, dst_strategy_file: Optional[str] = None,
                          process_num: int = 1, output_format: str = "ckpt", *,
                          split_among_ranks: bool = False) -> None:
    """Reshard every rank of ``src_checkpoints_dir`` to the destination strategy (MindSpore 2.10 semantics).

    Input ``src_dir/rank_<r>/*.ckpt`` (lexicographically last file of each rank; or
    ``*.safetensors``, largest trailing numbers), output
    ``dst_dir/rank_<r>/{ckpt_prefix}{r}.ckpt`` (``.safetensors`` with ``output_format``).
    ``dst_strategy_file=None`` merges to one full checkpoint (rank 0). Entries not in the
    strategy (``global_step``...) are copied from source rank ``r % source devices``. All
    validation runs before the first file is written.

    As in MindSpore the call is not collective: whoever calls it writes every destination rank
    (one rank of an ``mpirun`` job may call it alone), ``process_num`` spawned processes sharing the
    work. Several ranks calling it at once each write every file; the writes are atomic, so the
    files are whole whichever finishes last. ``split_among_ranks=True`` (distinfer's option)
    divides the destination ranks among the MPI ranks instead: then every rank of the job must call
    it, and it returns when all files are written.

    **Per-sub-network mode** (MindSpore's ``_transform_checkpoint_by_stage``): when both
    strategies have one stage and the source strategy's parameters are a strict subset of the
    destination's, the source strategy is taken as the per-stage strategy file of pipeline stage
    ``s`` of a training run (``s`` is the stage its operator strategy items record). Its files
    are then read from ``src_dir/rank_<s*n + i>`` (``i < n``, the stage's devices, numbered as
    pipeline training numbers them) and written to
    ``dst_dir/rank_<r>/{ckpt_prefix}{r}_part{s}.ckpt``: call it once per stage with that stage's
    strategy file and the same directories, then read a rank with
    ``load_segmented_checkpoints(dst_dir/rank_<r>)``. (A non-pipeline source whose network lacks
    some destination parameters takes this path too, with stage 0, as in MindSpore.)

    >>> import os, tempfile, numpy as np
    >>> from distinfer.io import CkptFile, ParamLayout, StrategyFile, write_ckpt, write_strategy
    >>> d = tempfile.mkdtemp(); full = np.arange(8, dtype=np.float32).reshape(2, 4)
    >>> for r in range(2):  # training saved w's column blocks in src/rank_0 and src/rank_1
    ...     os.makedirs(f"{d}/src/rank_{r}")
    ...     write_ckpt(f"{d}/src/rank_{r}/net.ckpt", [("w", full[:, 2 * r:2 * r + 2])])
    >>> write_strategy(f"{d}/src_strategy.ckpt", StrategyFile(layouts={"w": ParamLayout([2], [-1, 0])}))
    >>> transform_checkpoints(f"{d}/src", f"{d}/dst", "full", f"{d}/src_strategy.ckpt")  # no dst strategy: merge
    >>> with CkptFile(f"{d}/dst/rank_0/full0.ckpt") as f: print(f.read("w").tolist())
    [[0.0, 1.0, 2.0, 3.0], [4.0, 5.0, 6.0, 7.0]]
    >>> convert_checkpoints is transform_checkpoints  # MindSpore >= 2.4's name for the same function
    True
    """
    if not isinstance(ckpt_prefix, str):
        raise TypeError(f"For 'transform_checkpoints', 'ckpt_prefix' must be a str, got {type(ckpt_prefix).__name__}")
    if output_format not in ("ckpt", "safetensors"):
        raise ValueError(f"For 'transform_checkpoints', 'output_format' must be 'ckpt' or 'safetensors', got "
                         f"{output_format!r}")
    if not isinstance(process_num, int) or isinstance(process_num, bool) or process_num < 1:
        raise ValueError(f"For 'transform_checkpoints', 'process_num' must be a positive int, got {process_num!r}")
    src_dir = os.fspath(src_checkpoints_dir)
    if not os.path.isdir(src_dir):
        raise ValueError(f"For 'transform_checkpoints', the source directory {src_dir} does not exist")
    stage = _source_stage(src_strategy_file, dst_strategy_file)
    suffix = ""
    if stage is None:
        job = plan_transform(src_dir, src_strategy_file, dst_strategy_file)
    else:
        n = TrainStrategy.from_file(src_strategy_file).stage_devices
        picked = _pick_rank_files(src_dir, range(stage * n, stage * n + n))
        log.info("transform_checkpoints: per-stage mode, pipeline stage %d (source ranks %d..%d)", stage, stage * n,
                 stage * n + n - 1)
        job = plan_transform(None, src_strategy_file, dst_strategy_file, {r - stage * n: p for r, p in picked.items()})
        suffix = f"_part{stage}"
    from ..communication import _backend

    world = _backend.world() if split_among_ranks and _backend.launched_size() > 1 else None
    ranks = sorted(job.layouts)
    if world is not None:
        ranks = ranks[world.rank::world.size]
    dst_dir = os.fspath(dst_checkpoints_dir)
    outputs = {r: os.path.join(dst_dir, f"rank_{r}", f"{ckpt_prefix}{r}{suffix}.{output_format}") for r in ranks}
    for p in outputs.values():
        os.makedirs(os.path.dirname(p), exist_ok=True)
    try:
        _run_jobs(job, outputs, output_format, process_num if world is None else 1)
    finally:
        job.close()
    if world is not None:
        world.barrier()


def _run_jobs(job: TransformJob, outputs: Mapping[int, str], output_format: str, process_num: int) -> None:
    from tqdm.auto import tqdm

    total = sum(job.output_bytes(r) for r in outputs)
    bar = tqdm(total=total, unit="B", unit_scale=True, desc="transform", disable=None, leave=False)
    try:
        if process_num <= 1 or len(outputs) <= 1:
            for r, p in outputs.items():
                bar.update(job.write(r, p, output_format))
            return
        ctx = get_context("spawn")
        with ProcessPoolExecutor(max_workers=min(process_num, len(outputs)), mp_context=ctx,
                                 initializer=_worker_init,
                                 initargs=(job.src_strategy_file, job.dst_strategy_file, dict(job.files),
                                           sorted(outputs))) as pool:
            futs = [pool.submit(_worker_write, r, p, output_format) for r, p in outputs.items()]
            for f in as_completed(futs):
                bar.update(f.result()[1])
    finally:
        bar.close()


# MindSpore >= 2.4 aliases.
convert_checkpoints = transform_checkpoints
convert_checkpoint_by_rank = transform_checkpoint_by_rank
rank_list_for_convert = rank_list_for_transform


# ------------------------------------------------------------------------------ merge
def merge_sliced_parameter(sliced_parameters: Sequence[Any], strategy: Optional[Mapping[str, Any]] = None):
    """Merge one slice per device (rank order, duplicates included) into the full Parameter.

    Without ``strategy`` the slices are concatenated on axis 0. With ``strategy`` (the output
    of ``build_searched_strategy``, or ``{name: ParamLayout}``) they are placed by the
    parameter's layout, optimizer shard included. bf16 slices give a float32 result, as in
    MindSpore.

    >>> import numpy as np, distinfer as ms
    >>> ps = [ms.Parameter(ms.Tensor(np.full((1, 2), i, np.float32)), name="w") for i in range(2)]
    >>> merge_sliced_parameter(ps).asnumpy().tolist()
    [[0.0, 0.0], [1.0, 1.0]]
    """
    from ..tensor import Parameter, Tensor

    if not isinstance(sliced_parameters, (list, tuple)):
        raise TypeError(f"For 'merge_sliced_parameter', 'sliced_parameters' must be a list of Parameter, got "
                        f"{type(sliced_parameters).__name__}")
    if not sliced_parameters:
        raise ValueError("For 'merge_sliced_parameter', 'sliced_parameters' must not be empty")
    if strategy and not isinstance(strategy, Mapping):
        raise TypeError(f"For 'merge_sliced_parameter', 'strategy' must be a dict, got {type(strategy).__name__}")
    for p in sliced_parameters:
        if not isinstance(p, Parameter):
            raise TypeError(f"For 'merge_sliced_parameter', every element must be a Parameter, got {type(p).__name__}")
    name = sliced_parameters[0].name
    arrays = [p.asnumpy() for p in sliced_parameters]
    for p, a in zip(sliced_parameters, arrays):
        if p.name != name:
            raise ValueError(f"For 'merge_sliced_parameter', all slices must have the same name, got {name!r} and "
                             f"{p.name!r}")
        if a.shape[1:] != arrays[0].shape[1:]:
            raise ValueError(f"For 'merge_sliced_parameter', slice shapes may differ only on axis 0, got "
                             f"{arrays[0].shape} and {a.shape} for {name!r}")
    dt = arrays[0].dtype
    out_dt = np.float32 if dt == mstype.bfloat16.np else dt
    if not strategy:  # None or empty: concatenate on axis 0, as MindSpore does
        full = np.concatenate([a.astype(out_dt, copy=False) for a in arrays], axis=0)
        return Parameter(Tensor(full), name=name, requires_grad=sliced_parameters[0].requires_grad)
    if name not in strategy:
        raise KeyError(f"For 'merge_sliced_parameter', the parameter {name!r} is not in the strategy")
    pl = strategy[name]
    if not isinstance(pl, ParamLayout):
        pl = _layout_from_pb(name, pl, "strategy")
    if pl.param_split_shape:
        if len(pl.param_split_shape) != len(arrays):
            raise ValueError(f"For 'merge_sliced_parameter', {name!r} has param_split_shape {pl.param_split_shape} "
                             f"but {len(arrays)} slices were given")
        full = np.concatenate([a.astype(out_dt, copy=False) for a in arrays], axis=0)
        return Parameter(Tensor(full), name=name, requires_grad=sliced_parameters[0].requires_grad)
    devices = math.prod(pl.dev_matrix)
    if len(arrays) != devices:
        raise ValueError(f"For 'merge_sliced_parameter', the length of 'sliced_parameters' should be equal to "
                         f"device_count. The length of 'sliced_parameters' is {len(arrays)}, but the device_count "
                         f"is {devices}.")
    shapes = {a.shape for a in arrays}
    if len(shapes) != 1:
        raise ValueError(f"For 'merge_sliced_parameter', the slices of {name!r} should be the same when slice "
                         f"manner is even, got shapes {sorted(shapes)}")
    src = pl.to_layout(infer_full_shape(pl, arrays[0].shape))
    dst = replicated(src.shape, 1)
    full = assemble(make_plan(src, dst), 0, lambda pc: arrays[pc.src][tuple(
        slice(a - o, b - o) for (a, b), (o, _) in zip(pc.box, src.box(pc.src)))], dtype=dt)
    return Parameter(Tensor(full.astype(out_dt, copy=False)), name=name,
                     requires_grad=sliced_parameters[0].requires_grad)


# ------------------------------------------------------------------------------ load
_PREDICT_MSG = ("For 'load_distributed_checkpoint', the value of 'predict_strategy' for {name!r} is invalid: the "
                "first four elements must be dev_matrix (list[int]), tensor_map (list[int]), param_split_shape "
                "(list[int]) and field_size (int, which value is 0), but got {value!r}")


def _is_int(v: Any) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, bool)


def _check_predict_strategy(predict_strategy: Any) -> Optional[dict]:
    if predict_strategy is None:
        return None
    if isinstance(predict_strategy, (str, os.PathLike)):
        sf = TrainStrategy.from_file(predict_strategy)
        return {n: p.layout for n, p in sf.params.items()}
    if not isinstance(predict_strategy, dict):
        raise TypeError(f"For 'load_distributed_checkpoint', 'predict_strategy' must be a dict or None, got "
                        f"{type(predict_strategy).__name__}")
    for name, value in predict_strategy.items():
        ok = isinstance(value, (list, tuple)) and len(value) >= 4
        if ok:
            dev, tm, split, fld = value[:4]
            ok = (isinstance(dev, list) and all(_is_int(v) for v in dev)
                  and isinstance(tm, list) and all(_is_int(v) or (isinstance(v, list) and all(_is_int(x) for x in v))
                                                   for v in tm)
                  and isinstance(split, list) and all(_is_int(v) for v in split)
                  and _is_int(fld) and fld == 0)
        if not ok:
            raise ValueError(_PREDICT_MSG.format(name=name, value=value))
    return predict_strategy


def _predict_layout(name: str, value: Any, shape: tuple[int, ...]) -> Layout:
    """The destination Layout of one predict_strategy entry for a tensor of full ``shape``."""
    if isinstance(value, ParamLayout):
        return value.to_layout(shape)
    dev, tm = value[0], [tuple(v) if isinstance(v, list) else v for v in value[1]]
    if len(value) > 6 and isinstance(value[6], (list, tuple)) and value[6] and tuple(value[6]) != shape:
        raise LayoutError(f"the predict strategy records full shape {tuple(value[6])} for {name!r} but the "
                          f"checkpoint's is {shape}: the predict strategy is for a different network")
    lay = Layout(tuple(dev), tuple(tm), shape)
    group = value[5] if len(value) > 5 else ""
    if group and shape:
        slice_shape = value[2]
        g = 0
        if isinstance(slice_shape, list) and len(slice_shape) == len(shape) and slice_shape[0]:
            g = lay.mp_shape[0] // int(slice_shape[0])
        if g <= 1:
            m = re.match(r"(\d+)-", str(group))
            if m:
                g = int(m.group(1))
            else:
                from ..communication import get_group_size

                g = get_group_size(group)
        if g > 1:
            lay = Layout(tuple(dev), tuple(tm), shape, g)
    return lay


def _check_files(checkpoint_filenames: Any, fmt: str) -> list[str]:
    if not isinstance(checkpoint_filenames, (list, tuple)):
        raise TypeError(f"For 'load_distributed_checkpoint', 'checkpoint_filenames' must be a list of file paths, got "
                        f"{type(checkpoint_filenames).__name__}")
    ext = ".safetensors" if fmt == "safetensors" else ".ckpt"
    out = []
    for i, f in enumerate(checkpoint_filenames):
        if not isinstance(f, (str, os.PathLike)) or not os.fspath(f).endswith(ext) or not os.path.isfile(f) \
                or os.path.getsize(f) == 0:
            raise ValueError(f"For 'load_distributed_checkpoint', please make sure the {f} at index {i} is a valid "
                             f"checkpoint file, it must be a string ending with '{ext}', and the checkpoint file it "
                             f"represents must exist and be non-empty.")
        out.append(os.fspath(f))
    return out


def load_distributed_checkpoint(network, checkpoint_filenames=None, predict_strategy=None,
                                train_strategy_filename=None, strict_load=False, dec_key=None, dec_mode="AES-GCM",
                                format="ckpt", unified_safetensors_dir=None, dst_safetensors_dir=None, rank_id=None,
                                output_format="safetensors", name_map=None, max_process_num=64,
                                return_param_dict=False):
    """Load per-rank checkpoints into ``network`` for its (predict) layout (MindSpore 2.10 semantics).

    ``checkpoint_filenames`` are one pipeline stage's rank files in rank order (their count must
    equal the training strategy's per-stage device count). With ``predict_strategy=None`` the
    full tensors are loaded; with a layout dict (``Model.infer_predict_layout``) each parameter
    gets this rank's block (``communication.get_rank()``, optimizer shard from element [5]).
    The training strategy comes from ``train_strategy_filename`` or
    ``strategy_ckpt_config["load_file"]``; an empty one makes this a silent no-op. Only the
    bytes of the needed blocks are read. Returns True, or ``{name: Parameter}`` with
    ``return_param_dict``.

    **Unified mode** (``format="safetensors", unified_safetensors_dir=DIR``, DIR written by
    :func:`~distinfer.parallel.unified_safetensors`): the full tensors in DIR are sliced for this
    rank (``get_rank()`` unless ``rank_id``) by ``predict_strategy`` (a layout dict or a strategy
    file) and loaded, with the hyper params; ``name_map`` maps network names to the names in DIR.
    With ``network=None`` and ``dst_safetensors_dir``, ``dst_safetensors_dir/rank_<r>/net.<output_format>``
    is written for ``rank_id``, or for every rank of ``predict_strategy`` (by up to
    ``max_process_num`` processes, or divided among the ranks of an ``mpirun`` job).
    ``checkpoint_filenames``, ``train_strategy_filename`` and ``dec_key`` must be None and
    ``strict_load`` False. Each rank reads only its blocks' bytes.

    >>> import os, tempfile, numpy as np
    >>> from distinfer.io import write_safetensors
    >>> d = tempfile.mkdtemp(); write_safetensors(f"{d}/part0.safetensors", {"w": np.arange(6.0).reshape(3, 2)})
    >>> got = load_distributed_checkpoint(None, predict_strategy={"w": [[2], [-1, 0], [], 0]}, format="safetensors",
    ...                                   unified_safetensors_dir=d, rank_id=1, return_param_dict=True)
    >>> got["w"].asnumpy().tolist()
    [[1.0], [3.0], [5.0]]
    """
    from .. import context
    from ..nn.cell import Cell
    from ..tensor import Parameter, Tensor

    if output_format not in ("ckpt", "safetensors"):
        raise ValueError(f"For 'load_distributed_checkpoint', 'format' and 'output_format' must be 'ckpt' or "
                         f"'safetensors', but got output_format={output_format!r}.")
    if network is not None and not isinstance(network, Cell):
        raise TypeError(f"For 'load_distributed_checkpoint', 'network' must be a Cell, got {type(network).__name__}")
    if dec_key is not None and not isinstance(dec_key, bytes):
        raise TypeError(f"For 'load_distributed_checkpoint', 'dec_key' must be None or bytes, got "
                        f"{type(dec_key).__name__}")
    if not isinstance(dec_mode, str):
        raise TypeError(f"For 'load_distributed_checkpoint', 'dec_mode' must be a str, got {type(dec_mode).__name__}")
    if unified_safetensors_dir is not None or dst_safetensors_dir is not None:
        return _load_unified_mode(network, checkpoint_filenames, predict_strategy, train_strategy_filename,
                                  strict_load, dec_key, dec_mode, format, unified_safetensors_dir,
                                  dst_safetensors_dir, rank_id, output_format, name_map, max_process_num,
                                  return_param_dict)
    if dec_key is not None:
        raise NotImplementedError("For 'load_distributed_checkpoint', encrypted checkpoints (dec_key) are not "
                                  "supported by distinfer")
    if format not in ("ckpt", "safetensors"):
        raise ValueError(f"For 'load_distributed_checkpoint', 'format' must be 'ckpt' or 'safetensors', got {format!r}")
    if network is None and not return_param_dict:
        raise TypeError("For 'load_distributed_checkpoint', 'network' must be a Cell (None is only allowed with "
                        "'unified_safetensors_dir', or with return_param_dict=True)")
    files = _check_files(checkpoint_filenames, format)
    predict = _check_predict_strategy(predict_strategy)
    if train_strategy_filename is None:
        cfg = context.get_auto_parallel_context("strategy_ckpt_config")
        train_strategy_filename = cfg.get("load_file") or None
    if train_strategy_filename is None:
        raise ValueError("For 'load_distributed_checkpoint', 'train_strategy_filename' is None and "
                         "strategy_ckpt_config['load_file'] is not set")
    train = TrainStrategy.from_file(train_strategy_filename)
    if not len(train):
        return {} if return_param_dict else True
    if len(files) != train.stage_devices:
        raise ValueError(f"For 'Load_distributed_checkpoint', the length of 'checkpoint_filenames' should be equal to "
                         f"the device count of training process. But got the length of 'checkpoint_filenames' is "
                         f"{len(files)} and the device count is {train.stage_devices}.")
    from ..communication import get_rank

    rank = get_rank() if rank_id is None else int(rank_id)
    source = SourceCheckpoint(train, dict(enumerate(files)), stage_local=True)
    try:
        source.open_all()
        net_params = list(network.parameters_and_names()) if network is not None else []
        if predict and net_params and not set(predict) & {n for n, _ in net_params}:
            raise ValueError(f"For 'load_distributed_checkpoint', no parameter of the network is in "
                             f"'predict_strategy' (it names {sorted(predict)[:4]}...): the predict strategy is for "
                             f"a different network")
        not_in_strategy = [n for n, _ in net_params if n not in train]
        not_in_ckpt: list[str] = []
        todo: list[tuple[str, Any, Optional[Layout]]] = []
        for name, param in net_params:
            if name not in train:
                continue
            src = source.layout(name)
            if src is None:
                not_in_ckpt.append(name)
                continue
            gshape = tuple(getattr(param, "global_shape", param.shape))
            if gshape != src.shape:
                raise ValueError(f"For 'load_distributed_checkpoint', the network parameter {name!r} has shape "
                                 f"{gshape} but the checkpoint files ({files[0]}, ...) under strategy "
                                 f"{train_strategy_filename} hold a tensor of shape {src.shape} (block "
                                 f"{src.local_shape})")
            dst = None
            if predict is not None and name in predict:
                try:
                    dst = _predict_layout(name, predict[name], src.shape)
                except LayoutError as exc:
                    raise ValueError(f"For 'load_distributed_checkpoint', parameter {name!r} of shape {src.shape} "
                                     f"cannot take its predict layout {list(predict[name][:2]) if isinstance(predict[name], (list, tuple)) else predict[name]}: {exc}") from None
            source.plan(name, dst, rank, rank % train.stage_devices)
            todo.append((name, param, dst))
        if not_in_strategy:
            log.warning("For 'load_distributed_checkpoint', %d parameters in network are not in the slice strategy, "
                        "they are not loaded: %s", len(not_in_strategy), not_in_strategy)
        if not_in_ckpt:
            log.warning("For 'load_distributed_checkpoint', %d parameters in network and slice strategy but not in "
                        "the checkpoint file, they are not loaded: %s", len(not_in_ckpt), not_in_ckpt)
        if strict_load and (not_in_strategy or not_in_ckpt):
            raise RuntimeError(f"For 'load_distributed_checkpoint', strict_load=True but these network parameters "
                               f"cannot be loaded: not in the slice strategy {not_in_strategy}, not in the "
                               f"checkpoint files {not_in_ckpt}")
        blocks = _read_into_arena(source, [(name, dst) for name, _, dst in todo], rank, rank % train.stage_devices)
        param_dict: dict[str, Any] = {name: Parameter(Tensor(block), name=name)
                                      for (name, _, _), block in zip(todo, blocks)}
    finally:
        source.close()
    if return_param_dict:
        return param_dict
    if network is not None and param_dict:
        _load_into(network, param_dict, strict_load)
    return True


def _load_unified_mode(network, checkpoint_filenames, predict_strategy, train_strategy_filename, strict_load, dec_key,
                       dec_mode, format, unified_safetensors_dir, dst_safetensors_dir, rank_id, output_format,
                       name_map, max_process_num, return_param_dict):
    """Check the arguments of the unified mode as MindSpore does, then run it (:mod:`.unified`)."""
    api = "For 'load_distributed_checkpoint'"
    if format != "safetensors":
        raise ValueError(f"{api}, 'format' must be 'safetensors' when 'unified_safetensors_dir' or "
                         f"'dst_safetensors_dir' is given, but got {format!r}.")
    if output_format not in ("ckpt", "safetensors"):
        raise ValueError(f"{api}, 'format' and 'output_format' must be 'ckpt' or 'safetensors', but got "
                         f"{output_format!r}.")
    if unified_safetensors_dir is None:
        raise ValueError(f"{api}, 'unified_safetensors_dir' can not be None when format is 'safetensors' and "
                         f"'dst_safetensors_dir' is given.")
    for arg, value in (("checkpoint_filenames", checkpoint_filenames),
                       ("train_strategy_filename", train_strategy_filename), ("dec_key", dec_key)):
        if value is not None:
            raise ValueError(f"{api}, '{arg}' must be None when 'unified_safetensors_dir' is given (format "
                             f"'safetensors'), but got a {type(value).__name__}.")
    if strict_load or dec_mode != "AES-GCM":
        raise ValueError(f"{api}, strict_load and dec_mode must be default when format is 'safetensors'.")
    if not isinstance(unified_safetensors_dir, (str, os.PathLike)):
        raise TypeError(f"{api}, 'unified_safetensors_dir' must be a str path, got "
                        f"{type(unified_safetensors_dir).__name__}")
    if name_map is not None and (not isinstance(name_map, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in name_map.items())):
        raise TypeError(f"{api}, 'name_map' must be a dict of str to str, got {type(name_map).__name__}")
    if rank_id is not None and (not _is_int(rank_id) or rank_id < 0):
        raise ValueError(f"{api}, 'rank_id' must be None or a non-negative int, got {rank_id!r}")
    if not isinstance(max_process_num, int) or isinstance(max_process_num, bool) or max_process_num < 1:
        raise ValueError(f"{api}, 'max_process_num' must be a positive int, got {max_process_num!r}")
    if network is None:
        if dst_safetensors_dir is None and not return_param_dict:
            raise ValueError(f"{api}, 'dst_safetensors_dir' can not be None when network is None.")
        if dst_safetensors_dir is not None and not isinstance(dst_safetensors_dir, (str, os.PathLike)):
            raise TypeError(f"{api}, 'dst_safetensors_dir' must be a str path, got "
                            f"{type(dst_safetensors_dir).__name__}")
    from .unified import load_unified

    return load_unified(network, unified_safetensors_dir, predict_strategy, dst_safetensors_dir, rank_id,
                        output_format, name_map, max_process_num, return_param_dict)


def _read_into_arena(source: Any, jobs: Sequence[tuple[str, Optional[Layout]]], rank: int,
                     hint: int) -> list[np.ndarray]:
    """Read each ``(name, destination layout or None)`` block of ``rank`` from ``source``; the blocks, in order.

    All blocks live in one allocation: a big numpy allocation gets transparent huge pages, and
    first-touch page faults of many small 4 KiB-page allocations cost more than the reads
    themselves (~2 GB/s vs ~10 GB/s here). Each block is an aligned view of it. ``source`` is a
    :class:`SourceCheckpoint` (or anything with its ``layout``/``dtype``/``read_block``).
    """
    shapes = []
    for name, dst in jobs:
        shape = dst.local_shape if dst is not None else source.layout(name).shape
        dt = np.dtype(source.dtype(name))
        shapes.append((shape, dt, -(-math.prod(shape) * dt.itemsize // 64) * 64))
    arena = np.empty(sum(n for _, _, n in shapes), np.uint8)
    pos = 0
    reads = []
    for (name, dst), (shape, dt, n) in zip(jobs, shapes):
        reads.append((name, dst, arena[pos: pos + math.prod(shape) * dt.itemsize].view(dt).reshape(shape)))
        pos += n
    read_blocks(source, reads, rank, hint)
    return [out for _, _, out in reads]


def _load_into(network, param_dict: dict, strict_load: bool) -> None:
    try:
        from ..serialization import load_param_into_net
    except ImportError:
        load_param_into_net = None
    if load_param_into_net is not None:
        # The blocks are this call's own (nothing else refers to them): the net adopts them
        # instead of copying each one again.
        load_param_into_net(network, param_dict, strict_load=strict_load, _donate=True)
        return
    params = dict(network.parameters_and_names())
    for name, value in param_dict.items():
        params[name].set_data(value)
