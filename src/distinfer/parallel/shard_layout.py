"""MindSpore's ``Layout``: strategies written with named device axes.

``Layout(device_matrix, alias_name)`` names the axes of a device matrix; calling it with one
alias per tensor dim (``"None"`` for a whole dim, a tuple of aliases to split one dim over several
axes) gives that tensor's layout, for ``Primitive.shard`` or ``dataset_strategy``. Alias ``i`` of
``alias_name`` is device axis ``len(device_matrix) - 1 - i`` in tensor-map terms (spec §10.3).

This is the user's way of writing a strategy; :class:`distinfer.layout.Layout` is the layout
algebra underneath (:meth:`Layout.to_layout` gives one). An op sharded with Layouts lays its
parameters out as they say and redistributes inputs that arrive otherwise to its rule's layouts.

``"interleaved_parallel"`` (allowed only as the last alias) is a virtual device axis: a rank
holds every piece along it, which MindSpore computes one after another to overlap computation
with communication. distinfer computes a rank's pieces at once, so the layout is its block
layout with that axis dropped. That is exact when the axis is the innermost split of its tensor
dim (``("dp", "interleaved_parallel")``: a rank's pieces are adjacent, one contiguous block); a
dim split with the interleaved axis outside another (``("interleaved_parallel", "dp")``) would
give a rank pieces that are not adjacent, which no block layout describes, and is refused.

>>> import distinfer as ms
>>> layout = ms.Layout((2, 4), ("dp", "mp"))
>>> layout("dp", "mp").to_dict()["tensor_map"], layout("mp", "None").to_dict()["tensor_map"]
((1, 0), (0, -1))
>>> layout(("dp", "mp"), "None").splits()
(8, 1)
>>> inter = ms.Layout((2, 2, 2), ("dp", "sp", "interleaved_parallel"))   # 4 devices, 2 pieces each
>>> x = inter(("dp", "interleaved_parallel"), "sp")
>>> x.to_dict()["tensor_map"], x.to_dict()["interleaved_parallel"], x.splits()
(((2, 0), 1), True, (2, 2))
>>> x.to_layout((8, 6))
Layout(dev_matrix=[2, 2], tensor_map=[1, 0], shape=[8, 6])
"""
from __future__ import annotations

import math
from typing import Optional, Sequence

from ..errors import StrategyError
from ..layout import Layout as _BlockLayout

__all__ = ["Layout"]

_INTERLEAVED = "interleaved_parallel"


class Layout:
    """``Layout(device_matrix, alias_name, rank_list=None)``; see the module doc.

    >>> import distinfer as ms
    >>> ms.Layout((2, 2, 2), ("dp", "sp", "mp"))(("dp", "sp"), "mp").to_dict()["tensor_map"]
    ((2, 1), 0)
    """

    def __init__(self, device_matrix: Sequence[int], alias_name: Sequence[str], rank_list: Optional[list] = None) -> None:
        if not isinstance(device_matrix, tuple) or not device_matrix or not all(
                isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in device_matrix):
            raise TypeError(f"Layout: device_matrix must be a non-empty tuple of positive ints, got {device_matrix!r}")
        if not isinstance(alias_name, tuple) or len(alias_name) != len(device_matrix) or not all(
                isinstance(a, str) for a in alias_name):
            raise TypeError(f"Layout: alias_name must be a tuple of {len(device_matrix)} str (one per device axis), "
                            f"got {alias_name!r}")
        if len(set(alias_name)) != len(alias_name) or "None" in alias_name:
            raise ValueError(f"Layout: alias names must be distinct and not 'None', got {alias_name}")
        if _INTERLEAVED in alias_name[:-1]:
            raise ValueError(f"When alias_name {alias_name} contains keyword 'interleaved_parallel', it should be at "
                             f"the last dim of alias_name, which means the virtual sharding.")
        if rank_list is not None and list(rank_list) != list(range(math.prod(device_matrix))):
            raise NotImplementedError("Layout: a rank_list other than all ranks in order is not supported by distinfer")
        self._device_matrix = tuple(device_matrix)
        self._alias_name = tuple(alias_name)
        self._tensor_map: Optional[tuple] = None

    def __call__(self, *tensor_map) -> "Layout":
        """This device matrix with one alias (or ``"None"``, or a tuple of aliases) per tensor dim."""
        used: list[str] = []

        def axis(name) -> int:
            if name == "None":
                return -1
            if name not in self._alias_name:
                raise ValueError(f"Layout: {name!r} is not one of the aliases {self._alias_name}")
            if name in used:
                raise ValueError(f"Layout: alias {name!r} is used for more than one dim in {tensor_map}")
            used.append(name)
            return len(self._alias_name) - 1 - self._alias_name.index(name)

        out = Layout(self._device_matrix, self._alias_name)
        out._tensor_map = tuple(tuple(axis(a) for a in e) if isinstance(e, tuple) else axis(e) for e in tensor_map)
        return out

    def to_dict(self) -> dict:
        """MindSpore's dict form: ``device_matrix``, ``tensor_map``, ``interleaved_parallel``, ``alias_name``, ``rank_list``."""
        if self._tensor_map is None:
            raise ValueError("Layout: the tensor_map is not set; call the layout with one alias per dim first")
        return {"device_matrix": self._device_matrix, "tensor_map": self._tensor_map,
                "interleaved_parallel": _INTERLEAVED in self._alias_name, "alias_name": self._alias_name,
                "rank_list": list(range(math.prod(self._device_matrix)))}

    def _blocks(self) -> tuple[tuple[int, ...], tuple]:
        """(device matrix, tensor map) of the devices that hold blocks: an interleaved axis (the
        last, map value 0) is dropped, as a rank holds all its pieces (see the module doc)."""
        d = self.to_dict()
        dev, tm = d["device_matrix"], d["tensor_map"]
        if not d["interleaved_parallel"]:
            return dev, tm

        def entry(e):
            axes = e if isinstance(e, tuple) else (e,)
            if 0 in axes and axes[-1] != 0:
                raise NotImplementedError(
                    f"Layout {self}: 'interleaved_parallel' splits a tensor dim outside another axis, so a rank's "
                    f"pieces of that dim are not adjacent; distinfer lays a rank's data out as one block, so list "
                    f"'interleaved_parallel' last in that dim's aliases")
            kept = tuple(v - 1 for v in axes if v > 0)
            return kept if isinstance(e, tuple) else (kept[0] if kept else -1)

        return dev[:-1] or (1,), tuple(entry(e) for e in tm)

    def splits(self) -> tuple[int, ...]:
        """How many blocks each tensor dim is cut into (the split-count strategy of this layout)."""
        return _BlockLayout.map_splits(*self._blocks())

    def to_layout(self, shape: Sequence[int]) -> _BlockLayout:
        """The block layout of a tensor of full ``shape`` (which block each rank holds)."""
        dev, tm = self._blocks()
        if len(tm) != len(shape):
            raise StrategyError(f"Layout {self}: {len(tm)} dims for a tensor of shape {tuple(shape)}")
        return _BlockLayout(dev, tm, tuple(shape))

    def __repr__(self) -> str:
        names = {len(self._alias_name) - 1 - i: a for i, a in enumerate(self._alias_name)}
        dims = "" if self._tensor_map is None else str(tuple(
            tuple(names[v] for v in e) if isinstance(e, tuple) else names.get(e, "None") for e in self._tensor_map))
        return f"Layout({self._device_matrix}, {self._alias_name}){dims}"


def is_layouts(strategy) -> bool:
    """True for a non-empty tuple or list of :class:`Layout` (rather than split tuples)."""
    return isinstance(strategy, (tuple, list)) and bool(strategy) and all(isinstance(s, Layout) for s in strategy)
