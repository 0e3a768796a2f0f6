"""The message layer: MPI through mpi4py, or a world of one rank without it.

Importing ``mpi4py.MPI`` starts MPI (about a second), so nothing here imports it until
:func:`world` is first called inside an MPI launch. Every collective in distinfer is called by
all ranks in the same order (eager SPMD); a reduction names the partition of the ranks into
groups, and each group gets its own communicator. Under MPI every call is a step watched by
:mod:`._guard`: ranks that diverge, leave or wait too long end the job with a message.

Counters (:attr:`Backend.stats`) record the point-to-point messages and bytes each rank sends,
so tests can assert what a redistribution cost.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from .._cpu import share_cores
from ..errors import DivergenceError
from . import _agree, _guard

log = logging.getLogger(__name__)

# Environment variables that mpirun/mpiexec launchers set for every process.
_SIZE_VARS = ("OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_SIZE", "MPI_LOCALNRANKS", "MV2_COMM_WORLD_SIZE")
_RANK_VARS = ("OMPI_COMM_WORLD_RANK", "PMIX_RANK", "PMI_RANK", "MV2_COMM_WORLD_RANK")
# Reduced in float32 and rounded back: MPI has no bfloat16, and float16 partial sums added in
# float16 would round twice (the local matmul already accumulated in float32).
_WIDEN = ("bfloat16", "float16")


def launched_size() -> int:
    """World size announced by an MPI launcher, 1 when not launched by one."""
    for var in _SIZE_VARS:
        if os.environ.get(var):
            return int(os.environ[var])
    return 1


def current_rank() -> int:
    """This process's world rank, known without starting MPI."""
    if _WORLD is not None:
        return _WORLD.rank
    for var in _RANK_VARS:
        if os.environ.get(var):
            return int(os.environ[var])
    return 0


@dataclass
class CommStats:
    """What this rank sent: point-to-point messages and their bytes, and collectives called."""

    messages: int = 0
    bytes_sent: int = 0
    allreduces: int = 0
    allreduce_bytes: int = 0
    reduce_scatters: int = 0
    log: list = field(default_factory=list)

    def reset(self) -> None:
        self.messages = self.bytes_sent = self.allreduces = self.allreduce_bytes = self.reduce_scatters = 0
        self.log.clear()


Partition = tuple[tuple[int, ...], ...]


class Backend:
    """Collectives on numpy arrays over the world or over groups of a rank partition.

    Every call takes ``what``: a short description of what it is for (``"partial sums of ..."``,
    ``"redistribute ..."``) that enters the step's fingerprint under MPI (see :mod:`._guard`).
    """

    rank: int = 0
    size: int = 1

    def __init__(self) -> None:
        self.stats = CommStats()

    # Overridden by the MPI backend; the single-rank versions are exact.
    def allreduce(self, arr: np.ndarray, partition: Partition, op: str = "sum", what: str = "allreduce") -> np.ndarray:
        self.stats.allreduces += 1
        return np.array(arr, copy=True)

    def reduce_scatter(self, arr: np.ndarray, partition: Partition, axis: int, op: str = "sum",
                       what: str = "reduce_scatter") -> np.ndarray:
        """Sum over this rank's group, keeping piece ``index in group`` of ``axis`` (cut evenly)."""
        self.stats.reduce_scatters += 1
        return np.array(arr, copy=True)

    def exchange(self, sends: dict[int, list[np.ndarray]],
                 recvs: dict[int, list[tuple[tuple[int, ...], np.dtype]]],
                 what: str = "exchange") -> dict[int, list[np.ndarray]]:
        """Send ``sends[dst]`` arrays to each ``dst``; receive arrays of the given shapes from each source."""
        if sends or recvs:
            raise RuntimeError("a world of one rank cannot exchange messages")
        return {}

    def allgather_object(self, obj, what: str = "allgather"):
        return [obj]

    def bcast_object(self, obj, root: int = 0, what: str = "bcast"):
        return obj

    def barrier(self, what: str = "barrier") -> None:
        pass

    def agree(self, what: str, value: Any, key: Any = None) -> None:
        """Raise :class:`~distinfer.errors.DivergenceError` unless every rank that passes the same
        ``key`` passes the same ``value`` (JSON-like values; one small collective under MPI)."""

    def create_comm(self, ranks: Sequence[int], what: str = "create a communicator"):
        """A communicator of world ``ranks`` (called by those ranks only); None without MPI."""
        return None

    def abort(self, code: int = 1) -> None:
        os._exit(code)


class MPIBackend(Backend):
    """:class:`Backend` over ``MPI.COMM_WORLD``; every call is a guarded step (:mod:`._guard`)."""

    def __init__(self) -> None:
        super().__init__()
        from mpi4py import MPI  # starts MPI

        self.MPI = MPI
        self.comm = MPI.COMM_WORLD
        self.rank = self.comm.Get_rank()
        self.size = self.comm.Get_size()
        self._groups: dict[tuple[int, ...], object] = {}
        self.guard = _guard.Guard(MPI, self.comm, _TIMEOUT)

    def create_comm(self, ranks: Sequence[int], what: str = "create a communicator"):
        """Built with ``Create_group``, which only the group's members call (ranks of other pipeline
        stages never join a stage's reductions); the members first meet by messages, so a member
        that never comes is diagnosed like any other step instead of blocking inside MPI."""
        ranks = tuple(ranks)
        others = [r for r in ranks if r != self.rank]
        self.exchange({r: [] for r in others}, {r: [] for r in others}, what=f"{what} for ranks {list(ranks)}")
        group = self.comm.Get_group().Incl(list(ranks))
        comm = self.comm.Create_group(group, tag=hash(ranks) & 0x7FFF)
        group.Free()
        return comm

    def group_comm(self, partition: Partition):
        """Communicator of this rank's group in ``partition`` (world ranks), cached."""
        mine = next(g for g in partition if self.rank in g)
        if len(mine) == self.size:
            return self.comm
        comm = self._groups.get(mine)
        if comm is None:
            comm = self._groups[mine] = self.create_comm(mine, "create the communicator of a reduction group")
        return comm

    def _begin(self, kind: str, what: str, partition: Partition, *facts: Any):
        """This rank's group communicator and the step of a collective on it."""
        comm = self.group_comm(partition)
        return comm, self.guard.begin(kind, what, *facts, group=next(g for g in partition if self.rank in g))

    def _arrive(self, kind: str, what: str, partition: Partition, *facts: Any):
        """This rank's group communicator, once every member has arrived at the same step."""
        comm, step = self._begin(kind, what, partition, *facts)
        self.guard.arrive(comm, step)
        return comm

    def allreduce(self, arr: np.ndarray, partition: Partition, op: str = "sum", what: str = "allreduce") -> np.ndarray:
        self.stats.allreduces += 1
        self.stats.allreduce_bytes += arr.nbytes
        src = np.ascontiguousarray(arr).reshape(np.shape(arr))  # reshape: ascontiguousarray makes 0-d 1-d
        comm, step = self._begin("allreduce", what, partition, src.shape, src.dtype.name, op)
        out = self.guard.reduce(comm, step, src.reshape(-1), op, _reduced_dtype(src.dtype))
        return out.astype(src.dtype, copy=False).reshape(src.shape)

    def reduce_scatter(self, arr: np.ndarray, partition: Partition, axis: int, op: str = "sum",
                       what: str = "reduce_scatter") -> np.ndarray:
        self.stats.reduce_scatters += 1
        comm, step = self._begin("reduce_scatter", what, partition, arr.shape, arr.dtype.name, axis, op)
        size = comm.Get_size()
        # Put the scattered axis first so each member's piece is one contiguous run (a row).
        moved = np.moveaxis(arr, axis, 0)
        self.stats.allreduce_bytes += moved.size * _reduced_dtype(moved.dtype).itemsize
        out = self.guard.reduce(comm, step, moved, op, _reduced_dtype(moved.dtype), scatter=True)
        piece = out.reshape((moved.shape[0] // size,) + moved.shape[1:]).astype(arr.dtype, copy=False)
        return np.ascontiguousarray(np.moveaxis(piece, 0, axis))

    def exchange(self, sends, recvs, what: str = "exchange"):
        MPI, guard = self.MPI, self.guard
        step = guard.begin("exchange", what)
        send_tags, recv_tags = guard.message_tags(
            step, {dst: tuple((tuple(map(int, a.shape)), a.dtype.str) for a in arrays) for dst, arrays in sends.items()},
            {src: tuple((tuple(map(int, shape)), np.dtype(dt).str) for shape, dt in specs)
             for src, specs in recvs.items()})
        requests, receives = [], {}
        received: dict[int, np.ndarray] = {}
        layout: dict[int, list[tuple[int, tuple[int, ...], np.dtype]]] = {}
        for src, specs in recvs.items():
            sizes = [int(np.prod(shape)) * np.dtype(dt).itemsize for shape, dt in specs]
            buf = np.empty(sum(sizes), dtype=np.uint8)
            received[src] = buf
            layout[src] = [(n, shape, np.dtype(dt)) for n, (shape, dt) in zip(sizes, specs)]
            receives[src] = guard.p2p.Irecv([buf, MPI.BYTE], source=src, tag=recv_tags[src])
            requests.append(receives[src])
        keep = []
        for dst, arrays in sends.items():
            payload = _payload(arrays)
            keep.append(payload)
            self.stats.messages += 1
            self.stats.bytes_sent += payload.nbytes
            requests.append(guard.p2p.Isend([payload, MPI.BYTE], dest=dst, tag=send_tags[dst]))
        guard.wait(requests, step, (received, keep), receives)
        guard.passed(step)
        out: dict[int, list[np.ndarray]] = {}
        for src, buf in received.items():
            arrays, offset = [], 0
            for n, shape, dt in layout[src]:
                arrays.append(buf[offset:offset + n].view(dt).reshape(shape))
                offset += n
            out[src] = arrays
        return out

    def allgather_object(self, obj, what: str = "allgather"):
        self._arrive("allgather", what, (tuple(range(self.size)),))
        return self.comm.allgather(obj)

    def bcast_object(self, obj, root: int = 0, what: str = "bcast"):
        self._arrive("bcast", what, (tuple(range(self.size)),), root)
        return self.comm.bcast(obj, root=root)

    def barrier(self, what: str = "barrier") -> None:
        self._arrive("barrier", what, (tuple(range(self.size)),))  # arriving is the barrier

    def agree(self, what: str, value: Any, key: Any = None) -> None:
        self._arrive("agree", what, (tuple(range(self.size)),))
        text = _agree.canonical(value)
        mine = np.array([_guard.digest(_agree.canonical(key)), _guard.digest(text)], np.int64)
        everyone = np.empty((self.size, 2), np.int64)
        self.comm.Allgather(mine, everyone)  # everyone has arrived
        if _agree.consistent(everyone):
            return
        texts = self.comm.allgather(text)
        self.guard.fail(DivergenceError(_agree.disagreement(what, everyone, texts)))

    def ranks_on_node(self) -> int:
        """How many ranks of the job share this rank's node (its shared-memory group), whatever
        launched them."""
        node = self.comm.Split_type(self.MPI.COMM_TYPE_SHARED)
        try:
            return node.Get_size()
        finally:
            node.Free()

    def abort(self, code: int = 1) -> None:
        self.comm.Abort(code)


def _reduced_dtype(dtype: np.dtype) -> np.dtype:
    """The dtype a reduction adds in: float32 for the 16-bit floats (see ``_WIDEN``)."""
    return np.dtype(np.float32) if dtype.kind == "V" or dtype.name in _WIDEN else dtype


def _payload(arrays: list[np.ndarray]) -> np.ndarray:
    """The bytes of ``arrays`` back to back (no copy for one contiguous array)."""
    if not arrays:
        return np.empty(0, np.uint8)
    if len(arrays) == 1:
        return np.ascontiguousarray(arrays[0]).reshape(-1).view(np.uint8)
    return np.concatenate([np.ascontiguousarray(a).reshape(-1).view(np.uint8) for a in arrays])


_WORLD: Backend | None = None
_TIMEOUT: float | None = None  # set_context(comm_timeout=...); None: DISTINFER_COMM_TIMEOUT or the default


def world() -> Backend:
    """The process's backend, created on first use (MPI only when launched by mpirun)."""
    global _WORLD
    if _WORLD is None:
        _WORLD = MPIBackend() if launched_size() > 1 else Backend()
        if isinstance(_WORLD, MPIBackend) and _WORLD.size > 1:
            _guard.install(_WORLD.guard)
            share_cores(_WORLD.ranks_on_node())  # BLAS threads: this rank's share of the node's cores
    return _WORLD


def is_started() -> bool:
    return _WORLD is not None


def reset_for_tests(backend: Backend | None = None) -> None:
    """Replace the backend (tests only)."""
    global _WORLD
    _WORLD = backend


def set_comm_timeout(seconds: float | None) -> None:
    """The watchdog limit: a step waiting longer ends the job (0: wait forever; None: the
    ``DISTINFER_COMM_TIMEOUT`` environment variable, else 600 s)."""
    global _TIMEOUT
    _TIMEOUT = seconds
    if isinstance(_WORLD, MPIBackend):
        _WORLD.guard.limit = _guard.timeout_from_env() if seconds is None else seconds


def agree(what: str, value: Any, key: Any = None) -> None:
    """Under an MPI launch, raise :class:`~distinfer.errors.DivergenceError` unless every rank that
    passes the same ``key`` passes the same ``value`` (a no-op in a world of one). A collective:
    every rank calls it.

    >>> agree("load_distributed_checkpoint", {"checkpoint_filenames": ["a.ckpt", "b.ckpt"]})
    """
    if launched_size() > 1:
        world().agree(what, value, key)


op_scope = _guard.op_scope
