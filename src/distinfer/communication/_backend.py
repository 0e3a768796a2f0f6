"""The message layer: MPI through mpi4py, or a world of one rank without it.

Importing ``mpi4py.MPI`` starts MPI (about a second), so nothing here imports it until
:func:`world` is first called inside an MPI launch. Every collective in distinfer is called by
all ranks in the same order (eager SPMD), so group communicators are built for a whole
partition of the ranks at once with ``Comm.Split``.

Counters (:attr:`Backend.stats`) record the point-to-point messages and bytes each rank sends,
so tests can assert what a redistribution cost.
"""
from __future__ import annotations

import logging
import os
import sys
import threading
import traceback
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from .._cpu import share_cores

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
    """Collectives on numpy arrays over the world or over groups of a rank partition."""

    rank: int = 0
    size: int = 1

    def __init__(self) -> None:
        self.stats = CommStats()

    # Overridden by the MPI backend; the single-rank versions are exact.
    def allreduce(self, arr: np.ndarray, partition: Partition, op: str = "sum") -> np.ndarray:
        self.stats.allreduces += 1
        return np.array(arr, copy=True)

    def reduce_scatter(self, arr: np.ndarray, partition: Partition, axis: int, op: str = "sum") -> np.ndarray:
        """Sum over this rank's group, keeping piece ``index in group`` of ``axis`` (cut evenly)."""
        self.stats.reduce_scatters += 1
        return np.array(arr, copy=True)

    def exchange(self, sends: dict[int, list[np.ndarray]],
                 recvs: dict[int, list[tuple[tuple[int, ...], np.dtype]]]) -> dict[int, list[np.ndarray]]:
        """Send ``sends[dst]`` arrays to each ``dst``; receive arrays of the given shapes from each source."""
        if sends or recvs:
            raise RuntimeError("a world of one rank cannot exchange messages")
        return {}

    def allgather_object(self, obj):
        return [obj]

    def bcast_object(self, obj, root: int = 0):
        return obj

    def barrier(self) -> None:
        pass

    def abort(self, code: int = 1) -> None:
        os._exit(code)


class MPIBackend(Backend):
    """:class:`Backend` over ``MPI.COMM_WORLD``."""

    def __init__(self) -> None:
        super().__init__()
        from mpi4py import MPI  # starts MPI

        self.MPI = MPI
        self.comm = MPI.COMM_WORLD
        self.rank = self.comm.Get_rank()
        self.size = self.comm.Get_size()
        self._groups: dict[tuple[int, ...], object] = {}

    def group_comm(self, partition: Partition):
        """Communicator of this rank's group in ``partition`` (world ranks), cached.

        Built with ``Create_group``, which only the group's members call: ranks of other pipeline
        stages never join a stage's reductions.
        """
        mine = next(g for g in partition if self.rank in g)
        if len(mine) == self.size:
            return self.comm
        comm = self._groups.get(mine)
        if comm is None:
            group = self.comm.Get_group().Incl(list(mine))
            comm = self.comm.Create_group(group, tag=hash(mine) & 0x7FFF)
            group.Free()
            self._groups[mine] = comm
        return comm

    def allreduce(self, arr: np.ndarray, partition: Partition, op: str = "sum") -> np.ndarray:
        self.stats.allreduces += 1
        self.stats.allreduce_bytes += arr.nbytes
        src = np.ascontiguousarray(arr).reshape(np.shape(arr))  # reshape: ascontiguousarray makes 0-d 1-d
        out = np.empty_like(src)
        mpi_op = {"sum": self.MPI.SUM, "max": self.MPI.MAX, "min": self.MPI.MIN}[op]
        comm = self.group_comm(partition)
        if src.dtype.kind == "V" or src.dtype.name in _WIDEN:
            wide = src.astype(np.float32)
            res = np.empty_like(wide)
            comm.Allreduce(wide, res, op=mpi_op)
            return res.astype(src.dtype)
        comm.Allreduce(src, out, op=mpi_op)
        return out.reshape(arr.shape)

    def reduce_scatter(self, arr: np.ndarray, partition: Partition, axis: int, op: str = "sum") -> np.ndarray:
        self.stats.reduce_scatters += 1
        comm = self.group_comm(partition)
        size = comm.Get_size()
        # Put the scattered axis first so each member's piece is one contiguous run.
        moved = np.moveaxis(arr, axis, 0)
        wide = moved.dtype.name in _WIDEN
        send = np.ascontiguousarray(moved, dtype=np.float32 if wide else moved.dtype)
        self.stats.allreduce_bytes += send.nbytes
        recv = np.empty((send.shape[0] // size,) + send.shape[1:], dtype=send.dtype)
        mpi_op = {"sum": self.MPI.SUM, "max": self.MPI.MAX, "min": self.MPI.MIN}[op]
        comm.Reduce_scatter_block(send, recv, op=mpi_op)
        return np.ascontiguousarray(np.moveaxis(recv.astype(arr.dtype, copy=False), 0, axis))

    def exchange(self, sends, recvs):
        MPI = self.MPI
        requests = []
        received: dict[int, np.ndarray] = {}
        layout: dict[int, list[tuple[int, tuple[int, ...], np.dtype]]] = {}
        for src, specs in recvs.items():
            sizes = [int(np.prod(shape)) * np.dtype(dt).itemsize for shape, dt in specs]
            buf = np.empty(sum(sizes), dtype=np.uint8)
            received[src] = buf
            layout[src] = [(n, shape, np.dtype(dt)) for n, (shape, dt) in zip(sizes, specs)]
            requests.append(self.comm.Irecv([buf, MPI.BYTE], source=src, tag=17))
        keep = []
        for dst, arrays in sends.items():
            payload = np.concatenate([np.ascontiguousarray(a).reshape(-1).view(np.uint8) for a in arrays]) \
                if len(arrays) > 1 else np.ascontiguousarray(arrays[0]).reshape(-1).view(np.uint8)
            keep.append(payload)
            self.stats.messages += 1
            self.stats.bytes_sent += payload.nbytes
            requests.append(self.comm.Isend([payload, MPI.BYTE], dest=dst, tag=17))
        MPI.Request.Waitall(requests)
        out: dict[int, list[np.ndarray]] = {}
        for src, buf in received.items():
            arrays, offset = [], 0
            for n, shape, dt in layout[src]:
                arrays.append(buf[offset:offset + n].view(dt).reshape(shape))
                offset += n
            out[src] = arrays
        return out

    def allgather_object(self, obj):
        return self.comm.allgather(obj)

    def bcast_object(self, obj, root: int = 0):
        return self.comm.bcast(obj, root=root)

    def barrier(self) -> None:
        self.comm.Barrier()

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


_WORLD: Backend | None = None


def world() -> Backend:
    """The process's backend, created on first use (MPI only when launched by mpirun)."""
    global _WORLD
    if _WORLD is None:
        _WORLD = MPIBackend() if launched_size() > 1 else Backend()
        if _WORLD.size > 1:
            _install_abort_on_error(_WORLD)
            share_cores(_WORLD.ranks_on_node())  # BLAS threads: this rank's share of the node's cores
    return _WORLD


def is_started() -> bool:
    return _WORLD is not None


def reset_for_tests(backend: Backend | None = None) -> None:
    """Replace the backend (tests only)."""
    global _WORLD
    _WORLD = backend


def _install_abort_on_error(backend: Backend) -> None:
    """An uncaught exception on any rank prints that rank's traceback and aborts the whole job."""
    previous = sys.excepthook

    def hook(exc_type, exc, tb):
        text = "".join(traceback.format_exception(exc_type, exc, tb))
        sys.stderr.write(f"[distinfer rank {backend.rank}] uncaught exception, aborting all ranks:\n{text}")
        sys.stderr.flush()
        sys.stdout.flush()
        if issubclass(exc_type, KeyboardInterrupt):
            previous(exc_type, exc, tb)
        backend.abort(1)

    def thread_hook(args):
        hook(args.exc_type, args.exc_value, args.exc_traceback)

    sys.excepthook = hook
    threading.excepthook = thread_hook
