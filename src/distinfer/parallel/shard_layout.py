"""MindSpore's ``Layout``: strategies written with named device axes.

``Layout(device_matrix, alias_name)`` names the axes of a device matrix; calling it with one
alias per tensor dim (``"None"`` for a whole dim, a tuple of aliases to split one dim over several
axes) gives that tensor's layout, for ``Primitive.shard`` or ``dataset_strategy``. Alias ``i`` of
``alias_name`` is device axis ``len(device_matrix) - 1 - i`` in tensor-map terms (spec §10.3).

This is the user's way of writing a strategy; :class:`distinfer.layout.Layout` is the layout
algebra underneath (:meth:`Layout.to_layout` gives one). An op sharded with Layouts runs when
the blocks they give every rank are the ones its split-count strategy gives; otherwise the
call raises, naming both (distinfer's op rules place blocks by split counts).

>>> import distinfer as ms
>>> layout = ms.Layout((2, 4), ("dp", "mp"))
>>> layout("dp", "mp").to_dict()["tensor_map"], layout("mp", "None").to_dict()["tensor_map"]
((1, 0), (0, -1))
>>> layout(("dp", "mp"), "None").splits()
(8, 1)
"""
from __future__ import annotations

import math
from typing import Optional, Sequence

from ..errors import StrategyError
from ..layout import Layout as _BlockLayout

__all__ = ["Layout"]


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
        if len(set(alias_name)) != len(alias_name) or {"None", "interleaved_parallel"} & set(alias_name):
            raise ValueError(f"Layout: alias names must be distinct and not 'None' or 'interleaved_parallel', "
                             f"got {alias_name}")
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
            if name == "interleaved_parallel":
                raise NotImplementedError("Layout: 'interleaved_parallel' is not supported by distinfer")
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
        return {"device_matrix": self._device_matrix, "tensor_map": self._tensor_map, "interleaved_parallel": False,
                "alias_name": self._alias_name, "rank_list": list(range(math.prod(self._device_matrix)))}

    def splits(self) -> tuple[int, ...]:
        """How many pieces each tensor dim is cut into (the split-count strategy of this layout)."""
        return _BlockLayout.map_splits(self.to_dict()["device_matrix"], self._tensor_map)

    def to_layout(self, shape: Sequence[int]) -> _BlockLayout:
        """The block layout of a tensor of full ``shape`` (which block each rank holds)."""
        d = self.to_dict()
        if len(d["tensor_map"]) != len(shape):
            raise StrategyError(f"Layout {self}: {len(d['tensor_map'])} dims for a tensor of shape {tuple(shape)}")
        return _BlockLayout(d["device_matrix"], d["tensor_map"], tuple(shape))

    def __repr__(self) -> str:
        names = {len(self._alias_name) - 1 - i: a for i, a in enumerate(self._alias_name)}
        dims = "" if self._tensor_map is None else str(tuple(
            tuple(names[v] for v in e) if isinstance(e, tuple) else names.get(e, "None") for e in self._tensor_map))
        return f"Layout({self._device_matrix}, {self._alias_name}){dims}"


def is_layouts(strategy) -> bool:
    """True for a non-empty tuple or list of :class:`Layout` (rather than split tuples)."""
    return isinstance(strategy, (tuple, list)) and bool(strategy) and all(isinstance(s, Layout) for s in strategy)
