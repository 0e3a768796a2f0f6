"""Communication in a per-rank MindIR: distinfer's redistributions as MindSpore's collectives.

A traced run communicates in three ways: an AllReduce or a ReduceScatter of pending partial
sums over rank groups (written as MindSpore's primitives of those names), and a
redistribution of a value from one layout to another (a :class:`~distinfer.plan.Plan`), which
:func:`lower` turns into MindSpore's primitives. Every rank takes the same decision, from the
two layouts alone, so the collectives of a group line up:

1. when every rank's destination block lies inside its source block: a local slice;
2. otherwise, for each dim the destination needs more of, one collective over groups of ranks
   holding consecutive blocks along it (the smallest aligned run of blocks that holds what each
   rank needs; replicas gather with replicas): an ``AlltoAll`` when the destination splits
   another, whole, dim so that member j keeps its chunk j (the swap of a split between two
   dims), else an ``AllGather`` (it concatenates along dim 0; for another dim a ``Split`` and a
   ``Concat`` follow); then a slice to the destination block;
3. when a group's ranks do not hold their blocks in rank order (a dim split over device axes
   listed inner first), the plan's own pieces go by ``Send``/``Receive`` and are concatenated
   in place.

Groups are named as MindSpore names them: ``"<size>-<hash>"``, the hash being C++
``std::hash<std::string>`` (libstdc++) of the ranks joined by ``-`` (``"0-1-2-3"`` gives
``"4-6301172352641561019"``), and each primitive lists its ranks in ``group_ranks``.

>>> from distinfer.layout import Layout
>>> lower(Layout((2,), (0, -1), (4, 6)), Layout((2,), (-1, -1), (4, 6)), rank=1)   # rows -> whole
[Gather(dim=0, group=(0, 1))]
>>> lower(Layout((2,), (0, -1), (4, 6)), Layout((2,), (-1, 0), (4, 6)), rank=1)    # rows -> columns
[AllToAll(split_dim=1, concat_dim=0, group=(0, 1))]
>>> group_name((0, 1, 2, 3))
'4-6301172352641561019'
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..layout import Layout
from ..plan import make_plan

__all__ = ["lower", "Gather", "AllToAll", "Slice", "Exchange", "group_name", "rank_list_name", "comm_attrs",
           "WORLD_GROUP"]

WORLD_GROUP = "hccl_world_group"  # the group MindSpore's Send/Receive name by default


# ------------------------------------------------------------------------- group names
_M64 = (1 << 64) - 1
_MUL = (0xC6A4A793 << 32) + 0x5BD1E995
_SEED = 0xC70F6907


def _shift_mix(v: int) -> int:
    return v ^ (v >> 47)


def _std_hash(text: str) -> int:
    """libstdc++'s 64-bit ``std::hash<std::string>`` (its ``_Hash_bytes``, a MurmurHash2 variant)."""
    data = text.encode()
    n = len(data)
    h = _SEED ^ (n * _MUL & _M64)
    whole = n & ~7
    for i in range(0, whole, 8):
        word = int.from_bytes(data[i:i + 8], "little")
        h = (h ^ (_shift_mix(word * _MUL & _M64) * _MUL & _M64)) * _MUL & _M64
    if n & 7:
        h = (h ^ int.from_bytes(data[whole:], "little")) * _MUL & _M64
    return _shift_mix(_shift_mix(h) * _MUL & _M64)


def rank_list_name(ranks) -> str:
    """MindSpore's ``group_ranks`` spelling of a rank group: ascending ranks joined by ``-``.

    >>> rank_list_name((6, 4))
    '4-6'
    """
    return "-".join(str(int(r)) for r in sorted(ranks))


def group_name(ranks) -> str:
    """The name MindSpore's parallel pass gives the communication group of ``ranks``."""
    return f"{len(ranks)}-{_std_hash(rank_list_name(ranks))}"


def comm_attrs(prim: str, group: tuple[int, ...], /, **extra) -> dict:
    """The primitive attributes MindSpore writes on communication primitive ``prim`` over ``group``
    (``extra``: the primitive's own, e.g. AllReduce's ``op``).

    >>> comm_attrs("AllReduce", (0, 2), op="sum")["group_ranks"]
    '0-2'
    """
    base = {"group": group_name(group), "group_ranks": rank_list_name(group)}
    if prim in ("AllGather", "ReduceScatter", "AlltoAll"):
        base["rank_size"] = len(group)
    if prim in ("AllGather", "ReduceScatter", "AllReduce"):
        base["fusion"] = 0
    base.update(extra)
    base["no_eliminate"] = True
    if prim == "AllGather":
        base["mean_flag"] = False
    if prim == "AllReduce":
        base["index"] = 0
    return base


# ------------------------------------------------------------------------------- steps
@dataclass(frozen=True)
class Gather:
    """AllGather of this rank's block over ``group`` (ascending), concatenated along ``dim``."""

    dim: int
    group: tuple[int, ...]


@dataclass(frozen=True)
class AllToAll:
    """AlltoAll over ``group``: ``split_dim`` cut into ``len(group)`` chunks, one to each member;
    the received chunks concatenated along ``concat_dim`` in member order."""

    split_dim: int
    concat_dim: int
    group: tuple[int, ...]


@dataclass(frozen=True)
class Slice:
    """This rank's block cut to ``[begin, end)`` (local coordinates)."""

    begin: tuple[int, ...]
    end: tuple[int, ...]


@dataclass(frozen=True, eq=False)
class Exchange:
    """Point to point: ``sends`` are ``(destination, local begin, local end, tag)``; ``cells`` is
    the destination block as a grid of pieces (an object array), each ``("local", begin, end)``
    (a slice of this rank's block) or ``("recv", source, shape, tag)``."""

    sends: tuple
    cells: np.ndarray


# ----------------------------------------------------------------------------- lowering
def lower(src: Layout, dst: Layout, rank: int) -> list:
    """Rank ``rank``'s steps moving a value laid out as ``src`` to ``dst`` (see module doc).

    The state between steps is every rank's block (``[ranks, ndim, 2]`` boxes), so optimizer
    shards and partly gathered dims need no layout of their own.
    """
    have, want = src.boxes.copy(), dst.boxes
    steps = []
    while True:
        short = [d for d in range(src.ndim) if not _inside(want[:, d], have[:, d])]
        if not short:
            break
        d = short[0]
        gathered = _gather_groups(have, want, d)
        if gathered is None:
            return [_exchange(src, dst, rank)]
        groups, have_d = gathered
        swap = _swap_dim(have, want, d, have_d, groups, src.shape)
        if swap is not None:
            b, have_b = swap
            steps.append(AllToAll(b, d, groups[rank]))
            have[:, b] = have_b
        else:
            steps.append(Gather(d, groups[rank]))
        have[:, d] = have_d
    if not np.array_equal(have[rank], want[rank]):
        steps.append(Slice(tuple(int(v) for v in want[rank, :, 0] - have[rank, :, 0]),
                           tuple(int(v) for v in want[rank, :, 1] - have[rank, :, 0])))
    return steps


def _inside(want: np.ndarray, have: np.ndarray) -> bool:
    """Every ``want`` interval lies inside the ``have`` interval of the same rank."""
    return bool(((want[..., 0] >= have[..., 0]) & (want[..., 1] <= have[..., 1])).all())


def _gather_groups(have: np.ndarray, want: np.ndarray, d: int):
    """``(group of each rank, gathered [ranks, 2] intervals along d)`` for gathering the smallest
    aligned run of blocks along ``d`` that holds what every rank wants, or None when the blocks
    do not tile ``d`` evenly or a group's ranks are not in block order."""
    n = len(have)
    lo, hi = have[:, d, 0], have[:, d, 1]
    size = int(hi[0] - lo[0])
    starts = np.unique(lo)
    if size <= 0 or (hi - lo != size).any() or not np.array_equal(starts, np.arange(len(starts)) * size):
        return None
    index = lo // size
    runs = [g for g in range(2, len(starts) + 1) if len(starts) % g == 0]
    g = next(g for g in runs if _inside(want[:, d], _run_of(index, g, size)))
    # Ranks holding identical blocks are told apart by their order among those holders, so that
    # replicas gather with replicas: the group of rank r is the ranks whose blocks differ from
    # r's only along d, in the same run, with the same order among their replicas.
    _, same_block = np.unique(have.reshape(n, -1), axis=0, return_inverse=True)
    order = np.argsort(same_block.reshape(-1), kind="stable")
    replica = np.empty(n, dtype=np.int64)
    replica[order] = np.arange(n) - np.searchsorted(same_block.reshape(-1)[order], same_block.reshape(-1)[order])
    others = np.delete(have, d, axis=1).reshape(n, -1)
    keys = np.concatenate([others, (index // g)[:, None], replica[:, None]], axis=1)
    _, group_of = np.unique(keys, axis=0, return_inverse=True)
    group_of = group_of.reshape(-1)
    members = [tuple(int(r) for r in np.flatnonzero(group_of == k)) for k in range(group_of.max() + 1)]
    if any(len(m) != g or not np.array_equal(index[list(m)], index[m[0]] + np.arange(g)) for m in members):
        return None
    return [members[k] for k in group_of], _run_of(index, g, size)


def _run_of(index: np.ndarray, g: int, size: int) -> np.ndarray:
    """``[ranks, 2]``: the aligned run of ``g`` blocks of ``size`` holding each rank's block."""
    start = index // g * g * size
    return np.stack([start, start + g * size], axis=1)


def _swap_dim(have, want, d: int, have_d, groups, shape) -> tuple[int, np.ndarray] | None:
    """``(b, [ranks, 2] intervals along b)`` when an AlltoAll that hands chunk j of a whole dim
    ``b`` to the j-th member of each group leaves every rank's wanted block inside its new one
    (the destination splits ``b``; otherwise an AllGather along ``d`` is the step)."""
    n = len(have)
    for b in range(have.shape[1]):
        whole = (have[:, b, 0] == 0).all() and (have[:, b, 1] == shape[b]).all()
        k = len(groups[0])
        if b == d or not whole or (want[:, b, 1] - want[:, b, 0] == shape[b]).all() or shape[b] % k:
            continue
        chunk = shape[b] // k
        j = np.array([groups[r].index(r) for r in range(n)], dtype=np.int64)
        have_b = np.stack([j * chunk, (j + 1) * chunk], axis=1)
        if _inside(want[:, b], have_b) and _inside(want[:, d], have_d):
            return b, have_b
    return None


def _exchange(src: Layout, dst: Layout, rank: int) -> Exchange:
    """The plan's pieces for ``rank``: what it sends, and its destination block as a grid of pieces."""
    plan = make_plan(src, dst)
    origin = src.boxes[rank][:, 0]
    sends = tuple((p.dst, _local(p.box, origin)[0], _local(p.box, origin)[1], tag)
                  for tag, p in enumerate(plan.pieces) if p.src == rank and p.dst != rank)
    mine = [(tag, p) for tag, p in enumerate(plan.pieces) if p.dst == rank]
    cuts = [sorted({p.box[k][0] for _, p in mine}) for k in range(dst.ndim)]
    cells = np.empty(tuple(len(c) for c in cuts), dtype=object)
    for tag, p in mine:
        at = tuple(c.index(p.box[k][0]) for k, c in enumerate(cuts))
        cells[at] = ("local",) + _local(p.box, origin) if p.src == rank else ("recv", p.src, p.shape, tag)
    return Exchange(sends, cells)


def _local(box, origin) -> tuple[tuple[int, ...], tuple[int, ...]]:
    return tuple(int(a - o) for (a, _), o in zip(box, origin)), tuple(int(b - o) for (_, b), o in zip(box, origin))
