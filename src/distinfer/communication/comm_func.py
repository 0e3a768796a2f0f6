"""``mindspore.communication.comm_func``: collectives on this rank's Tensors, over MPI.

The functions take and return ordinary Tensors holding each rank's own data (not laid-out
global tensors): what rank ``r`` passes is what MindSpore's device ``r`` holds. ``group`` is a
group made by :func:`~distinfer.communication.create_group` or the world (any of MindSpore's world
group names). As in MindSpore 2.10, ``all_reduce``, ``all_gather_into_tensor`` and
``reduce_scatter_tensor`` return ``(output, handle)``; the work is done when they return, so the
handle is None unless ``async_op=True`` asks for one (whose ``wait()`` returns at once).

Without ``mpirun`` the world is one rank and every collective returns its input's values.

>>> import numpy as np, distinfer as ms
>>> from distinfer.communication import comm_func
>>> out, handle = comm_func.all_reduce(ms.Tensor(np.ones((2, 2), np.float32)))
>>> out.asnumpy().tolist(), handle
([[1.0, 1.0], [1.0, 1.0]], None)
>>> comm_func.barrier()
"""
from __future__ import annotations

from typing import Any, Optional

import numpy as np

from ..tensor import Tensor
from . import GlobalComm, _backend, _group_ranks

__all__ = ["all_reduce", "all_gather_into_tensor", "reduce_scatter_tensor", "reduce", "broadcast", "barrier",
           "gather_into_tensor", "scatter_tensor", "send", "recv", "isend", "irecv", "ReduceOp", "CommHandle"]


class ReduceOp:
    """The reduction names the collectives take."""

    SUM = "sum"
    MAX = "max"
    MIN = "min"
    PROD = "prod"


class CommHandle:
    """What an ``async_op=True`` collective returns with its output: the work is already complete.

    >>> from distinfer.communication.comm_func import CommHandle
    >>> CommHandle().wait()
    """

    def wait(self) -> None:
        """Block until the operation is done (it is)."""


_WORLD = GlobalComm.WORLD_COMM_GROUP


def _check_tensor(api: str, tensor: Any) -> np.ndarray:
    if not isinstance(tensor, Tensor):
        raise TypeError(f"For {api}, the input tensor must be tensor")
    return tensor.asnumpy()


def _check_group(group: Any) -> tuple[int, ...]:
    if not isinstance(group, str):
        raise TypeError(f"group must be type of string, but got {type(group)}")
    ranks = _group_ranks(group)
    me = _backend.world().rank
    if me not in ranks:
        raise ValueError(f"rank {me} is not a member of group {group!r} {list(ranks)}")
    return ranks


def _check_rank(api: str, name: str, value: Any, ranks: tuple[int, ...]) -> int:
    """A world rank inside ``ranks`` (MindSpore's ``src``/``dst`` are global ranks)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"For {api}, the {name} must be int")
    if value not in ranks:
        raise ValueError(f"For {api}, the {name} {value} is not a rank of the group {list(ranks)}")
    return value


def _check_op(api: str, op: Any) -> str:
    if not isinstance(op, str):
        raise TypeError(f"For {api}, the input op type must be str")
    if op not in ("sum", "prod", "min", "max"):
        raise TypeError(f"For {api}, the input op value must be one of sum, prod, min, max")
    return op


def _out(arr: np.ndarray, like: Tensor) -> Tensor:
    return Tensor(np.asarray(arr, dtype=like.dtype.np))


def _handled(out: Tensor, async_op: bool) -> tuple[Tensor, Optional[CommHandle]]:
    return out, (CommHandle() if async_op else None)


def _allreduce(arr: np.ndarray, ranks: tuple[int, ...], op: str) -> np.ndarray:
    world = _backend.world()
    if op != "prod":
        return world.allreduce(arr, (ranks,), op)
    pieces = _allgather(arr, ranks)  # the backend has no product; gather and multiply in rank order
    return np.prod(np.stack(pieces), axis=0).astype(arr.dtype)


def _allgather(arr: np.ndarray, ranks: tuple[int, ...]) -> list[np.ndarray]:
    """Every member's array (same shape and dtype as ours), in group order."""
    world = _backend.world()
    others = [r for r in ranks if r != world.rank]
    got = world.exchange({r: [arr] for r in others}, {r: [(arr.shape, arr.dtype)] for r in others}) if others else {}
    return [arr if r == world.rank else got[r][0] for r in ranks]


def all_reduce(tensor: Tensor, op: str = ReduceOp.SUM, group: str = _WORLD, async_op: bool = False):
    """Reduce the members' tensors elementwise; every member gets the result.

    >>> import numpy as np, distinfer as ms
    >>> from distinfer.communication.comm_func import all_reduce
    >>> all_reduce(ms.Tensor(np.array([1.0, 2.0], np.float32)), op="max")[0].asnumpy().tolist()
    [1.0, 2.0]
    """
    arr = _check_tensor("all_reduce", tensor)
    op = _check_op("all_reduce", op)
    return _handled(_out(_allreduce(arr, _check_group(group), op), tensor), async_op)


def all_gather_into_tensor(tensor: Tensor, group: str = _WORLD, async_op: bool = False):
    """The members' tensors concatenated along dim 0, in group order, on every member."""
    arr = _check_tensor("all_gather_into_tensor", tensor)
    pieces = _allgather(arr, _check_group(group))
    return _handled(_out(np.concatenate([p.reshape((-1,) + arr.shape[1:]) for p in pieces]) if arr.ndim
                         else np.stack(pieces), tensor), async_op)


def reduce_scatter_tensor(tensor: Tensor, op: str = ReduceOp.SUM, group: str = _WORLD, async_op: bool = False):
    """Reduce the members' tensors, then keep this member's piece of dim 0 (cut evenly in group order)."""
    arr = _check_tensor("reduce_scatter_tensor", tensor)
    op = _check_op("reduce_scatter_tensor", op)
    ranks = _check_group(group)
    if not arr.ndim or arr.shape[0] % len(ranks):
        raise ValueError(f"For reduce_scatter_tensor, dim 0 of the input (shape {arr.shape}) must be divisible by "
                         f"the group size {len(ranks)}")
    if op == "prod":
        total = _allreduce(arr, ranks, op)
        return _handled(_out(np.split(total, len(ranks))[ranks.index(_backend.world().rank)], tensor), async_op)
    return _handled(_out(_backend.world().reduce_scatter(arr, (ranks,), 0, op), tensor), async_op)


def reduce(tensor: Tensor, dst: int, op: str = ReduceOp.SUM, group: str = _WORLD) -> Tensor:
    """Reduce the members' tensors onto world rank ``dst``; the other members get zeros."""
    arr = _check_tensor("reduce", tensor)
    op = _check_op("reduce", op)
    ranks = _check_group(group)
    dst = _check_rank("reduce", "dst", dst, ranks)
    total = _allreduce(arr, ranks, op)
    return _out(total if _backend.world().rank == dst else np.zeros_like(total), tensor)


def broadcast(tensor: Tensor, src: int = 0, group: str = _WORLD) -> Tensor:
    """World rank ``src``'s tensor on every member (each member passes a tensor of that shape and dtype).

    >>> import numpy as np, distinfer as ms
    >>> from distinfer.communication.comm_func import broadcast
    >>> broadcast(ms.Tensor(np.arange(3, dtype=np.int32)), src=0).asnumpy().tolist()
    [0, 1, 2]
    """
    arr = _check_tensor("broadcast", tensor)
    ranks = _check_group(group)
    src = _check_rank("broadcast", "src", src, ranks)
    world = _backend.world()
    if len(ranks) == 1:
        return _out(arr, tensor)
    if world.rank == src:
        world.exchange({r: [arr] for r in ranks if r != src}, {})
        return _out(arr, tensor)
    return _out(world.exchange({}, {src: [(arr.shape, arr.dtype)]})[src][0], tensor)


def barrier(group: str = _WORLD) -> None:
    """Wait until every member of ``group`` has called it."""
    ranks = _check_group(group)
    world = _backend.world()
    if len(ranks) == world.size:
        world.barrier()
    elif len(ranks) > 1:
        world.allreduce(np.zeros(1, np.int8), (ranks,))


def gather_into_tensor(tensor: Tensor, dst: int = 0, group: str = _WORLD) -> Tensor:
    """The members' tensors concatenated along dim 0 on world rank ``dst``; the others get zeros of one piece."""
    arr = _check_tensor("gather_into_tensor", tensor)
    ranks = _check_group(group)
    dst = _check_rank("gather_into_tensor", "dst", dst, ranks)
    world = _backend.world()
    if world.rank != dst:
        world.exchange({dst: [arr]}, {})
        return _out(np.zeros_like(arr), tensor)
    others = [r for r in ranks if r != dst]
    got = world.exchange({}, {r: [(arr.shape, arr.dtype)] for r in others}) if others else {}
    return _out(np.concatenate([arr if r == dst else got[r][0] for r in ranks]), tensor)


def scatter_tensor(tensor: Tensor, src: int = 0, group: str = _WORLD) -> Tensor:
    """World rank ``src``'s tensor cut evenly along dim 0; member ``i`` of the group gets piece ``i``."""
    arr = _check_tensor("scatter_tensor", tensor)
    ranks = _check_group(group)
    src = _check_rank("scatter_tensor", "src", src, ranks)
    if not arr.ndim or arr.shape[0] % len(ranks):
        raise ValueError(f"For scatter_tensor, dim 0 of the input (shape {arr.shape}) must be divisible by the "
                         f"group size {len(ranks)}")
    world = _backend.world()
    pieces = np.split(arr, len(ranks))
    if world.rank == src:
        world.exchange({r: [pieces[i]] for i, r in enumerate(ranks) if r != src}, {})
        return _out(pieces[ranks.index(src)], tensor)
    return _out(world.exchange({}, {src: [(pieces[0].shape, arr.dtype)]})[src][0], tensor)


def send(tensor: Tensor, dst: int = 0, group: str = _WORLD, tag: int = 0) -> None:
    """Send this rank's tensor to world rank ``dst`` (which calls :func:`recv`)."""
    arr = _check_tensor("send", tensor)
    dst = _check_rank("send", "dst", dst, _check_group(group))
    _backend.world().exchange({dst: [arr]}, {})


def recv(tensor: Tensor, src: int = 0, group: str = _WORLD, tag: int = 0) -> Tensor:
    """Receive a tensor of ``tensor``'s shape and dtype from world rank ``src`` (which calls :func:`send`)."""
    arr = _check_tensor("recv", tensor)
    src = _check_rank("recv", "src", src, _check_group(group))
    return _out(_backend.world().exchange({}, {src: [(arr.shape, arr.dtype)]})[src][0], tensor)


def isend(tensor: Tensor, dst: int = 0, group: str = _WORLD, tag: int = 0) -> CommHandle:
    """:func:`send`, returning a handle (the send has completed when it returns)."""
    send(tensor, dst, group, tag)
    return CommHandle()


def irecv(tensor: Tensor, src: int = 0, group: str = _WORLD, tag: int = 0) -> tuple[Tensor, CommHandle]:
    """:func:`recv`, returning ``(tensor, handle)`` (the receive has completed when it returns)."""
    return recv(tensor, src, group, tag), CommHandle()
