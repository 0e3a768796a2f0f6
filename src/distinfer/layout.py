"""The layout algebra: which block of a tensor each rank holds.

A :class:`Layout` is MindSpore's TensorLayout: a device matrix, a tensor map and the full
shape, plus an optional optimizer shard. Conventions (spec §4.1), exactly as MindSpore:

* ranks are numbered row-major over ``dev_matrix`` (last axis fastest);
* ``tensor_map[d] == -1`` leaves dim ``d`` whole; ``v >= 0`` splits it over device axis
  ``dev_matrix[len(dev_matrix) - 1 - v]``, i.e. ``v`` counts from the RIGHT; a tuple of such
  values splits one dim over several axes, the first listed outermost;
* device axes no entry refers to are replication axes;
* with an optimizer shard, axis 0 of the model-parallel block is split again across the ranks
  that hold the same block (sorted ascending, in consecutive sub-groups of ``opt_shard_size``,
  ``-1`` meaning the whole group).

Everything else (redistribution plans, checkpoint resharding, export) is built on
:meth:`Layout.boxes`, the ``rank -> block`` map for all ranks at once.

>>> lay = Layout((2, 2, 2), (-1, 1), (784, 512))   # seed layer1.weight on 8 ranks
>>> lay.block(2)
(slice(0, 784, None), slice(256, 512, None))
>>> lay.local_shape
(784, 256)
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property, lru_cache
from typing import Any, Sequence, Union

import numpy as np

from .errors import LayoutError

__all__ = ["Layout", "DistSpec", "MapEntry", "replicated"]

MapEntry = Union[int, tuple[int, ...]]


def _entry_axes(entry: MapEntry) -> tuple[int, ...]:
    """Map values referenced by one tensor_map entry (empty when not split)."""
    if isinstance(entry, tuple):
        return tuple(v for v in entry if v != -1)
    return () if entry == -1 else (entry,)


def _canon_entry(entry) -> MapEntry:
    if isinstance(entry, (list, tuple)):
        vals = tuple(int(v) for v in entry if int(v) != -1)
        if not vals:
            return -1
        return vals[0] if len(vals) == 1 else vals
    return int(entry)


@dataclass(frozen=True)
class Layout:
    """A tensor of full ``shape`` laid out over ``prod(dev_matrix)`` ranks (see module doc).

    >>> from distinfer.layout import Layout
    >>> lay = Layout((2, 2), (1, -1), (4, 6))  # rows split over device axis 0, axis 1 replicates
    >>> lay.num_devices, lay.splits, lay.local_shape
    (4, (2, 1), (2, 6))
    >>> lay.box(3), lay.holders(2)
    (((2, 4), (0, 6)), [2, 3])
    """

    dev_matrix: tuple[int, ...]
    tensor_map: tuple[MapEntry, ...]
    shape: tuple[int, ...]
    opt_shard_size: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "dev_matrix", tuple(int(d) for d in self.dev_matrix))
        object.__setattr__(self, "tensor_map", tuple(_canon_entry(e) for e in self.tensor_map))
        object.__setattr__(self, "shape", tuple(int(s) for s in self.shape))
        self._validate()

    # ----------------------------------------------------------------------------- checks
    def _validate(self) -> None:
        dev, tm, shape = self.dev_matrix, self.tensor_map, self.shape
        if any(d < 1 for d in dev):
            raise LayoutError(f"device matrix {list(dev)} has a non-positive entry")
        if len(tm) != len(shape):
            raise LayoutError(
                f"tensor_map {self._tm_list()} has {len(tm)} entries but the tensor of shape "
                f"{shape} has {len(shape)} dims")
        used: list[int] = []
        for d, entry in enumerate(tm):
            for v in _entry_axes(entry):
                if not 0 <= v < len(dev):
                    raise LayoutError(
                        f"tensor_map {self._tm_list()} entry {v} for dim {d} is outside device "
                        f"matrix {list(dev)} (valid: -1..{len(dev) - 1}, counted from the right)")
                used.append(v)
        if len(used) != len(set(used)):
            raise LayoutError(f"tensor_map {self._tm_list()} uses a device axis twice (device matrix "
                              f"{list(dev)}, shape {shape})")
        for d, s in enumerate(self.splits):
            if shape[d] % s:
                raise LayoutError(
                    f"axis {d} of shape {shape} is split {s} ways, but {shape[d]} is not "
                    f"divisible by {s} (device matrix {list(dev)}, tensor_map {self._tm_list()})")
        if self.opt_shard_size:
            k = self.opt_group_size
            if not shape or (shape[0] // self.splits[0]) % k:
                raise LayoutError(
                    f"optimizer shard of size {k} cannot split axis 0 of the block "
                    f"{self.mp_shape} of shape {shape}")

    def _tm_list(self) -> list:
        return [list(e) if isinstance(e, tuple) else e for e in self.tensor_map]

    # --------------------------------------------------------------------------- basics
    @cached_property
    def num_devices(self) -> int:
        return math.prod(self.dev_matrix)

    @property
    def ndim(self) -> int:
        return len(self.shape)

    def axis_index(self, v: int) -> int:
        """Position in ``dev_matrix`` of map value ``v`` (which counts from the right)."""
        return len(self.dev_matrix) - 1 - v

    @cached_property
    def splits(self) -> tuple[int, ...]:
        """Pieces per tensor dim from the model-parallel map (MindSpore's tensor_strategy)."""
        return tuple(math.prod(self.dev_matrix[self.axis_index(v)] for v in _entry_axes(e))
                     for e in self.tensor_map)

    @cached_property
    def mp_shape(self) -> tuple[int, ...]:
        """Shape of a model-parallel block (before any optimizer shard)."""
        return tuple(n // s for n, s in zip(self.shape, self.splits))

    @cached_property
    def opt_group_size(self) -> int:
        """Ranks sharing one model-parallel block that split it again on axis 0 (1 if none)."""
        if not self.opt_shard_size:
            return 1
        replicas = self.num_devices // math.prod(self.splits)
        return replicas if self.opt_shard_size == -1 else min(self.opt_shard_size, replicas)

    @cached_property
    def local_shape(self) -> tuple[int, ...]:
        """Shape of every rank's block (splits are even)."""
        shape = list(self.mp_shape)
        if shape and self.opt_group_size > 1:
            shape[0] //= self.opt_group_size
        return tuple(shape)

    @property
    def used_axes(self) -> frozenset[int]:
        """Device-axis positions (indices into dev_matrix) that split some dim."""
        return frozenset(self.axis_index(v) for e in self.tensor_map for v in _entry_axes(e))

    @property
    def replica_axes(self) -> tuple[int, ...]:
        """Device-axis positions along which ranks hold identical model-parallel blocks."""
        return tuple(k for k in range(len(self.dev_matrix)) if k not in self.used_axes)

    def coords(self, rank: int) -> tuple[int, ...]:
        """Row-major coordinates of ``rank`` in the device matrix (last axis fastest)."""
        return tuple(int(c) for c in np.unravel_index(rank % self.num_devices, self.dev_matrix))

    @cached_property
    def coords_table(self) -> np.ndarray:
        """``[ranks, len(dev_matrix)]`` coordinates of every rank (read-only)."""
        n = self.num_devices
        out = np.stack(np.unravel_index(np.arange(n), self.dev_matrix), axis=1) if n else \
            np.zeros((0, len(self.dev_matrix)), np.int64)
        out.setflags(write=False)
        return out

    # ---------------------------------------------------------------- the rank -> block map
    @cached_property
    def _mp_index(self) -> np.ndarray:
        """[ranks, ndim] index of each rank's model-parallel block along each dim."""
        n = self.num_devices
        coords = self.coords_table
        idx = np.zeros((n, self.ndim), dtype=np.int64)
        for d, entry in enumerate(self.tensor_map):
            for v in _entry_axes(entry):  # first listed axis is outermost
                k = self.axis_index(v)
                idx[:, d] = idx[:, d] * self.dev_matrix[k] + coords[:, k]
        return idx

    @cached_property
    def _opt_index(self) -> np.ndarray:
        """[ranks] index of each rank's axis-0 piece inside its optimizer shard group."""
        n = self.num_devices
        k = self.opt_group_size
        if k == 1:
            return np.zeros(n, dtype=np.int64)
        # Ranks holding the same block, ascending; consecutive sub-groups of k.
        keys = np.ravel_multi_index(self._mp_index.T, self.splits) if self.ndim else np.zeros(n, np.int64)
        order = np.lexsort((np.arange(n), keys))
        pos_in_group = np.empty(n, dtype=np.int64)
        sorted_keys = keys[order]
        starts = np.r_[0, np.flatnonzero(np.diff(sorted_keys)) + 1]
        group_start = np.repeat(starts, np.diff(np.r_[starts, n]))
        pos_in_group[order] = np.arange(n) - group_start
        return pos_in_group % k

    @cached_property
    def boxes(self) -> np.ndarray:
        """``[ranks, ndim, 2]`` int64 array of each rank's block as ``[start, stop)`` per dim."""
        mp = np.asarray(self.mp_shape, dtype=np.int64)
        start = self._mp_index * mp
        stop = start + mp
        if self.ndim and self.opt_group_size > 1:
            piece = mp[0] // self.opt_group_size
            start[:, 0] += self._opt_index * piece
            stop[:, 0] = start[:, 0] + piece
        out = np.stack([start, stop], axis=-1)
        out.setflags(write=False)
        return out

    @cached_property
    def _box_tuples(self) -> tuple[tuple[tuple[int, int], ...], ...]:
        return tuple(tuple((int(a), int(b)) for a, b in box) for box in self.boxes.tolist())

    def box(self, rank: int) -> tuple[tuple[int, int], ...]:
        """``((start, stop), ...)`` of ``rank``'s block (ranks beyond the matrix wrap, as in a stage)."""
        boxes = self._box_tuples
        return boxes[rank % len(boxes)]

    def block(self, rank: int) -> tuple[slice, ...]:
        """Index of ``rank``'s block in the full tensor, like ``jax`` ``devices_indices_map``."""
        return tuple(slice(a, b) for a, b in self.box(rank))

    def slice(self, full: np.ndarray, rank: int) -> np.ndarray:
        """``rank``'s block of a full array (a view)."""
        if tuple(full.shape) != self.shape:
            raise LayoutError(f"array of shape {tuple(full.shape)} does not match layout shape {self.shape}")
        return full[self.block(rank)]

    def holders(self, rank: int) -> list[int]:
        """All ranks holding exactly the same block as ``rank`` (including itself), ascending."""
        mine = self.boxes[rank % self.num_devices]
        return [int(r) for r in np.flatnonzero((self.boxes == mine).all(axis=(1, 2)))]

    @cached_property
    def unique_blocks(self) -> tuple[np.ndarray, tuple[tuple[int, ...], ...]]:
        """Distinct blocks ``[k, ndim, 2]`` and, for each, the ranks holding it (ascending)."""
        flat = self.boxes.reshape(self.num_devices, -1)
        uniq, inverse = np.unique(flat, axis=0, return_inverse=True)
        inverse = np.asarray(inverse).reshape(-1)
        holders = tuple(tuple(int(r) for r in np.flatnonzero(inverse == i)) for i in range(len(uniq)))
        return uniq.reshape(len(uniq), self.ndim, 2), holders

    @property
    def is_replicated(self) -> bool:
        """True when every rank holds the full tensor."""
        return all(s == 1 for s in self.splits) and self.opt_group_size == 1

    def same_blocks(self, other: "Layout") -> bool:
        """True when both layouts give every rank the same block (e.g. raw vs normalised form)."""
        return (self.shape == other.shape and self.num_devices == other.num_devices
                and np.array_equal(self.boxes, other.boxes))

    # ------------------------------------------------------------------- other spellings
    @classmethod
    def from_axes(cls, dev_matrix: Sequence[int], dim_axes: Sequence, shape: Sequence[int],
                  opt_shard_size: int = 0) -> "Layout":
        """A layout whose dims name the device-axis *positions* (indices into ``dev_matrix``,
        counted from the left) that split them: ``-1`` for none, a tuple for several (outermost
        first). Op rules and ``ms.Layout`` aliases are written this way.

        >>> Layout.from_axes((2, 2, 2), (-1, 1), (784, 512))   # split by the middle axis
        Layout(dev_matrix=[2, 2, 2], tensor_map=[-1, 1], shape=[784, 512])
        >>> Layout.from_axes((2, 4), ((0, 1), -1), (16, 3)).tensor_map
        ((1, 0), -1)
        """
        m = len(dev_matrix)

        def entry(p: Any) -> MapEntry:
            if isinstance(p, (tuple, list)):
                vals = tuple(m - 1 - int(q) for q in p if int(q) != -1)
                return _canon_entry(vals) if vals else -1
            return -1 if int(p) == -1 else m - 1 - int(p)

        return cls(tuple(dev_matrix), tuple(entry(p) for p in dim_axes), tuple(shape), opt_shard_size)

    @classmethod
    def from_splits(cls, splits: Sequence[int], shape: Sequence[int], num_devices: int) -> "Layout":
        """A split-count strategy for one tensor (``(2, 1, 4)``: dim 0 in 2, dim 2 in 4) over
        ``num_devices`` ranks: one device axis per dim, in dim order, and the remaining factor as a
        replication axis on the right (MindSpore's rule for a dataset strategy).

        >>> Layout.from_splits((2, 1), (8, 3), 8)
        Layout(dev_matrix=[2, 1, 4], tensor_map=[2, -1], shape=[8, 3])
        """
        splits = tuple(int(v) for v in splits)
        used = math.prod(splits)
        if len(splits) != len(shape):
            raise LayoutError(f"the strategy {splits} has {len(splits)} entries but the tensor of shape "
                              f"{tuple(shape)} has {len(shape)} dims")
        if used < 1 or num_devices % used:
            raise LayoutError(f"the strategy {splits} uses {used} devices, which does not divide {num_devices}")
        dev = splits + ((num_devices // used,) if num_devices > used else ())
        return cls.from_axes(dev or (1,), [d if v > 1 else -1 for d, v in enumerate(splits)], shape)

    @classmethod
    def from_record(cls, dev_matrix: Sequence[int], tensor_map: Sequence, shape: Sequence[int],
                    opt_weight_shard_size: int = 0) -> "Layout":
        """A layout as a strategy file records it, with MindSpore's optimizer-shard size ``-1``
        ("every rank holding the block") resolved to that count.

        >>> Layout.from_record([4], [-1, -1], (512, 512), -1).opt_shard_size
        4
        """
        size = int(opt_weight_shard_size)
        if size == -1:
            size = math.prod(dev_matrix) // max(math.prod(cls.map_splits(dev_matrix, tensor_map)), 1)
        return cls(tuple(dev_matrix), tuple(tensor_map), tuple(shape), max(size, 0))

    @classmethod
    def from_local_shape(cls, dev_matrix: Sequence[int], tensor_map: Sequence, local_shape: Sequence[int],
                         opt_weight_shard_size: int = 0) -> "Layout":
        """The layout whose every rank holds a block of ``local_shape`` (the full shape from a
        slice in a rank's file), optimizer shard as :meth:`from_record`.

        >>> Layout.from_local_shape([2, 2, 2], [-1, 1], (784, 256)).shape
        (784, 512)
        >>> Layout.from_local_shape([4], [-1, -1], (128, 512), -1).shape
        (512, 512)
        """
        splits = cls.map_splits(dev_matrix, tensor_map)
        if len(splits) != len(local_shape):
            raise LayoutError(f"tensor_map {list(tensor_map)} has {len(splits)} entries but the block has shape "
                              f"{tuple(local_shape)}")
        full = [int(n) * s for n, s in zip(local_shape, splits)]
        probe = cls.from_record(dev_matrix, tensor_map, full, 0)
        size = int(opt_weight_shard_size)
        group = (probe.num_devices // max(math.prod(splits), 1) if size == -1 else
                 min(size, probe.num_devices // max(math.prod(splits), 1)) if size > 0 else 1)
        if full and group > 1:
            full[0] *= group
        return cls.from_record(dev_matrix, tensor_map, full, opt_weight_shard_size)

    @staticmethod
    def map_splits(dev_matrix: Sequence[int], tensor_map: Sequence) -> tuple[int, ...]:
        """Pieces per dim of a tensor map over a device matrix (no shape needed).

        >>> Layout.map_splits((2, 4), (1, -1)), Layout.map_splits((2, 4), ((1, 0),))
        ((2, 1), (8,))
        """
        m = len(dev_matrix)
        return tuple(math.prod(int(dev_matrix[m - 1 - v]) for v in _entry_axes(_canon_entry(e))) for e in tensor_map)

    # ------------------------------------------------------------------------ rewriting
    def normalized(self) -> "Layout":
        """MindSpore's recorded form: size-1 device axes removed and the map renumbered."""
        dev = self.dev_matrix
        keep = [k for k, d in enumerate(dev) if d != 1]
        if len(keep) == len(dev):
            return self
        if not keep:  # a single device: MindSpore records [1]
            return Layout((1,), tuple(-1 for _ in self.tensor_map), self.shape, self.opt_shard_size)
        new_v = {len(dev) - 1 - k: len(keep) - 1 - i for i, k in enumerate(keep)}

        def remap(entry: MapEntry) -> MapEntry:
            vals = tuple(new_v[v] for v in _entry_axes(entry) if v in new_v)
            return _canon_entry(vals) if isinstance(entry, tuple) or vals else -1

        return Layout(tuple(dev[k] for k in keep), tuple(remap(e) for e in self.tensor_map),
                      self.shape, self.opt_shard_size)

    def without_opt_shard(self) -> "Layout":
        return Layout(self.dev_matrix, self.tensor_map, self.shape, 0) if self.opt_shard_size else self

    def opt_shard_step(self) -> int:
        """MindSpore's ``opt_weight_shard_step``: the rank stride between group members (0 if none)."""
        if self.opt_group_size == 1:
            return 0
        same = (self._mp_index == self._mp_index[0]).all(axis=1)
        group = np.flatnonzero(same)[: self.opt_group_size]
        return int(group[-1] - group[0]) // (len(group) - 1)

    def dim_axes(self, d: int) -> tuple[int, ...]:
        """Device-axis positions (indices into ``dev_matrix``) splitting tensor dim ``d``, outermost first.

        >>> Layout((2, 4), ((1, 0), -1), (8, 3)).dim_axes(0), Layout((2, 4), (0, -1), (8, 3)).dim_axes(1)
        ((0, 1), ())
        """
        return tuple(self.axis_index(v) for v in _entry_axes(self.tensor_map[d]))

    def groups(self, axes: Sequence[int]) -> tuple[tuple[int, ...], ...]:
        """Groups of ranks that differ only in their coordinates on device-axis positions ``axes``
        (the communication groups of a collective over those axes), each ascending.

        >>> Layout((2, 2), (1, -1), (4, 6)).groups((1,))   # pairs along the last (fastest) axis
        ((0, 1), (2, 3))
        >>> Layout((2, 2), (1, -1), (4, 6)).groups((0,))
        ((0, 2), (1, 3))
        """
        return _groups(self.dev_matrix, tuple(sorted(int(a) for a in axes)))

    def tensor_map_list(self) -> list:
        """The tensor map as MindSpore lists it (nested entries as lists)."""
        return self._tm_list()

    def __repr__(self) -> str:
        opt = f", opt_shard_size={self.opt_shard_size}" if self.opt_shard_size else ""
        return f"Layout(dev_matrix={list(self.dev_matrix)}, tensor_map={self._tm_list()}, shape={list(self.shape)}{opt})"


def _groups(dev_matrix: tuple[int, ...], axes: tuple[int, ...]) -> tuple[tuple[int, ...], ...]:
    n = math.prod(dev_matrix)
    coords = np.stack(np.unravel_index(np.arange(n), dev_matrix), axis=1) if n else np.zeros((0, len(dev_matrix)))
    other = [k for k in range(len(dev_matrix)) if k not in set(axes)]
    keys = np.ravel_multi_index(coords[:, other].T, [dev_matrix[k] for k in other]) if other else np.zeros(n, np.int64)
    order = np.lexsort((np.arange(n), keys))  # by group, ranks ascending inside each
    size = n // max(len(np.unique(keys)), 1)
    return tuple(tuple(int(r) for r in g) for g in order.reshape(-1, size)) if n else ()


@lru_cache(maxsize=4096)
def _replicated(shape: tuple[int, ...], num_devices: int) -> Layout:
    return Layout((num_devices,), tuple(-1 for _ in shape), shape)


def replicated(shape: Sequence[int], num_devices: int) -> Layout:
    """Every one of ``num_devices`` ranks holds the whole tensor.

    >>> from distinfer.layout import replicated
    >>> lay = replicated((4, 6), 2)
    >>> lay, lay.is_replicated, lay.box(1)
    (Layout(dev_matrix=[2], tensor_map=[-1, -1], shape=[4, 6]), True, ((0, 4), (0, 6)))
    """
    return _replicated(tuple(int(s) for s in shape), int(num_devices))


@dataclass(frozen=True)
class DistSpec:
    """How one tensor is distributed: its :class:`Layout` (``None``: every rank holds all of it),
    the device-axis positions over which its blocks are still *partial* results that must be
    reduced with ``reduce_op`` (``"sum"``, ``"max"`` or ``"min"``) before anyone reads them, and
    the pipeline ``stage`` holding it (``None``: every stage).

    >>> spec = DistSpec(Layout((2, 2), (1, -1), (4, 6)), partial=(1,))
    >>> spec.is_partial, spec.reduced().is_partial, spec.reduced().layout == spec.layout
    (True, False, True)
    """

    layout: Layout | None = None
    partial: tuple[int, ...] = ()
    reduce_op: str = "sum"
    stage: int | None = None

    @property
    def is_partial(self) -> bool:
        return bool(self.partial)

    def reduced(self, layout: Layout | None = None) -> "DistSpec":
        """The spec once the partial results are reduced (into ``layout``, if given)."""
        return DistSpec(self.layout if layout is None else layout, (), "sum", self.stage)

    def laid_out(self, layout: Layout) -> "DistSpec":
        """The same spec with ``layout`` (e.g. a whole tensor's replicated layout made explicit)."""
        return self if layout is self.layout else DistSpec(layout, self.partial, self.reduce_op, self.stage)

    def on_stage(self, stage: int | None) -> "DistSpec":
        return DistSpec(self.layout, self.partial, self.reduce_op, stage)
