"""Read plans: which source rank's block supplies each piece of a destination block, in read-sized chunks.

Everything here is computed from strategies and layouts alone (no file is opened), so the
source sets (:mod:`.sources`) plan their reads with it and ``rank_list_for_transform`` answers
without any checkpoint.

Which replica is read. Among the source ranks holding a piece, the one whose device-matrix
coordinates agree most with the destination rank's own coordinates (``dst_rank % source stage
devices``) is chosen, lowest rank on ties (:class:`~distinfer.plan.NearestCoords`). This is the
rank MindSpore's ``TensorTransform`` takes (its redistribution keeps each device's own slice and
all-concats along split axes), so :func:`rank_list` reproduces ``rank_list_for_transform``, and
it spreads reads over the replicas deterministically: destination ranks with different
coordinates read different files.

Optimizer-sharded sources are ordinary layouts (``opt_shard_size``) and pipeline sources are
merged strategies whose names are ``"<stage>-<name>"`` (stage ``s`` = global ranks ``s*n ..
s*n+n-1``): the same code handles both.

>>> from distinfer.io.strategy_file import ParamLayout
>>> train = TrainStrategy({"w": ParamLayout([2, 2, 2], [-1, 1])})          # columns split by the middle axis
>>> lay = train.layout("w", (784, 512))
>>> [(p.src, p.box) for p in source_plan(lay, Layout((4,), (0, -1), (784, 512)), 0).pieces]
[(0, ((0, 196), (0, 256))), (2, ((0, 196), (256, 512)))]
>>> rank_list(train, None, 0)
[2, 0]
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass
from functools import lru_cache
from typing import Mapping, Optional, Sequence, Union

from ..errors import LayoutError, StrategyError
from ..io.strategy_file import ParamLayout, read_strategy, split_stage_name
from ..layout import Layout, replicated
from ..plan import NearestCoords, Piece, Plan, make_plan

__all__ = ["PIECE_BYTES", "TrainStrategy", "infer_full_shape", "source_plan", "rank_list"]

PathLike = Union[str, os.PathLike]
Box = tuple[tuple[int, int], ...]

#: Largest piece read through a temporary buffer (pieces that land contiguously in the
#: destination block are read in place whatever their size).
PIECE_BYTES = 16 * 1024 * 1024


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

    def holds(self, name: str, rank: int) -> bool:
        """True when global ``rank`` holds ``name``: its pipeline stage is ``name``'s (always without stages)."""
        return not self.is_pipeline or self.stage_of(name) == rank // self.stage_devices


# ------------------------------------------------------------------------------ chunking
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
            if not dst.holds(name, rank_id):
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
