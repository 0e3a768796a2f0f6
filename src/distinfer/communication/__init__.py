"""``mindspore.communication`` over MPI.

Under ``mpirun -n N`` each process is one device; without a launcher the world is one rank and
everything still works. MPI starts in :func:`init` (or on first communication), never at import.

>>> from distinfer.communication import init, get_rank, get_group_size
>>> init()
>>> get_rank(), get_group_size()
(0, 1)
"""
from __future__ import annotations

import os
from typing import Sequence

from ..errors import CommError
from . import _backend

__all__ = ["init", "release", "get_rank", "get_group_size", "get_local_rank", "get_local_rank_size",
           "create_group", "destroy_group", "get_world_rank_from_group_rank",
           "get_group_rank_from_world_rank", "get_process_group_ranks", "GlobalComm",
           "HCCL_WORLD_COMM_GROUP", "NCCL_WORLD_COMM_GROUP", "MCCL_WORLD_COMM_GROUP"]

HCCL_WORLD_COMM_GROUP = "hccl_world_group"
NCCL_WORLD_COMM_GROUP = "nccl_world_group"
MCCL_WORLD_COMM_GROUP = "mccl_world_group"
_WORLD_NAMES = {HCCL_WORLD_COMM_GROUP, NCCL_WORLD_COMM_GROUP, MCCL_WORLD_COMM_GROUP}


class GlobalComm:
    """MindSpore's communication globals; on CPUs the backend is "mccl".

    >>> from distinfer.communication import GlobalComm, init
    >>> init()
    >>> GlobalComm.BACKEND, GlobalComm.WORLD_COMM_GROUP, GlobalComm.INITED
    ('mccl', 'mccl_world_group', True)
    """

    BACKEND = "mccl"
    WORLD_COMM_GROUP = MCCL_WORLD_COMM_GROUP
    INITED = False


# User groups: name -> world ranks (ascending), plus their MPI communicators.
_GROUPS: dict[str, tuple[int, ...]] = {}
_GROUP_COMMS: dict[str, object] = {}
_BACKENDS = ("hccl", "nccl", "mccl", "mpi")


def _check_group(api: str, group: object) -> None:
    """MindSpore's check: a group name must be a str (TypeError otherwise)."""
    if not isinstance(group, str):
        raise TypeError(f"For '{api}', the argument 'group' must be type of string, but got "
                        f"{type(group).__name__} ({group!r:.80}).")


def _check_rank_id(api: str, name: str, value: object) -> None:
    """An int rank (numpy integers too); TypeError otherwise, as in MindSpore."""
    if isinstance(value, bool) or not hasattr(type(value), "__index__"):
        raise TypeError(f"For '{api}', the argument '{name}' must be an int, but got {type(value).__name__} "
                        f"({value!r:.80}).")


def init(backend_name: str | None = None) -> None:
    """Start communication (MPI when launched by ``mpirun``) and set the context's device count.

    ``backend_name`` is accepted for compatibility ("hccl", "nccl", "mccl"); MPI is always used.
    Calling it again is harmless.

    >>> import distinfer as ms
    >>> from distinfer.communication import init
    >>> init("hccl")
    >>> ms.get_auto_parallel_context("device_num")  # the world size; 1 without mpirun
    1
    """
    if backend_name is not None and not isinstance(backend_name, str):
        raise TypeError(f"For 'init', the argument 'backend_name' must be a string, but got "
                        f"{type(backend_name).__name__} ({backend_name!r:.80}).")
    if backend_name is not None and backend_name not in _BACKENDS:
        raise RuntimeError(f"init: backend_name must be None or one of {_BACKENDS}, got {backend_name!r}")
    world = _backend.world()
    GlobalComm.INITED = True
    # MindSpore fills these from the launcher's environment (spec §10.2).
    os.environ.setdefault("RANK_ID", str(world.rank))
    os.environ.setdefault("RANK_SIZE", str(world.size))
    from .. import context

    context._on_comm_init(world.rank, world.size)


def release() -> None:
    """Release user groups (MPI itself is finalised at process exit).

    >>> from distinfer.communication import create_group, get_group_size, release
    >>> create_group("tmp_group", [0])
    >>> release()
    >>> get_group_size("tmp_group")
    Traceback (most recent call last):
    ...
    ValueError: communication group 'tmp_group' does not exist; create it with create_group first
    """
    for name in list(_GROUPS):
        destroy_group(name)


def _group_ranks(group: str) -> tuple[int, ...]:
    if group is None or group in _WORLD_NAMES:
        return tuple(range(_backend.world().size))
    if group not in _GROUPS:
        raise ValueError(f"communication group {group!r} does not exist; create it with create_group first")
    return _GROUPS[group]


def get_rank(group: str = GlobalComm.WORLD_COMM_GROUP) -> int:
    """Rank of this process in ``group`` (the world by default).

    >>> from distinfer.communication import get_rank
    >>> get_rank(), get_rank("hccl_world_group")  # one rank without mpirun
    (0, 0)
    """
    _check_group("get_rank", group)
    ranks = _group_ranks(group)
    me = _backend.world().rank
    if me not in ranks:
        raise ValueError(f"rank {me} is not a member of group {group!r} {list(ranks)}")
    return ranks.index(me)


def get_group_size(group: str = GlobalComm.WORLD_COMM_GROUP) -> int:
    """Number of ranks in ``group`` (the world by default).

    >>> from distinfer.communication import create_group, destroy_group, get_group_size
    >>> create_group("solo", [0])
    >>> get_group_size(), get_group_size("solo")
    (1, 1)
    >>> destroy_group("solo")
    """
    _check_group("get_group_size", group)
    return len(_group_ranks(group))


def _local_size() -> int:
    for var in ("OMPI_COMM_WORLD_LOCAL_SIZE", "MPI_LOCALNRANKS", "PMIX_LOCAL_SIZE"):
        if os.environ.get(var):
            return int(os.environ[var])
    return _backend.world().size


def get_local_rank(group: str = GlobalComm.WORLD_COMM_GROUP) -> int:
    """Rank of this process among the ranks on its machine.

    Read from the launcher's environment (Open MPI, MPICH, PMIx); otherwise the world rank
    modulo the local size.

    >>> from distinfer.communication import get_local_rank
    >>> get_local_rank()  # no launcher: rank 0
    0
    """
    _check_group("get_local_rank", group)
    for var in ("OMPI_COMM_WORLD_LOCAL_RANK", "MPI_LOCALRANKID", "PMIX_LOCAL_RANK"):
        if os.environ.get(var):
            return int(os.environ[var])
    return get_rank(group) % _local_size()


def get_local_rank_size(group: str = GlobalComm.WORLD_COMM_GROUP) -> int:
    """Number of ranks on this machine (the launcher's local size, else the world size).

    >>> from distinfer.communication import get_local_rank_size
    >>> get_local_rank_size()  # no launcher: one rank
    1
    """
    _check_group("get_local_rank_size", group)
    return _local_size()


def create_group(group: str, rank_ids: Sequence[int], options=None) -> None:
    """Create the named group of world ranks ``rank_ids``; called by the member ranks.

    >>> from distinfer.communication import create_group, destroy_group, get_process_group_ranks
    >>> create_group("grp", [0])
    >>> get_process_group_ranks("grp")
    [0]
    >>> destroy_group("grp")
    """
    _check_group("create_group", group)
    if not isinstance(rank_ids, (list, tuple, range)):
        raise TypeError(f"For 'create_group', the argument 'rank_ids' must be type of list, but got "
                        f"{type(rank_ids).__name__} ({rank_ids!r:.80}).")
    for r in rank_ids:
        _check_rank_id("create_group", "rank_ids", r)
    world = _backend.world()
    ranks = tuple(sorted(int(r) for r in rank_ids))
    if group in _WORLD_NAMES or group in _GROUPS:
        raise ValueError(f"create_group: group {group!r} already exists")
    if len(set(ranks)) != len(ranks) or not ranks:
        raise ValueError(f"create_group {group!r}: rank_ids {list(rank_ids)} must be distinct ranks in "
                         f"0..{world.size - 1}")
    if ranks[0] < 0 or ranks[-1] >= world.size:
        raise CommError(f"create_group {group!r}: rank_ids {list(rank_ids)} must be distinct ranks in "
                        f"0..{world.size - 1}")
    if world.rank not in ranks:
        raise CommError(f"create_group {group!r}: rank {world.rank} is not in rank_ids {list(ranks)} "
                        "(only member ranks call create_group)")
    _GROUPS[group] = ranks
    comm = world.create_comm(ranks, f"create_group({group!r})")
    if comm is not None:
        _GROUP_COMMS[group] = comm


def destroy_group(group: str) -> None:
    """Destroy a group made by :func:`create_group`.

    >>> from distinfer.communication import create_group, destroy_group
    >>> create_group("grp", [0])
    >>> destroy_group("grp")
    >>> destroy_group("hccl_world_group")
    Traceback (most recent call last):
    ...
    ValueError: the world group cannot be destroyed
    """
    _check_group("destroy_group", group)
    if group in _WORLD_NAMES:
        raise ValueError("the world group cannot be destroyed")
    if group not in _GROUPS:
        raise ValueError(f"destroy_group: group {group!r} does not exist")
    comm = _GROUP_COMMS.pop(group, None)
    if comm is not None:
        comm.Free()
    del _GROUPS[group]


def get_process_group_ranks(group: str = GlobalComm.WORLD_COMM_GROUP) -> list[int]:
    """World ranks of ``group`` (the world by default), ascending.

    >>> from distinfer.communication import get_process_group_ranks
    >>> get_process_group_ranks()
    [0]
    """
    _check_group("get_process_group_ranks", group)
    return list(_group_ranks(group))


def get_world_rank_from_group_rank(group: str, group_rank_id: int) -> int:
    """World rank of the process that has rank ``group_rank_id`` in ``group``.

    >>> from distinfer.communication import create_group, destroy_group, get_world_rank_from_group_rank
    >>> create_group("grp", [0])
    >>> get_world_rank_from_group_rank("grp", 0)
    0
    >>> destroy_group("grp")
    """
    _check_group("get_world_rank_from_group_rank", group)
    _check_rank_id("get_world_rank_from_group_rank", "group_rank_id", group_rank_id)
    ranks = _group_ranks(group)
    if not 0 <= group_rank_id < len(ranks):
        raise ValueError(f"group rank {group_rank_id} is outside group {group!r} of size {len(ranks)}")
    return ranks[group_rank_id]


def get_group_rank_from_world_rank(world_rank_id: int, group: str) -> int:
    """Rank in ``group`` of world rank ``world_rank_id`` (a ``ValueError`` if it is not a member).

    >>> from distinfer.communication import get_group_rank_from_world_rank
    >>> get_group_rank_from_world_rank(0, "hccl_world_group")
    0
    """
    _check_group("get_group_rank_from_world_rank", group)
    _check_rank_id("get_group_rank_from_world_rank", "world_rank_id", world_rank_id)
    ranks = _group_ranks(group)
    if world_rank_id not in ranks:
        raise ValueError(f"world rank {world_rank_id} is not in group {group!r} {list(ranks)}")
    return ranks.index(world_rank_id)
