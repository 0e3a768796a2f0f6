"""Plans: which source blocks supply each destination block, by box intersection.

One planner serves runtime redistribution (sources are ranks, executed with MPI), checkpoint
resharding (sources are files, executed as byte-range reads) and export. For every destination
rank, its block is cut into the pieces where it meets the distinct source blocks; each piece
names one source holding it, chosen by a replica policy. At runtime a destination that holds
the piece itself is its own source (:class:`PreferSelf`), so a plan never moves bytes that are
already in place: the bytes it moves are the minimum any redistribution must move.

>>> from distinfer.layout import Layout
>>> src = Layout((2, 2, 2), (-1, 1), (784, 512))      # columns split by axis b
>>> dst = Layout((4,), (0, -1), (784, 512))            # rows split 4 ways
>>> [(p.src, p.box) for p in make_plan(src, dst).pieces_for(0)]
[(0, ((0, 196), (0, 256))), (2, ((0, 196), (256, 512)))]
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Callable, Iterable, Union

import numpy as np

from .errors import LayoutError
from .layout import DistSpec, Layout

__all__ = ["Piece", "Plan", "PreferSelf", "NearestCoords", "PREFER_SELF", "make_plan", "local_index", "assemble",
           "Reduce", "Step", "plan_steps", "reduce_step", "move_volumes"]

Box = tuple[tuple[int, int], ...]


@dataclass(frozen=True)
class Piece:
    """``box`` (global ``[start, stop)`` per dim) moves from source ``src`` to destination ``dst``.

    >>> from distinfer.plan import Piece
    >>> p = Piece(src=2, dst=0, box=((0, 2), (4, 7)))
    >>> p.shape, p.size
    ((2, 3), 6)
    """

    src: int
    dst: int
    box: Box

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(b - a for a, b in self.box)

    @property
    def size(self) -> int:
        n = 1
        for a, b in self.box:
            n *= b - a
        return n


def local_index(box: Box, origin: Box) -> tuple[slice, ...]:
    """Index of global ``box`` inside a block whose global extent is ``origin``.

    >>> from distinfer.plan import local_index
    >>> local_index(((2, 4), (1, 3)), ((2, 6), (0, 4)))
    (slice(0, 2, None), slice(1, 3, None))
    """
    return tuple(slice(a - o, b - o) for (a, b), (o, _) in zip(box, origin))


@dataclass(frozen=True)
class Plan:
    """All pieces that turn ``src``-laid-out data into ``dst``-laid-out data.

    >>> from distinfer.layout import Layout, replicated
    >>> from distinfer.plan import make_plan
    >>> plan = make_plan(Layout((2,), (-1, 0), (2, 4)), replicated((2, 4), 2))  # all-gather of columns
    >>> plan.sources_for(0), plan.moved_elements(), plan.messages(), plan.is_local
    ([0, 1], 8, 2, False)
    """

    src: Layout
    dst: Layout
    pieces: tuple[Piece, ...]

    def pieces_for(self, dst_rank: int) -> list[Piece]:
        """Pieces that fill ``dst_rank``'s block, in source-block order."""
        return [p for p in self.pieces if p.dst == dst_rank]

    def pieces_from(self, src_rank: int) -> list[Piece]:
        return [p for p in self.pieces if p.src == src_rank]

    def sources_for(self, dst_rank: int) -> list[int]:
        """Distinct sources ``dst_rank`` needs, ascending."""
        return sorted({p.src for p in self.pieces if p.dst == dst_rank})

    @property
    def is_local(self) -> bool:
        """True when no piece crosses ranks (sources and destinations in the same rank space)."""
        return all(p.src == p.dst for p in self.pieces)

    def moved_elements(self) -> int:
        """Elements that cross between ranks (the minimum any redistribution moves)."""
        return sum(p.size for p in self.pieces if p.src != p.dst)

    def messages(self) -> int:
        """Distinct (source, destination) pairs that exchange data across ranks."""
        return len({(p.src, p.dst) for p in self.pieces if p.src != p.dst})


def _check_compatible(src: Layout, dst: Layout) -> None:
    if src.shape != dst.shape:
        raise LayoutError(f"cannot plan between layouts of different shapes: source {src} and destination {dst}")


# ------------------------------------------------------------------------ replica policies
@dataclass(frozen=True)
class PreferSelf:
    """Runtime policy: a destination that holds the piece is its own source; otherwise
    ``holders[dst % len(holders)]`` spreads the load evenly over the replicas.

    >>> PreferSelf().choose(Layout((2, 2), (1, -1), (4, 6)), (2, 3), 3), PreferSelf().choose(None, (2, 3), 0)
    (3, 2)
    """

    def choose(self, src: Layout, holders: tuple[int, ...], dst_rank: int) -> int | None:
        return dst_rank if dst_rank in holders else holders[dst_rank % len(holders)]


@dataclass(frozen=True)
class NearestCoords:
    """Checkpoint policy (MindSpore's ``TensorTransform`` choice): the holder whose device-matrix
    coordinates agree most with ``hint``'s (the destination rank in source terms; default the
    destination rank itself), lowest rank on ties, among ``available`` ranks (files given).
    A piece with no available holder makes the plan fail with :class:`LayoutError`.

    >>> src = Layout((2, 2, 2), (-1, 1), (784, 512))        # ranks {0,1,4,5} hold one block
    >>> NearestCoords().choose(src, (0, 1, 4, 5), 5), NearestCoords(hint=1).choose(src, (0, 1, 4, 5), 5)
    (5, 1)
    >>> NearestCoords(available=frozenset({4})).choose(src, (0, 1, 4, 5), 0)
    4
    """

    hint: int | None = None
    available: frozenset[int] | None = None

    def choose(self, src: Layout, holders: tuple[int, ...], dst_rank: int) -> int | None:
        cand = np.asarray(holders, dtype=np.int64)
        if self.available is not None:
            cand = cand[np.isin(cand, np.fromiter(self.available, dtype=np.int64, count=len(self.available)))]
            if not len(cand):
                return None
        coords = src.coords_table
        hint = dst_rank if self.hint is None else self.hint
        score = (coords[cand] == coords[hint % src.num_devices]).sum(axis=1)
        return int(cand[int(np.argmax(score))])


PREFER_SELF = PreferSelf()


@lru_cache(maxsize=4096)
def make_plan(src: Layout, dst: Layout, policy: PreferSelf | NearestCoords = PREFER_SELF,
              dst_ranks: tuple[int, ...] | None = None) -> Plan:
    """Plan ``src -> dst`` for ``dst_ranks`` (all destination ranks by default).

    Each destination block is intersected with every distinct source block; ``policy`` picks
    which of the ranks holding a source block supplies the piece (:class:`PreferSelf` for
    runtime redistribution, :class:`NearestCoords` for reading checkpoint files). A piece no
    allowed rank holds is a :class:`LayoutError` naming the block and its holders.
    """
    _check_compatible(src, dst)
    blocks, holders = src.unique_blocks
    ranks = range(dst.num_devices) if dst_ranks is None else dst_ranks
    pieces: list[Piece] = []
    for r in ranks:
        mine = dst.boxes[r % dst.num_devices]
        lo = np.maximum(blocks[:, :, 0], mine[:, 0])
        hi = np.minimum(blocks[:, :, 1], mine[:, 1])
        hit = np.flatnonzero((hi > lo).all(axis=1)) if blocks.shape[1] else np.arange(len(blocks))
        for i in hit:
            src_rank = policy.choose(src, holders[i], r)
            if src_rank is None:
                box = [[int(a), int(b)] for a, b in zip(lo[i], hi[i])]
                raise LayoutError(f"block {box} is held only by source ranks {list(holders[i])}, none of which "
                                  f"was given")
            pieces.append(Piece(src_rank, r, tuple((int(a), int(b)) for a, b in zip(lo[i], hi[i]))))
    return Plan(src, dst, tuple(pieces))


def assemble(plan: Plan, dst_rank: int, fetch: Callable[[Piece], np.ndarray],
             out: np.ndarray | None = None, dtype=None) -> np.ndarray:
    """Fill ``dst_rank``'s block from the pieces ``fetch`` returns (each of shape ``piece.shape``).

    This is the single place where blocks are stitched together: runtime redistribution,
    checkpoint loading and merging all call it.

    >>> import numpy as np
    >>> from distinfer.layout import Layout, replicated
    >>> from distinfer.plan import assemble, local_index, make_plan
    >>> src, full = Layout((2,), (-1, 0), (2, 4)), np.arange(8.0).reshape(2, 4)
    >>> fetch = lambda p: src.slice(full, p.src)[local_index(p.box, src.box(p.src))]  # from p.src's block
    >>> assemble(make_plan(src, replicated((2, 4), 2)), 1, fetch).tolist()
    [[0.0, 1.0, 2.0, 3.0], [4.0, 5.0, 6.0, 7.0]]
    """
    origin = plan.dst.box(dst_rank)
    if out is None:
        out = np.empty(plan.dst.local_shape, dtype=dtype)
    elif tuple(out.shape) != plan.dst.local_shape:
        raise LayoutError(f"output buffer shape {out.shape} != block shape {plan.dst.local_shape}")
    for piece in plan.pieces_for(dst_rank):
        out[local_index(piece.box, origin)] = fetch(piece)
    return out


def extract(block: np.ndarray, layout: Layout, rank: int, box: Box) -> np.ndarray:
    """The part ``box`` (global coordinates) of ``rank``'s ``block`` under ``layout`` (a view)."""
    return block[local_index(box, layout.box(rank))]


def pieces_by_pair(pieces: Iterable[Piece]) -> dict[tuple[int, int], list[Piece]]:
    out: dict[tuple[int, int], list[Piece]] = {}
    for p in pieces:
        out.setdefault((p.src, p.dst), []).append(p)
    return out


# ------------------------------------------------------------------- partial sums: reduce steps
@dataclass(frozen=True)
class Reduce:
    """A collective that completes pending partial results of blocks laid out as ``layout``:
    an AllReduce with ``op`` over the ranks that differ only on device axes ``axes`` or, when
    ``scatter_dim`` is set, a ReduceScatter that leaves tensor dim ``scatter_dim`` split over
    those axes (``result``).

    >>> step = Reduce(Layout((2, 2), (-1, 0), (4, 6)), (0,), "sum", scatter_dim=0)
    >>> step.groups, step.result.tensor_map
    (((0, 2), (1, 3)), (1, 0))
    """

    layout: Layout
    axes: tuple[int, ...]
    op: str = "sum"
    scatter_dim: int | None = None

    @property
    def groups(self) -> tuple[tuple[int, ...], ...]:
        """The communication groups (stage-local ranks)."""
        return self.layout.groups(self.axes)

    @property
    def result(self) -> Layout:
        """The layout of the reduced blocks."""
        if self.scatter_dim is None:
            return self.layout
        tm = list(self.layout.tensor_map)
        tm[self.scatter_dim] = len(self.layout.dev_matrix) - 1 - self.axes[0]
        return Layout(self.layout.dev_matrix, tuple(tm), self.layout.shape)


Step = Union[Reduce, Plan]


def _scatter_dim(src: Layout, axes: tuple[int, ...], dst: Layout) -> int | None:
    """The tensor dim a ReduceScatter can leave split: ``dst`` (on the same device matrix) splits
    it over exactly the one partial axis (size-1 axes aside) while ``src`` keeps it whole."""
    if dst.dev_matrix != src.dev_matrix or len(axes) != 1:
        return None
    p = axes[0]
    dev = src.dev_matrix

    def real(d: int, lay: Layout) -> set[int]:
        return {k for k in lay.dim_axes(d) if dev[k] > 1}

    for d in range(src.ndim):
        if not real(d, src) and real(d, dst) == {p} and src.shape[d] % dev[p] == 0:
            return d
    return None


@lru_cache(maxsize=4096)
def plan_steps(src: DistSpec, dst: Layout) -> tuple[Step, ...]:
    """The steps that turn data distributed as ``src`` into blocks of ``dst``: pending partial
    results are reduced first (straight into ``dst``'s split with one ReduceScatter when ``dst``
    splits a dim over the single partial axis, else one AllReduce), then a :class:`Plan` moves
    the blocks (omitted when they are already in place). ``src.layout`` must be set.

    >>> from distinfer.layout import replicated
    >>> partial = DistSpec(Layout((2, 2), (-1, -1), (4, 6)), partial=(0,))
    >>> [type(s).__name__ for s in plan_steps(partial, Layout((2, 2), (1, -1), (4, 6)))]   # ReduceScatter
    ['Reduce']
    >>> [type(s).__name__ for s in plan_steps(partial, replicated((4, 6), 4))]             # AllReduce, then nothing moves
    ['Reduce']
    >>> [type(s).__name__ for s in plan_steps(DistSpec(Layout((4,), (0, -1), (4, 6))), replicated((4, 6), 4))]
    ['Plan']
    """
    layout = src.layout
    steps: list[Step] = []
    reduce = reduce_step(src, dst)
    if reduce is not None:
        steps.append(reduce)
        layout = reduce.result
    if not layout.same_blocks(dst):
        steps.append(make_plan(layout, dst))
    return tuple(steps)


def reduce_step(src: DistSpec, dst: Layout) -> Reduce | None:
    """The collective completing ``src``'s pending partial results on the way to ``dst`` (None: none pend).

    >>> reduce_step(DistSpec(Layout((2, 2), (-1, -1), (4, 6)), partial=(0,)), Layout((2, 2), (1, -1), (4, 6))).scatter_dim
    0
    """
    if not src.partial:
        return None
    return Reduce(src.layout, tuple(src.partial), src.reduce_op, _scatter_dim(src.layout, tuple(src.partial), dst))


@lru_cache(maxsize=4096)
def move_volumes(src: Layout, dst: Layout) -> tuple[int, int]:
    """``(elements sent between ranks, elements copied within a rank)`` by ``make_plan(src, dst)``
    (a destination holding a piece is its own source), counted without building the plan.

    >>> move_volumes(Layout((4,), (0, -1), (8, 8)), Layout((4,), (-1, 0), (8, 8)))
    (48, 16)
    """
    _check_compatible(src, dst)
    blocks, holders = src.unique_blocks
    mine = dst.boxes  # [ranks, ndim, 2]
    lo = np.maximum(blocks[None, :, :, 0], mine[:, None, :, 0])
    hi = np.minimum(blocks[None, :, :, 1], mine[:, None, :, 1])
    volume = np.clip(hi - lo, 0, None).prod(axis=2)  # [ranks, blocks]
    held = np.zeros(volume.shape, dtype=bool)
    for b, ranks in enumerate(holders):
        held[[r for r in ranks if r < dst.num_devices], b] = True
    return int(volume[~held].sum()), int(volume[held].sum())
