"""Unified safetensors: MindSpore's directory of full tensors, made from and sliced into per-rank layouts.

A *unified* directory is what MindSpore's ``ms.parallel.unified_safetensors`` writes (spec §2):

* ``part{i}.safetensors``: full (merged) tensors, bin-packed into groups of about
  :data:`SPLIT_BYTES` (``split_num = ceil(total bytes / SPLIT_BYTES)``, largest tensor first into
  the lightest part);
* ``param_name_map.json``: ``{"metadata": {"total_size": N}, "weight_map": {name: "partK.safetensors"}}``;
* ``hyper_param.safetensors``: the entries of rank 0's file that are not in the strategy
  (``global_step``, ``learning_rate``...).

:func:`unified_safetensors` writes one from per-rank files; ``load_distributed_checkpoint(...,
unified_safetensors_dir=...)`` (through :func:`load_unified`) slices one for a rank. Both run on the
resharding engine (:mod:`distinfer.parallel.reshard`): each output tensor is assembled from ranged
reads of only the bytes it needs, one tensor at a time, and written as it comes (the safetensors
header is computed from the layouts first), so a process holds about one output tensor — the
largest — plus the engine's bounded read-ahead buffer, never the model. Every check (files,
shapes, strategies, names) runs before the first output file is written, and every file is
written atomically (temporary file, fsync, rename).

:class:`RoutedSource` is the one new engine-side piece: a set of
:class:`~distinfer.parallel.reshard.SourceCheckpoint` s, each serving some names — the part
files of a unified directory (full tensors, one source per file), or per-rank files saved with
``remove_redundancy`` (one source per set of ranks holding a name).

>>> import json, os, tempfile, numpy as np
>>> from distinfer.io import SafetensorsFile, write_safetensors
>>> d = tempfile.mkdtemp(); full = np.arange(8, dtype=np.float32).reshape(2, 4)
>>> for r in range(2):                      # columns split over 2 ranks
...     os.makedirs(f"{d}/src/rank_{r}")
...     write_safetensors(f"{d}/src/rank_{r}/net-1_1.safetensors", {"w": full[:, 2 * r:2 * r + 2], "step": 1})
>>> _ = open(f"{d}/s.json", "w").write(json.dumps(
...     {"parallel_layout_item": {"w": {"dev_matrix": [2], "tensor_map": [-1, 0]}}}))
>>> unified_safetensors(f"{d}/src", f"{d}/s.json", f"{d}/out")
>>> sorted(os.listdir(f"{d}/out"))
['hyper_param.safetensors', 'param_name_map.json', 'part0.safetensors']
>>> SafetensorsFile(f"{d}/out/part0.safetensors").read("w").tolist() == full.tolist()
True
"""
from __future__ import annotations

import json
import logging
import math
import os
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field
from multiprocessing import get_context
from typing import Any, Callable, Iterable, Iterator, Mapping, Optional, Sequence, Union

import numpy as np

from ..errors import FormatError, LayoutError
from ..io._atomic import atomic_output
from ..io.ckpt import write_ckpt
from ..io.safetensors_io import safetensors_order, write_safetensors, write_safetensors_stream
from ..layout import Layout
from ..plan import Plan
from .checkpoint import (_check_predict_strategy, _dst_layout, _load_into, _pick_rank_files, _predict_layout,
                         _read_into_arena)
from .reshard import ReadStats, SourceCheckpoint, TrainStrategy, iter_blocks

__all__ = ["unified_safetensors", "UnifiedCheckpoint", "RoutedSource", "load_unified", "SPLIT_BYTES",
           "PARAM_MAP_FILE", "HYPER_PARAM_FILE"]

log = logging.getLogger(__name__)

PathLike = Union[str, os.PathLike]

#: Target size of one ``part{i}.safetensors`` (MindSpore: 3 GiB). A module attribute so that
#: tests can make it small.
SPLIT_BYTES = 3 * 1024 ** 3
PARAM_MAP_FILE = "param_name_map.json"
HYPER_PARAM_FILE = "hyper_param.safetensors"


# ------------------------------------------------------------------------------ engine adapter
class RoutedSource:
    """Several :class:`SourceCheckpoint` s behind one name space: ``routes[name]`` serves ``name``.

    It has the methods of a SourceCheckpoint that :func:`~distinfer.parallel.reshard.iter_blocks`
    and :func:`~distinfer.parallel.reshard.read_blocks` use (``layout``, ``dtype``, ``plan``,
    ``read_block``), each delegated to the name's source, so blocks are read by the same ranged
    reads as from one source.

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

    def __init__(self, routes: Mapping[str, SourceCheckpoint]) -> None:
        self.routes = dict(routes)

    def sources(self) -> list[SourceCheckpoint]:
        """The distinct sources, in first-route order."""
        seen: dict[int, SourceCheckpoint] = {}
        for sc in self.routes.values():
            seen.setdefault(id(sc), sc)
        return list(seen.values())

    def source(self, name: str) -> SourceCheckpoint:
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
        """Bytes read, summed over the sources."""
        total = ReadStats()
        for sc in self.sources():
            for path, n in sc.stats.per_file.items():
                total.add(path, n)
        return total

    def close(self) -> None:
        for sc in self.sources():
            sc.close()

    def __enter__(self) -> "RoutedSource":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _storable(reader: Any, name: str) -> bool:
    e = reader.entry(name)
    if not e.dtype.safetensors:  # str and Int4 records
        log.warning("%s: %s record %r cannot be stored in safetensors; skipped", reader.path, e.dtype, name)
        return False
    return True


# ------------------------------------------------------------------------------ unified_safetensors
@dataclass
class _UnifyPlan:
    """What :func:`unified_safetensors` writes, as plain data (workers rebuild the sources from it)."""

    strategy_file: str
    files: dict[int, str]
    #: name -> ranks whose files hold it (remove_redundancy sources); None: every file holds its stage's names
    holders: Optional[dict[str, list[int]]]
    #: per part: (name in the rank files, name written)
    parts: list[list[tuple[str, str]]]
    total_size: int
    #: tensor bytes of each part
    part_bytes: list[int] = field(default_factory=list)

    def source(self) -> RoutedSource:
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

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> "_UnifyPlan":
        obj = json.loads(text)
        obj["files"] = {int(r): p for r, p in obj["files"].items()}
        obj["parts"] = [[tuple(x) for x in part] for part in obj["parts"]]
        return cls(**obj)


def _write_part(plan: _UnifyPlan, source: RoutedSource, index: int, path: str,
                on_done: Optional[Callable[[str, int], None]] = None) -> int:
    """Write ``part{index}``: its full tensors, streamed one at a time (``on_done(name, bytes)`` after each)."""
    out_of = {src: out for src, out in plan.parts[index]}
    specs = safetensors_order((out, np.dtype(source.dtype(src)), source.layout(src).shape) for src, out in plan.parts[index])
    src_of = {out: src for src, out in plan.parts[index]}
    order = [src_of[out] for out, _, _ in specs]
    blocks = iter_blocks(source, order, {}, 0, 0, on_done, reuse=True)
    n = write_safetensors_stream(path, specs, ((out_of[name], block) for name, block in blocks))
    log.info("wrote %s (%d tensors, %d bytes)", path, len(specs), n)
    return n


_UNIFY_WORKER: Optional[tuple[_UnifyPlan, RoutedSource]] = None


def _unify_worker_init(plan_json: str) -> None:
    global _UNIFY_WORKER
    plan = _UnifyPlan.from_json(plan_json)
    _UNIFY_WORKER = (plan, plan.source())


def _unify_worker_write(index: int, path: str) -> int:
    assert _UNIFY_WORKER is not None
    return _write_part(*_UNIFY_WORKER, index, path)


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


def _split_range(split_dst_file: Sequence[int], parts: int) -> range:
    """The parts of task ``split_dst_file = (current, total)`` (1-based), as MindSpore divides them."""
    current, total = split_dst_file
    avg, rem = divmod(parts, total)
    start = avg * (current - 1) + min(current - 1, rem)
    return range(start, start + avg + (1 if current <= rem else 0))


def _check_unified_args(src_dir: Any, src_strategy_file: Any, dst_dir: Any, file_suffix: Any, max_process_num: Any,
                        choice_func: Any, split_dst_file: Any) -> tuple[int, int]:
    api = "For 'unified_safetensors'"
    for arg, value in (("src_dir", src_dir), ("src_strategy_file", src_strategy_file), ("dst_dir", dst_dir)):
        if not isinstance(value, (str, os.PathLike)):
            raise TypeError(f"{api}, '{arg}' must be a str path, got {type(value).__name__}")
    if os.path.isfile(src_dir):
        raise ValueError(f"{api}, the 'src_dir' can not be a file: {os.fspath(src_dir)}")
    if not os.path.isdir(src_dir):
        raise ValueError(f"{api}, the source directory {os.fspath(src_dir)} does not exist")
    if not os.path.isfile(src_strategy_file):
        raise ValueError(f"{api}, the strategy file {os.fspath(src_strategy_file)} does not exist")
    if os.path.isfile(dst_dir):
        raise ValueError(f"{api}, the 'dst_dir' {os.fspath(dst_dir)} is a file, not a directory")
    if file_suffix is not None and not isinstance(file_suffix, str):
        raise TypeError(f"{api}, 'file_suffix' must be a str or None, got {type(file_suffix).__name__}")
    if not isinstance(max_process_num, int) or isinstance(max_process_num, bool) or max_process_num < 1:
        raise ValueError(f"{api}, 'max_process_num' must be a positive int, got {max_process_num!r}")
    if choice_func is not None and not callable(choice_func):
        raise TypeError(f"{api}, 'choice_func' must be callable or None, got {type(choice_func).__name__}")
    if split_dst_file in ((), None, []):
        return 1, 1
    ok = isinstance(split_dst_file, (tuple, list)) and len(split_dst_file) == 2 and all(
        isinstance(v, int) and not isinstance(v, bool) for v in split_dst_file)
    if not ok or not 1 <= split_dst_file[0] <= split_dst_file[1]:
        raise ValueError(f"{api}, 'split_dst_file' must be () or (current task, total tasks) with "
                         f"1 <= current <= total, got {split_dst_file!r}")
    return int(split_dst_file[0]), int(split_dst_file[1])


def _plan_unify(src_dir: str, src_strategy_file: str, merge_with_redundancy: bool, file_suffix: Optional[str],
                choice_func: Optional[Callable[[str], Any]]) -> tuple[_UnifyPlan, list[str]]:
    """Validate the sources and decide what goes where; returns the plan and the hyper-param names."""
    api = "For 'unified_safetensors'"
    strategy = TrainStrategy.from_file(src_strategy_file)
    if not len(strategy):
        raise ValueError(f"{api}, the strategy file {src_strategy_file} has no parameter layouts")
    files = _pick_rank_files(src_dir, range(strategy.device_num), "unified_safetensors", file_suffix)
    probe = SourceCheckpoint(strategy, files)
    try:
        probe.open_all()
        names_of = {r: set(probe.reader(r).names()) for r in files}
        flags = {getattr(probe.reader(r), "metadata", {}).get("remove_redundancy") for r in files}
        if merge_with_redundancy and "True" in flags:
            log.warning("For 'unified_safetensors', the safetensors files are deduplicated (remove_redundancy), "
                        "but merge_with_redundancy is True; merging them as deduplicated files")
            merge_with_redundancy = False
        elif not merge_with_redundancy and flags == {"False"}:
            log.warning("For 'unified_safetensors', the safetensors files are not deduplicated, but "
                        "merge_with_redundancy is False; merging them as complete files")
            merge_with_redundancy = True
        present = set().union(*names_of.values())
        chosen: list[tuple[str, str]] = []
        for name in strategy.names():
            if name not in present:
                log.info("%s: %s is in the strategy but in no rank file; skipped", src_strategy_file, name)
                continue
            if name.startswith("accu_grads"):
                continue
            out = _choice(choice_func, name)
            if out is not None:
                chosen.append((name, out))
        outs: dict[str, str] = {}
        for name, out in chosen:
            if out in outs:
                raise ValueError(f"{api}, 'choice_func' names both {outs[out]!r} and {name!r} {out!r}")
            outs[out] = name
        if not chosen:
            raise ValueError(f"{api}, no parameter of the strategy {src_strategy_file} is left to merge from the "
                             f"files in {src_dir}")
        holders = None
        if not merge_with_redundancy:
            holders = {n: sorted(r for r in files if n in names_of[r]) for n, _ in chosen}
        hyper_ref = min(files)
        hyper = [n for n in probe.reader(hyper_ref).names() if n not in strategy]
        hyper = [n for n in hyper if _storable(probe.reader(hyper_ref), n)]
    finally:
        probe.close()
    plan = _UnifyPlan(os.fspath(src_strategy_file), files, holders, [[(n, o) for n, o in chosen]], 0)
    # Every tensor's full shape (blocks checked against the strategy) and read plan, before any write.
    with plan.source() as source:
        sizes = []
        for name, _ in chosen:
            lay = source.layout(name)
            source.plan(name, None, 0, 0)
            sizes.append(math.prod(lay.shape) * np.dtype(source.dtype(name)).itemsize)
    total = sum(sizes)
    split_num = min(max(1, math.ceil(total / SPLIT_BYTES)), len(chosen))
    bins = _bin_pack(sizes, split_num)
    plan.parts = [[chosen[i] for i in b] for b in bins]
    plan.part_bytes = [sum(sizes[i] for i in b) for b in bins]
    plan.total_size = total
    return plan, hyper


def unified_safetensors(src_dir: str, src_strategy_file: str, dst_dir: str, merge_with_redundancy: bool = True,
                        file_suffix: Optional[str] = None, max_process_num: int = 64,
                        choice_func: Optional[Callable[[str], Union[bool, str]]] = None,
                        split_dst_file: Sequence[int] = ()) -> None:
    """Merge per-rank safetensors into full tensors in ``dst_dir`` (MindSpore 2.10's ``unified_safetensors``).

    Input ``src_dir/rank_<r>/*.safetensors`` for every rank of ``src_strategy_file`` (a merged
    pipeline strategy works too); in a rank directory with several files the one with the
    largest last two numbers in its name is used, or with ``file_suffix`` the one whose name
    ends with ``{file_suffix}.safetensors`` (the shortest such name). Output, in ``dst_dir``:
    ``part{i}.safetensors`` (full tensors, ``ceil(total bytes / SPLIT_BYTES)`` parts, largest
    tensor first into the lightest part), ``param_name_map.json`` and ``hyper_param.safetensors``
    (rank 0's entries that are not in the strategy). ``accu_grads*`` parameters are dropped.

    ``merge_with_redundancy=False`` reads files saved with ``remove_redundancy=True`` (each slice
    in one replica's file only); a file's ``remove_redundancy`` metadata overrides the argument,
    with a warning, as in MindSpore. ``choice_func(name)`` returns False to drop a parameter,
    True to keep it or a str to rename it. ``split_dst_file=(k, n)`` writes only the k-th
    (1-based) of n slices of the parts (the map and hyper params with k=1), for running one
    merge on several machines. Parts are written by up to ``max_process_num`` processes, or
    divided among the ranks of an ``mpirun`` job.

    Differences from MindSpore: ``.ckpt`` rank files are accepted too (entries safetensors cannot
    hold, such as strings, are left out of ``hyper_param.safetensors`` with a warning); ties in
    the bin packing follow the strategy's parameter order.

    >>> import json, os, tempfile, numpy as np
    >>> from distinfer.io import write_safetensors
    >>> d = tempfile.mkdtemp(); full = np.arange(8, dtype=np.float32).reshape(2, 4)
    >>> for r in range(2):
    ...     os.makedirs(f"{d}/src/rank_{r}")
    ...     write_safetensors(f"{d}/src/rank_{r}/net-1_1.safetensors", {"w": full[:, 2 * r:2 * r + 2]})
    >>> _ = open(f"{d}/s.json", "w").write(json.dumps(
    ...     {"parallel_layout_item": {"w": {"dev_matrix": [2], "tensor_map": [-1, 0]}}}))
    >>> unified_safetensors(f"{d}/src", f"{d}/s.json", f"{d}/out", choice_func=lambda n: "model." + n)
    >>> json.load(open(f"{d}/out/param_name_map.json"))
    {'metadata': {'total_size': 32}, 'weight_map': {'model.w': 'part0.safetensors'}}
    """
    current, total = _check_unified_args(src_dir, src_strategy_file, dst_dir, file_suffix, max_process_num,
                                         choice_func, split_dst_file)
    from ..communication import _backend

    _backend.agree("unified_safetensors", {"src": os.path.realpath(src_dir), "dst": os.path.realpath(dst_dir),
                   "strategy": os.path.realpath(src_strategy_file), "redundancy": bool(merge_with_redundancy),
                   "suffix": file_suffix, "split": [current, total]})
    src_dir, dst_dir = os.fspath(src_dir), os.fspath(dst_dir)
    plan, hyper = _plan_unify(src_dir, os.fspath(src_strategy_file), bool(merge_with_redundancy), file_suffix,
                              choice_func)
    mine = list(_split_range((current, total), len(plan.parts)))
    writes_map = current == 1
    world = _backend.world() if _backend.launched_size() > 1 else None
    if world is not None and world.size > 1:
        mine = mine[world.rank::world.size]
        writes_map = writes_map and world.rank == 0
    os.makedirs(dst_dir, exist_ok=True)
    outputs = {k: os.path.join(dst_dir, f"part{k}.safetensors") for k in mine}
    procs = min(max_process_num, len(outputs), os.cpu_count() or 1)
    from tqdm.auto import tqdm

    with tqdm(total=sum(plan.part_bytes[k] for k in outputs), unit="B", unit_scale=True, desc="unified_safetensors",
              disable=None, leave=False) as bar:
        if world is not None or procs <= 1:
            with plan.source() as source:
                for k, path in outputs.items():
                    _write_part(plan, source, k, path, lambda _name, n: bar.update(n))
        else:
            with ProcessPoolExecutor(max_workers=procs, mp_context=get_context("spawn"),
                                     initializer=_unify_worker_init, initargs=(plan.to_json(),)) as pool:
                futs = {pool.submit(_unify_worker_write, k, p): k for k, p in outputs.items()}
                for fut in as_completed(futs):
                    fut.result()
                    bar.update(plan.part_bytes[futs[fut]])
    if writes_map:
        if hyper:
            with SourceCheckpoint(None, {0: plan.files[min(plan.files)]}) as ref:
                rd = ref.reader(0)
                write_safetensors(os.path.join(dst_dir, HYPER_PARAM_FILE), {n: rd.read(n) for n in hyper})
        weight_map = {out: f"part{k}.safetensors" for k, part in enumerate(plan.parts) for _, out in part}
        with atomic_output(os.path.join(dst_dir, PARAM_MAP_FILE)) as fh:
            fh.write(json.dumps({"metadata": {"total_size": plan.total_size}, "weight_map": weight_map},
                                indent=4).encode("utf-8"))
    if world is not None and world.size > 1:
        world.barrier()


# ------------------------------------------------------------------------------ reading a unified directory
class UnifiedCheckpoint:
    """A unified directory opened for ranged reads: ``weight_map``, per-part sources, hyper params.

    Without ``param_name_map.json`` a directory holding exactly one weight file (besides
    ``hyper_param.safetensors``) maps every tensor to it, as in MindSpore. Part files are
    indexed on first use. Defects raise ValueError (no map) or
    :class:`~distinfer.errors.FormatError` naming the map, the part file and the parameter.

    >>> import os, tempfile, numpy as np
    >>> from distinfer.io import write_safetensors
    >>> d = tempfile.mkdtemp(); write_safetensors(f"{d}/part0.safetensors", {"w": np.arange(6.0).reshape(3, 2)})
    >>> with UnifiedCheckpoint(d) as uc:
    ...     print(uc.weight_map, uc.layout("w").shape, uc.source.read_block("w", Layout((3,), (0, -1), (3, 2)), 2))
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
            with SourceCheckpoint(None, {0: os.path.join(self.path, weights[0])}) as one:
                self.weight_map = {n: weights[0] for n in one.reader(0).names()}
        hyper = os.path.join(self.path, HYPER_PARAM_FILE)
        self.hyper_path: Optional[str] = hyper if os.path.isfile(hyper) else None
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

    def layout(self, name: str) -> Layout:
        """The full-tensor layout of ``name`` (FormatError if its part file lacks it)."""
        lay = self.source.layout(name)
        if lay is None:
            raise FormatError(f"{self.part_path(name)}: parameter {name!r} is not in it, but {self.map_file} maps "
                              f"it there")
        return lay

    def hyper_params(self) -> dict[str, np.ndarray]:
        """The whole of ``hyper_param.safetensors`` (small: scalars and counters)."""
        if self.hyper_path is None:
            return {}
        with SourceCheckpoint(None, {0: self.hyper_path}) as sc:
            rd = sc.reader(0)
            return {n: rd.read(n) for n in rd.names()}

    def close(self) -> None:
        self.source.close()

    def __enter__(self) -> "UnifiedCheckpoint":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _Renamed:
    """A source seen under other names (``stored_of[name]`` is the name it reads)."""

    def __init__(self, source: RoutedSource, stored_of: Mapping[str, str]) -> None:
        self.src, self.stored_of = source, dict(stored_of)

    def layout(self, name: str) -> Optional[Layout]:
        return self.src.layout(self.stored_of[name])

    def dtype(self, name: str) -> np.dtype:
        return self.src.dtype(self.stored_of[name])

    def read_block(self, name: str, dst: Optional[Layout], dst_rank: int, hint: Optional[int] = None,
                   out: Optional[np.ndarray] = None) -> np.ndarray:
        return self.src.read_block(self.stored_of[name], dst, dst_rank, hint, out=out)


def _agree_on_unified(job: "_UnifiedJob", dst_dir: Optional[PathLike], output_format: str) -> None:
    from ..communication import _backend

    predict = os.path.realpath(job.predict_arg) if isinstance(job.predict_arg, str) else job.predict
    _backend.agree("load_distributed_checkpoint", {
        "unified_safetensors_dir": os.path.realpath(job.unified_dir), "predict_strategy": predict,
        "name_map": job.name_map, "dst_safetensors_dir": dst_dir and os.path.realpath(dst_dir),
        "output_format": output_format}, key=[os.path.realpath(job.unified_dir), sorted(job.predict or {})])


class _UnifiedJob:
    """Slicing a unified directory for destination ranks: what each rank gets, and writing it."""

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
            self.predict = _check_predict_strategy(predict_strategy)

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
            return _dst_layout(self.dst, name, shape, rank)
        if self.predict is None or name not in self.predict:
            return True, None
        try:
            return True, _predict_layout(name, self.predict[name], shape)
        except LayoutError as exc:
            value = self.predict[name]
            raise ValueError(f"For 'load_distributed_checkpoint', parameter {name!r} of shape {shape} (in "
                             f"{self.uc.part_path(self.stored(name))}) cannot take its predict layout "
                             f"{list(value[:2]) if isinstance(value, (list, tuple)) else value}: {exc}") from None

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
            self.uc.source.plan(stored, lay, rank, rank)
            out.append((name, stored, lay))
        return out, missing

    def write(self, rank: int, path: str, output_format: str) -> int:
        """Write ``rank``'s blocks and the hyper params to ``path`` (streamed, atomic); returns tensor bytes."""
        targets, _ = self.targets(rank, self.output_names())
        hyper = {n: v for n, v in self.uc.hyper_params().items() if n not in {t[0] for t in targets}}
        src = self.uc.source
        specs = []
        for name, stored, lay in targets:
            shape = lay.local_shape if lay is not None else self.uc.layout(stored).shape
            specs.append((name, np.dtype(src.dtype(stored)), tuple(shape)))
        specs = safetensors_order(specs)
        by_name = {name: (stored, lay) for name, stored, lay in targets}
        # iter_blocks takes layouts by the name it reads: read under the output names, so that two
        # network names mapped to one stored tensor keep their own layouts.
        renamed = _Renamed(src, {name: stored for name, (stored, _) in by_name.items()})
        blocks = iter_blocks(renamed, [s[0] for s in specs], {n: by_name[n][1] for n, _, _ in specs}, rank, rank,
                             reuse=True)
        if output_format == "safetensors":
            # One data order for the blocks and the hyper params (iter_blocks follows ``specs``).
            everything = safetensors_order(specs + [(n, v.dtype, tuple(v.shape)) for n, v in hyper.items()])
            n = write_safetensors_stream(path, everything, ((name, hyper[name]) if name in hyper else next(blocks)
                                                            for name, _, _ in everything))
        else:
            def items() -> Iterator[tuple[str, Any]]:
                yield from blocks
                yield from sorted(hyper.items())

            write_ckpt(path, items())
            n = sum(math.prod(s[2]) * s[1].itemsize for s in specs)
        log.info("wrote %s (%d tensors)", path, len(specs) + len(hyper))
        return n

    def close(self) -> None:
        self.uc.close()


_LOAD_WORKER: Optional[_UnifiedJob] = None


def _load_worker_init(unified_dir: str, predict_json: str, name_map: Optional[dict]) -> None:
    global _LOAD_WORKER
    predict = json.loads(predict_json)
    _LOAD_WORKER = _UnifiedJob(unified_dir, predict, name_map)


def _load_worker_write(rank: int, path: str, output_format: str) -> int:
    assert _LOAD_WORKER is not None
    return _LOAD_WORKER.write(rank, path, output_format)


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    raise TypeError(f"predict_strategy holds a {type(obj).__name__}, which cannot be passed to worker processes")


def load_unified(network: Any, unified_dir: PathLike, predict_strategy: Any = None,
                 dst_safetensors_dir: Optional[PathLike] = None, rank_id: Optional[int] = None,
                 output_format: str = "safetensors", name_map: Optional[Mapping[str, str]] = None,
                 max_process_num: int = 64, return_param_dict: bool = False) -> Union[bool, dict]:
    """The unified mode of ``load_distributed_checkpoint`` (arguments already checked there).

    With ``network``: its parameters get this rank's blocks (``get_rank()`` unless ``rank_id``)
    of the unified tensors — sliced by ``predict_strategy`` (a layout dict from
    ``Model.infer_predict_layout`` or a strategy file), whole where it has no entry — plus the
    hyper params. ``name_map`` maps network names to the names in the unified files. Without a
    network, ``dst_safetensors_dir/rank_<r>/net.<output_format>`` is written for ``rank_id``,
    or for every destination rank (by up to ``max_process_num`` processes, or divided among the
    ranks of an ``mpirun`` job); it holds the predict strategy's parameters (every unified
    tensor when there is none) and the hyper params.

    >>> import os, tempfile, numpy as np
    >>> from distinfer.io import SafetensorsFile, write_safetensors
    >>> d = tempfile.mkdtemp(); write_safetensors(f"{d}/part0.safetensors", {"w": np.arange(8.0).reshape(4, 2)})
    >>> load_unified(None, d, {"w": [[2], [0, -1], [], 0]}, f"{d}/out", max_process_num=1)
    True
    >>> SafetensorsFile(f"{d}/out/rank_1/net.safetensors").read("w").tolist()
    [[4.0, 5.0], [6.0, 7.0]]
    """
    job = _UnifiedJob(unified_dir, predict_strategy, name_map)
    try:
        if rank_id is None:  # under mpirun: the ranks slicing for the same parameters must agree on how
            _agree_on_unified(job, dst_safetensors_dir, output_format)
        if network is not None or dst_safetensors_dir is None:
            from ..communication import get_rank

            rank = get_rank() if rank_id is None else int(rank_id)
            if network is not None:
                params = list(network.parameters_and_names())
                net_names = {n for n, _ in params}
                if job.predict and not set(job.predict) & net_names:
                    raise ValueError(f"For 'load_distributed_checkpoint', no parameter of the network is in "
                                     f"'predict_strategy' (it names {sorted(job.predict)[:4]}...): the predict "
                                     f"strategy is for a different network")
                shapes: Optional[dict] = {n: tuple(getattr(p, "global_shape", p.shape)) for n, p in params}
                names = [n for n, _ in params]
            else:  # return_param_dict without a network: the predict strategy's names
                shapes, names = None, job.output_names()
            targets, missing = job.targets(rank, names, shapes)
            if missing:
                log.warning("For 'load_distributed_checkpoint', %d parameters are not in the unified checkpoint %s, "
                            "they are not loaded: %s", len(missing), job.unified_dir, missing)
            blocks = _read_into_arena(job.uc.source, [(stored, lay) for _, stored, lay in targets], rank, rank)
            from ..tensor import Parameter, Tensor

            param_dict = {name: Parameter(Tensor(b), name=name) for (name, _, _), b in zip(targets, blocks)}
            for n, v in job.uc.hyper_params().items():
                param_dict.setdefault(n, Parameter(Tensor(v), name=n))
            if return_param_dict or network is None:
                return param_dict
            if param_dict:
                _load_into(network, param_dict, False)
            return True
        ranks = [int(rank_id)] if rank_id is not None else list(range(job.device_num))
        for r in ranks:
            if not 0 <= r < job.device_num and (job.dst is not None or job.predict):
                raise ValueError(f"For 'load_distributed_checkpoint', rank_id {r} is not a rank of the predict "
                                 f"strategy ({job.device_num} devices)")
            targets, missing = job.targets(r, job.output_names())  # validates every rank before writing
            if missing and r == ranks[0]:
                log.warning("For 'load_distributed_checkpoint', %d parameters of the predict strategy are not in the "
                            "unified checkpoint %s, they are not written: %s", len(missing), job.unified_dir, missing)
        from ..communication import _backend

        world = _backend.world() if _backend.launched_size() > 1 else None
        if world is not None and world.size > 1 and rank_id is None:
            ranks = ranks[world.rank::world.size]
        dst = os.fspath(dst_safetensors_dir)
        outputs = {r: os.path.join(dst, f"rank_{r}", f"net.{output_format}") for r in ranks}
        for p in outputs.values():
            os.makedirs(os.path.dirname(p), exist_ok=True)
        procs = min(max_process_num, len(outputs), os.cpu_count() or 1)
        if world is not None or procs <= 1:
            for r, p in outputs.items():
                job.write(r, p, output_format)
        else:
            predict = job.predict_arg if isinstance(job.predict_arg, str) else job.predict
            with ProcessPoolExecutor(max_workers=procs, mp_context=get_context("spawn"), initializer=_load_worker_init,
                                     initargs=(job.unified_dir, json.dumps(predict, default=_json_default),
                                               dict(job.name_map))) as pool:
                for fut in as_completed([pool.submit(_load_worker_write, r, p, output_format)
                                         for r, p in outputs.items()]):
                    fut.result()
        if world is not None and world.size > 1 and rank_id is None:
            world.barrier()
        return True
    finally:
        job.close()

