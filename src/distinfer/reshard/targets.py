"""Targets: what each destination gets, from a destination strategy, a predict strategy or a unified layout.

* destination layouts: a destination strategy file (:func:`dst_layout`), or a predict-strategy
  dict as ``Model.infer_predict_layout`` returns it (:func:`check_predict_strategy`,
  :func:`predict_layout`);
* the output sets :func:`~.writing.fan_out` writes, each saying what every output file holds
  (:class:`~.writing.OutputFile`), with every read planned and every check run when it is built,
  before anything is written:

  - :class:`TransformJob`: per destination rank of ``transform_checkpoints`` (and its read cost);
  - :class:`UnifyPlan`: the ``part*.safetensors`` files of ``unified_safetensors``;
  - :class:`SliceJob`: per destination rank of a unified directory (``load_distributed_checkpoint``
    with ``unified_safetensors_dir``).

>>> predict_layout("w", [[2, 2], [1, -1], [], 0, True, ""], (8, 4))
Layout(dev_matrix=[2, 2], tensor_map=[1, -1], shape=[8, 4])
"""
from __future__ import annotations

import json
import logging
import math
import os
import re
from dataclasses import dataclass, field, fields
from typing import Any, Callable, Iterable, Mapping, Optional, Sequence, Union

import numpy as np

from ..errors import LayoutError, StrategyError
from ..io.ranged import read_cost, staging_limit
from ..io.safetensors_io import safetensors_order
from ..io.strategy_file import ParamLayout, read_strategy
from ..layout import Layout
from .discovery import pick_rank_files
from .planning import TrainStrategy
from .sources import (PREFETCH_BYTES, RoutedSource, SourceCheckpoint, UnifiedCheckpoint, block_shape, file_box,
                      open_source)
from .writing import OutputFile, safetensors_storable

__all__ = ["is_int", "check_predict_strategy", "predict_layout", "predict_value_text", "dst_layout", "strategy_or_none",
           "TransformJob", "plan_transform", "source_stage", "UnifyPlan", "plan_unify", "split_range", "SPLIT_BYTES",
           "SliceJob"]

log = logging.getLogger(__name__)

PathLike = Union[str, os.PathLike]

#: Target size of one ``part{i}.safetensors`` (MindSpore: 3 GiB). A module attribute so that
#: tests can make it small.
SPLIT_BYTES = 3 * 1024 ** 3


# ------------------------------------------------------------------------------ destination layouts
_PREDICT_MSG = ("For 'load_distributed_checkpoint', the value of 'predict_strategy' for {name!r} is invalid: the "
                "first four elements must be dev_matrix (list[int]), tensor_map (list[int]), param_split_shape "
                "(list[int]) and field_size (int, which value is 0), but got {value!r}")


def is_int(v: Any) -> bool:
    """An int (numpy's included) that is not a bool."""
    return isinstance(v, (int, np.integer)) and not isinstance(v, bool)


def strategy_or_none(path: Optional[PathLike]) -> Optional[TrainStrategy]:
    """The strategy file ``path`` (None: no strategy); TypeError for a path that is not one."""
    if path is None:
        return None
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"a strategy file must be a str path, got {type(path).__name__}")
    return TrainStrategy.from_file(path)


def check_predict_strategy(predict_strategy: Any) -> Optional[dict]:
    """A predict strategy checked as MindSpore checks it: None, a strategy file, or a layout dict.

    >>> check_predict_strategy({"w": [[2], [0, -1], [], 0]})
    {'w': [[2], [0, -1], [], 0]}
    """
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
            ok = (isinstance(dev, list) and all(is_int(v) for v in dev)
                  and isinstance(tm, list) and all(is_int(v) or (isinstance(v, list) and all(is_int(x) for x in v))
                                                   for v in tm)
                  and isinstance(split, list) and all(is_int(v) for v in split)
                  and is_int(fld) and fld == 0)
        if not ok:
            raise ValueError(_PREDICT_MSG.format(name=name, value=value))
    return predict_strategy


def predict_layout(name: str, value: Any, shape: tuple[int, ...]) -> Layout:
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


def predict_value_text(value: Any) -> Any:
    """A predict-strategy entry as error messages show it: its device matrix and tensor map."""
    return list(value[:2]) if isinstance(value, (list, tuple)) else value


def dst_layout(dst: Optional[TrainStrategy], name: str, shape: tuple[int, ...],
               rank: int) -> tuple[bool, Optional[Layout]]:
    """(write it?, layout or None for the full tensor) of ``name`` on destination ``rank``."""
    if dst is None:
        return True, None
    if not dst.holds(name, rank):
        return False, None
    return True, dst.layout(name, shape)


# ------------------------------------------------------------------------------ transform_checkpoints
class TransformJob:
    """A validated transform: source files and strategies, and what each destination rank gets.

    Building one opens (indexes) every source file and plans every destination rank, so all
    errors surface before anything is written. :meth:`file` says what destination ``rank``'s
    file holds (:func:`~.writing.write_file` writes it), :meth:`cost` what writing it reads.

    >>> import os, tempfile, numpy as np
    >>> from distinfer.io import ParamLayout, StrategyFile, write_ckpt, write_strategy
    >>> from distinfer.reshard.writing import write_file
    >>> d = tempfile.mkdtemp(); full = np.arange(8, dtype=np.float32).reshape(2, 4)
    >>> for r in range(2):  # training saved w's column blocks on 2 ranks, and a global_step
    ...     write_ckpt(f"{d}/rank{r}.ckpt", [("w", full[:, 2 * r:2 * r + 2]), ("global_step", 5)])
    >>> write_strategy(f"{d}/src_strategy.ckpt", StrategyFile(layouts={"w": ParamLayout([2], [-1, 0])}))
    >>> job = TransformJob(f"{d}/src_strategy.ckpt", None, {r: f"{d}/rank{r}.ckpt" for r in range(2)}, [0])
    >>> job.params, job.extras(0), write_file(job.file(0), f"{d}/full.ckpt")  # no destination strategy: the full tensor
    (['w'], ['global_step'], 32)
    >>> job.close()
    """

    def __init__(self, src_strategy: Optional[PathLike], dst_strategy: Optional[PathLike],
                 files: Mapping[int, PathLike], dst_ranks: Sequence[int]) -> None:
        self.src_strategy_file = None if src_strategy is None else os.fspath(src_strategy)
        self.dst_strategy_file = None if dst_strategy is None else os.fspath(dst_strategy)
        self.src = strategy_or_none(src_strategy)
        if self.src is not None and not len(self.src):
            self.src = None  # an empty source strategy: the files are unsliced
        self.dst = strategy_or_none(dst_strategy)
        self.files = {int(r): os.fspath(p) for r, p in files.items()}
        if not self.files:
            raise ValueError("no source checkpoint files were given")
        self.dst_devices = self.dst.device_num if self.dst is not None else 1
        for r in dst_ranks:
            if not 0 <= r < self.dst_devices:
                raise ValueError(f"Rank {r} is not in the current stage! (the destination has {self.dst_devices} "
                                 f"devices)")
        self.source = open_source(self.src, self.files)
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
        self.layouts: dict[int, dict[str, Optional[Layout]]] = {r: self._plan_rank(r) for r in dst_ranks}

    def _plan_rank(self, rank: int) -> dict[str, Optional[Layout]]:
        """Destination ``rank``'s layouts, every read planned (so that every piece has a readable source)."""
        lay: dict[str, Optional[Layout]] = {}
        for name in self.params:
            shape = self.source.layout(name).shape
            ok, dl = dst_layout(self.dst, name, shape, rank)
            if not ok:
                continue
            recorded = self.dst.param_layout(name).tensor_shape if dl is not None else None
            if recorded is not None and tuple(recorded) != shape:
                raise StrategyError(
                    f"{self.dst.path}: parameter {name!r} has tensor_shape {tuple(recorded)} but the source "
                    f"checkpoint's is {shape}: the destination strategy is for a different network")
            lay[name] = dl
            self.source.plan(name, dl, rank, self.hint(rank))
        self._copied(rank)  # every copied entry and kept slice has its source file
        return lay

    def hint(self, rank: int) -> int:
        """Destination ``rank`` in the source's terms (its rank within a source stage)."""
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
        return sum(math.prod(block_shape(self.source, n, dl)) * np.dtype(self.source.dtype(n)).itemsize
                   for n, dl in self.layouts[rank].items())

    size = output_bytes

    def file(self, rank: int) -> OutputFile:
        """Destination ``rank``'s file: its blocks in source-strategy order, then the copied entries."""
        return OutputFile(self.source, tuple((n, n, dl) for n, dl in self.layouts[rank].items()), rank,
                          self.hint(rank), tuple((n, self.source.reader(r)) for n, r in self._copied(rank)))

    def rebuild(self, keys: Sequence[int]) -> tuple[Callable[..., "TransformJob"], tuple]:
        """Spawned workers rebuild the job from paths (no user data is pickled)."""
        return TransformJob, (self.src_strategy_file, self.dst_strategy_file, dict(self.files), sorted(keys))

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
            plan = self.source.plan(name, dl, rank, self.hint(rank))
            item = np.dtype(self.source.dtype(name)).itemsize
            blocks.append(math.prod(plan.dst.local_shape) * item)
            for pc in plan.pieces:
                path = self.files[self.source.file_rank(name, pc.src)]
                files[path] = files.get(path, 0) + read_cost(plan.src.local_shape, file_box(pc, plan.src), item)
                needed += pc.size * item
        extras = sum(self.source.reader(r).entry(n).nbytes for n, r in self._copied(rank))
        read = sum(files.values())
        return {"rank": rank, "files": dict(sorted(files.items())), "bytes_read": read, "bytes_needed": needed,
                "over_read": read / needed if needed else 1.0, "bytes_written": self.output_bytes(rank) + extras,
                "peak_bytes": max(blocks) + min(sorted(blocks)[-2], PREFETCH_BYTES) + staging_limit()}

    def close(self) -> None:
        self.source.close()


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
    src = strategy_or_none(src_strategy_file)
    dst = strategy_or_none(dst_strategy_file)
    if files is None:
        n_src = src.device_num if src is not None and len(src) else 1
        files = pick_rank_files(os.fspath(src_checkpoints_dir), n_src)
    n_dst = dst.device_num if dst is not None else 1
    return TransformJob(src_strategy_file, dst_strategy_file, files, list(range(n_dst)))


_NOT_MODEL = ("accu_grads", "adam_v", "adam_m")


def source_stage(src_strategy_file: Optional[PathLike], dst_strategy_file: Optional[PathLike]) -> Optional[int]:
    """The pipeline stage of a per-sub-network transform (spec §7), or None for an ordinary one.

    MindSpore's condition: both strategies are given, neither has more than one stage, and the
    source's parameters (``accu_grads*``, ``adam_v*``, ``adam_m*`` aside) are a strict subset of
    the destination's. The stage is the one recorded in the source strategy file's first
    operator strategy item (a per-stage file written by pipeline training records its stage).
    """
    src, dst = strategy_or_none(src_strategy_file), strategy_or_none(dst_strategy_file)
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


# ------------------------------------------------------------------------------ unified_safetensors
@dataclass
class UnifyPlan:
    """What ``unified_safetensors`` writes, as plain data (spawned workers rebuild it from JSON).

    Part ``k`` holds the full tensors ``parts[k]`` (``(name in the rank files, name written)``).
    """

    strategy_file: str
    files: dict[int, str]
    #: name -> ranks whose files hold it (remove_redundancy sources); None: every file holds its stage's names
    holders: Optional[dict[str, list[int]]]
    parts: list[list[tuple[str, str]]]
    total_size: int
    #: tensor bytes of each part
    part_bytes: list[int] = field(default_factory=list)
    #: entries of the first rank file that are not in the strategy (``hyper_param.safetensors``)
    hyper: list[str] = field(default_factory=list)
    _opened: Optional[RoutedSource] = field(default=None, init=False, repr=False, compare=False)

    def source(self) -> RoutedSource:
        """The rank files as one source set, each name routed to the files that hold it."""
        strategy = TrainStrategy.from_file(self.strategy_file)
        names = [src for part in self.parts for src, _ in part]
        if self.holders is None:
            sc = SourceCheckpoint(strategy, self.files)
            return RoutedSource({n: sc for n in names})
        by_ranks: dict[tuple[int, ...], SourceCheckpoint] = {}
        routes = {}
        for n in names:
            key = tuple(sorted(self.holders[n]))
            if key not in by_ranks:
                by_ranks[key] = SourceCheckpoint(strategy, {r: self.files[r] for r in key})
            routes[n] = by_ranks[key]
        return RoutedSource(routes)

    def opened(self) -> RoutedSource:
        """The source set the part files are read from (opened once, closed by :meth:`close`)."""
        if self._opened is None:
            self._opened = self.source()
        return self._opened

    def file(self, k: int) -> OutputFile:
        """Part ``k``: its full tensors, in :func:`~distinfer.io.safetensors_order`."""
        source = self.opened()
        written = {out: src for src, out in self.parts[k]}
        specs = safetensors_order((out, np.dtype(source.dtype(src)), source.layout(src).shape)
                                  for src, out in self.parts[k])
        return OutputFile(source, tuple((out, written[out], None) for out, _, _ in specs))

    def size(self, k: int) -> int:
        return self.part_bytes[k]

    def weight_map(self) -> dict[str, str]:
        return {out: f"part{k}.safetensors" for k, part in enumerate(self.parts) for _, out in part}

    def rebuild(self, keys: Sequence[int]) -> tuple[Callable[..., "UnifyPlan"], tuple]:
        return UnifyPlan.from_json, (self.to_json(),)

    def to_json(self) -> str:
        return json.dumps({f.name: getattr(self, f.name) for f in fields(self) if f.init})

    @classmethod
    def from_json(cls, text: str) -> "UnifyPlan":
        obj = json.loads(text)
        obj["files"] = {int(r): p for r, p in obj["files"].items()}
        obj["parts"] = [[tuple(x) for x in part] for part in obj["parts"]]
        return cls(**obj)

    def close(self) -> None:
        if self._opened is not None:
            self._opened.close()
            self._opened = None


def _choice(choice_func: Optional[Callable[[str], Any]], name: str) -> Optional[str]:
    """MindSpore's choice_func: False drops ``name``, True keeps it, a str renames it."""
    if choice_func is None:
        return name
    out = choice_func(name)
    if isinstance(out, (bool, np.bool_)):
        return name if out else None
    if isinstance(out, str):
        return out
    raise ValueError(f"For 'unified_safetensors', the return value type of the function 'choice_func' must be bool "
                     f"or str, but got {type(out)} for {name!r}.")


def _bin_pack(sizes: Sequence[int], groups: int) -> list[list[int]]:
    """MindSpore's split: largest first (ties in the given order) into the lightest group (lowest index on ties)."""
    bins: list[list[int]] = [[] for _ in range(groups)]
    totals = [0] * groups
    for i in sorted(range(len(sizes)), key=lambda j: -sizes[j]):
        k = totals.index(min(totals))
        bins[k].append(i)
        totals[k] += sizes[i]
    return bins


def split_range(split_dst_file: Sequence[int], parts: int) -> range:
    """The parts of task ``split_dst_file = (current, total)`` (1-based), as MindSpore divides them.

    >>> list(split_range((1, 2), 3)), list(split_range((2, 2), 3))
    ([0, 1], [2])
    """
    current, total = split_dst_file
    avg, rem = divmod(parts, total)
    start = avg * (current - 1) + min(current - 1, rem)
    return range(start, start + avg + (1 if current <= rem else 0))


def _choose_names(strategy: TrainStrategy, present: set[str], choice_func: Optional[Callable[[str], Any]],
                  where: str) -> list[tuple[str, str]]:
    """``(name in the rank files, name written)`` of every strategy parameter that is merged."""
    chosen: list[tuple[str, str]] = []
    for name in strategy.names():
        if name not in present:
            log.info("%s: %s is in the strategy but in no rank file; skipped", where, name)
            continue
        if name.startswith("accu_grads"):
            continue
        out = _choice(choice_func, name)
        if out is not None:
            chosen.append((name, out))
    first: dict[str, str] = {}  # name written -> the first parameter written under it
    for name, out in chosen:
        if first.setdefault(out, name) != name:
            raise ValueError(f"For 'unified_safetensors', 'choice_func' names both {first[out]!r} and {name!r} "
                             f"{out!r}")
    return chosen


def _with_redundancy(requested: bool, flags: set) -> bool:
    """Whether the rank files hold every replica: a file's ``remove_redundancy`` metadata overrides the argument."""
    if requested and "True" in flags:
        log.warning("For 'unified_safetensors', the safetensors files are deduplicated (remove_redundancy), "
                    "but merge_with_redundancy is True; merging them as deduplicated files")
        return False
    if not requested and flags == {"False"}:
        log.warning("For 'unified_safetensors', the safetensors files are not deduplicated, but "
                    "merge_with_redundancy is False; merging them as complete files")
        return True
    return requested


def plan_unify(src_dir: str, src_strategy_file: str, merge_with_redundancy: bool, file_suffix: Optional[str],
               choice_func: Optional[Callable[[str], Any]]) -> UnifyPlan:
    """Validate the sources and decide which tensor goes into which part (nothing is written)."""
    strategy = TrainStrategy.from_file(src_strategy_file)
    if not len(strategy):
        raise ValueError(f"For 'unified_safetensors', the strategy file {src_strategy_file} has no parameter layouts")
    files = pick_rank_files(src_dir, range(strategy.device_num), "unified_safetensors", file_suffix)
    with open_source(strategy, files) as probe:
        names_of = {r: set(probe.reader(r).names()) for r in files}
        merge_with_redundancy = _with_redundancy(
            merge_with_redundancy, {getattr(probe.reader(r), "metadata", {}).get("remove_redundancy") for r in files})
        chosen = _choose_names(strategy, set().union(*names_of.values()), choice_func, src_strategy_file)
        if not chosen:
            raise ValueError(f"For 'unified_safetensors', no parameter of the strategy {src_strategy_file} is left to "
                             f"merge from the files in {src_dir}")
        holders = None
        if not merge_with_redundancy:
            holders = {n: sorted(r for r in files if n in names_of[r]) for n, _ in chosen}
        ref = probe.reader(min(files))
        hyper = [n for n in ref.names() if n not in strategy and safetensors_storable(ref, n)]
    plan = UnifyPlan(os.fspath(src_strategy_file), files, holders, [list(chosen)], 0, hyper=hyper)
    # Every tensor's full shape (blocks checked against the strategy) and read plan, before any write.
    with plan.source() as source:
        sizes = []
        for name, _ in chosen:
            lay = source.layout(name)
            source.plan(name, None, 0, 0)
            sizes.append(math.prod(lay.shape) * np.dtype(source.dtype(name)).itemsize)
    split_num = min(max(1, math.ceil(sum(sizes) / SPLIT_BYTES)), len(chosen))
    bins = _bin_pack(sizes, split_num)
    plan.parts = [[chosen[i] for i in b] for b in bins]
    plan.part_bytes = [sum(sizes[i] for i in b) for b in bins]
    plan.total_size = sum(sizes)
    return plan


# ------------------------------------------------------------------------------ slicing a unified directory
class SliceJob:
    """Slicing a unified directory for destination ranks: what each rank gets.

    The destination is a strategy file (``predict_strategy`` as a path) or a predict-strategy
    dict; ``name_map`` maps destination names to the names in the directory.

    >>> import os, tempfile, numpy as np
    >>> from distinfer.io import write_safetensors
    >>> d = tempfile.mkdtemp(); write_safetensors(f"{d}/part0.safetensors", {"w": np.arange(8.0).reshape(4, 2)})
    >>> job = SliceJob(d, {"w": [[2], [0, -1], [], 0]}, None)
    >>> job.device_num, job.targets(1, ["w"])
    (2, ([('w', 'w', Layout(dev_matrix=[2], tensor_map=[0, -1], shape=[4, 2]))], []))
    >>> job.close()
    """

    def __init__(self, unified_dir: PathLike, predict_strategy: Any, name_map: Optional[Mapping[str, str]]) -> None:
        self.unified_dir = os.fspath(unified_dir)
        self.uc = UnifiedCheckpoint(self.unified_dir)
        self.name_map = dict(name_map or {})
        self.dst: Optional[TrainStrategy] = None
        self.predict: Optional[dict] = None
        if isinstance(predict_strategy, (str, os.PathLike)):
            self.predict_arg: Any = os.fspath(predict_strategy)
            dst = TrainStrategy.from_file(predict_strategy)
            self.dst = dst if len(dst) else None
        else:
            self.predict_arg = predict_strategy
            self.predict = check_predict_strategy(predict_strategy)

    @property
    def device_num(self) -> int:
        """Destination ranks: the strategy file's (all stages), or the predict layout's device count."""
        if self.dst is not None:
            return self.dst.device_num
        if self.predict:
            return math.prod(next(iter(self.predict.values()))[0])
        return 1

    def stored(self, name: str) -> str:
        return self.name_map.get(name, name)

    def layout_for(self, name: str, shape: tuple[int, ...], rank: int) -> tuple[bool, Optional[Layout]]:
        """(this rank holds it?, its block's layout or None for the full tensor)."""
        if self.dst is not None:
            return dst_layout(self.dst, name, shape, rank)
        if self.predict is None or name not in self.predict:
            return True, None
        try:
            return True, predict_layout(name, self.predict[name], shape)
        except LayoutError as exc:
            raise ValueError(f"For 'load_distributed_checkpoint', parameter {name!r} of shape {shape} (in "
                             f"{self.uc.part_path(self.stored(name))}) cannot take its predict layout "
                             f"{predict_value_text(self.predict[name])}: {exc}") from None

    def output_names(self) -> list[str]:
        """Names written when no network is given: the predict strategy's, else every unified tensor's."""
        if self.dst is not None:
            return self.dst.names()
        if self.predict is not None:
            return list(self.predict)
        back = {v: k for k, v in self.name_map.items()}
        return [back.get(s, s) for s in self.uc.weight_map]

    def targets(self, rank: int, names: Iterable[str], shapes: Optional[Mapping[str, tuple[int, ...]]] = None
                ) -> tuple[list[tuple[str, str, Optional[Layout]]], list[str]]:
        """``([(name, stored name, layout)], missing names)`` for ``rank``, every read planned.

        ``shapes`` (the network's full shapes) are checked against the unified tensors.
        """
        out: list[tuple[str, str, Optional[Layout]]] = []
        missing: list[str] = []
        for name in names:
            stored = self.stored(name)
            if stored not in self.uc:
                missing.append(name)
                continue
            shape = self.uc.layout(stored).shape
            if shapes is not None and tuple(shapes[name]) != shape:
                raise ValueError(f"For 'load_distributed_checkpoint', the network parameter {name!r} has shape "
                                 f"{tuple(shapes[name])} but the unified checkpoint holds a tensor of shape {shape} "
                                 f"for it ({stored!r} in {self.uc.part_path(stored)})")
            ok, lay = self.layout_for(name, shape, rank)
            if not ok:
                continue
            self.uc.plan(stored, lay, rank, rank)
            out.append((name, stored, lay))
        return out, missing

    def check_ranks(self, ranks: Sequence[int]) -> None:
        """Plan every read of ``ranks`` (so that every error comes before the first file is written)."""
        for r in ranks:
            if not 0 <= r < self.device_num and (self.dst is not None or self.predict):
                raise ValueError(f"For 'load_distributed_checkpoint', rank_id {r} is not a rank of the predict "
                                 f"strategy ({self.device_num} devices)")
            _, missing = self.targets(r, self.output_names())
            if missing and r == ranks[0]:
                log.warning("For 'load_distributed_checkpoint', %d parameters of the predict strategy are not in the "
                            "unified checkpoint %s, they are not written: %s", len(missing), self.unified_dir, missing)

    def file(self, rank: int) -> OutputFile:
        """Destination ``rank``'s file: its blocks, then the hyper params it does not hold as blocks.

        A ``.ckpt`` holds the blocks in :func:`~distinfer.io.safetensors_order` too, then the hyper
        params by name.
        """
        targets, _ = self.targets(rank, self.output_names())
        by_name = {name: (stored, lay) for name, stored, lay in targets}
        specs = safetensors_order((name, np.dtype(self.uc.dtype(stored)), block_shape(self.uc, stored, lay))
                                  for name, stored, lay in targets)
        hyper = self.uc.hyper()
        copied = sorted(n for n in hyper.names() if n not in by_name) if hyper is not None else []
        return OutputFile(self.uc, tuple((n, *by_name[n]) for n, _, _ in specs), rank, rank,
                          tuple((n, hyper) for n in copied))

    def size(self, rank: int) -> int:
        targets, _ = self.targets(rank, self.output_names())
        return sum(math.prod(block_shape(self.uc, stored, lay)) * np.dtype(self.uc.dtype(stored)).itemsize
                   for _, stored, lay in targets)

    def rebuild(self, keys: Sequence[int]) -> tuple[Callable[..., "SliceJob"], tuple]:
        """Spawned workers rebuild the job from the directory and the predict strategy as JSON."""
        predict = self.predict_arg if isinstance(self.predict_arg, str) else self.predict
        return _slice_job, (self.unified_dir, json.dumps(predict, default=_json_default), dict(self.name_map))

    def close(self) -> None:
        self.uc.close()


def _slice_job(unified_dir: str, predict_json: str, name_map: Optional[dict]) -> SliceJob:
    return SliceJob(unified_dir, json.loads(predict_json), name_map)


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    raise TypeError(f"predict_strategy holds a {type(obj).__name__}, which cannot be passed to worker processes")
