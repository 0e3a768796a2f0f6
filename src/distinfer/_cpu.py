"""The CPU a rank computes on: how many BLAS threads it runs, and subnormal numbers.

**Threads per rank.** BLAS (and OpenMP) libraries start one thread per core in every process,
so N ranks on one node would run N times more compute threads than there are cores and spend
their time fighting over them. :func:`share_cores` gives each rank its share of the node's
cores, counting the ranks on the node through MPI itself (``MPI_COMM_TYPE_SHARED``), so it
works however the job was started: plain ``mpirun``, ``distinfer.launch`` or a cluster's own
launcher. A thread count the user set (``OMP_NUM_THREADS``, ``OPENBLAS_NUM_THREADS``, ...) is
kept, and a rank never runs more threads than the cores it is bound to.

**Large matmuls** (:func:`matmul`) are cut into one piece per compute thread, each computed
by single-threaded BLAS in a thread of its own. The pieces never wait for each other, so when
other processes share the cores a product slows down no more than one thread does; OpenBLAS's
own threads work in lockstep and wait for each other whenever one of them is descheduled (on
this 2-core machine, busy with other jobs, that made a predict 4-6x slower than its CPU time).

**Subnormals.** Float32 values below 1.2e-38 (e.g. the softmax probabilities of a large
vocabulary that underflow) take a slow path in many CPUs' arithmetic units. MindSpore's CPU
kernels flush them to zero in their matmuls and exponentials; :func:`flush_subnormals` does
the same for the kernel it wraps by setting the thread's flush-to-zero and
denormals-are-zero modes (x86 MXCSR FTZ/DAZ, ARM FPCR FZ) for its duration, through the C
library's ``fegetenv``/``fesetenv``. OpenBLAS's worker threads are started once more under that
mode by the first flushing kernel (new threads inherit the floating-point environment of the
thread that creates them), so the part of a matmul they compute flushes too; they keep the
mode afterwards, so a plain numpy matmul elsewhere in the process flushes subnormals in the
rows those threads compute. Elementwise ops outside these kernels keep subnormals, as
MindSpore's do. (The restart must not race with a BLAS call in another thread; distinfer's
kernels run in the thread that runs the network.)

>>> import numpy as np
>>> from distinfer._cpu import flush_subnormals
>>> tiny = np.full(2, 1e-39, np.float32)  # subnormal
>>> with flush_subnormals():
...     flushed = tiny * np.float32(1.0)
>>> flushed.tolist(), (tiny * np.float32(1.0)).tolist() == tiny.tolist()
([0.0, 0.0], True)
"""
from __future__ import annotations

import contextlib
import functools
import logging
import os
import threading
from typing import Iterator

import numpy as np

log = logging.getLogger(__name__)

__all__ = ["flush_subnormals", "flushing", "share_cores", "blas_threads", "compute_threads", "matmul",
           "THREAD_VARS"]

# Thread-count variables a user (or distinfer.launch) may set; any of them set means "keep mine".
THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "BLIS_NUM_THREADS",
               "GOTO_NUM_THREADS", "VECLIB_MAXIMUM_THREADS", "NUMEXPR_NUM_THREADS")


# ------------------------------------------------------------------------------ subnormals
class _FloatEnv:
    """The calling thread's floating-point environment through glibc's ``fenv_t``, where the
    flush bits sit at a known place: x86-64 keeps MXCSR at byte 28 (FTZ bit 15, DAZ bit 6),
    AArch64 keeps FPCR at byte 0 (FZ bit 24)."""

    _LAYOUT = {"x86_64": (32, 28, 0x8040), "amd64": (32, 28, 0x8040), "aarch64": (8, 0, 1 << 24)}

    def __init__(self) -> None:
        import ctypes.util  # here, not at import: only kernels that flush need it

        size, self.offset, self.bits = self._LAYOUT[os.uname().machine.lower()]
        self.libm = ctypes.CDLL(ctypes.util.find_library("m") or "libm.so.6")
        self.buffer = ctypes.c_ubyte * size
        saved = self.get()
        try:
            if self.set(self.with_flush(saved)) or not _subnormal_product_is_zero():
                raise OSError("setting the flush bits through fesetenv did not flush subnormals")
        finally:
            self.set(saved)

    def get(self):
        env = self.buffer()
        self.libm.fegetenv(env)
        return env

    def set(self, env) -> int:
        return self.libm.fesetenv(env)

    def with_flush(self, env):
        word = int.from_bytes(bytes(env[self.offset:self.offset + 4]), "little") | self.bits
        out = self.buffer.from_buffer_copy(env)  # a ctypes array type
        out[self.offset:self.offset + 4] = list(word.to_bytes(4, "little"))
        return out

    def flushing(self) -> bool:
        env = self.get()
        return int.from_bytes(bytes(env[self.offset:self.offset + 4]), "little") & self.bits == self.bits


def _subnormal_product_is_zero() -> bool:
    return float(np.float32(1e-39) * np.float32(1.0)) == 0.0


@functools.lru_cache(maxsize=None)
def _float_env() -> _FloatEnv | None:
    try:
        return _FloatEnv()
    except (KeyError, OSError, AttributeError) as exc:
        log.info("subnormals are not flushed on this platform (%s): %s", os.uname().machine, exc)
        return None


@contextlib.contextmanager
def flush_subnormals(blas_threads: bool = True) -> Iterator[None]:
    """Run the block with subnormal inputs and results of float arithmetic taken as zero, in
    this thread and (``blas_threads``) in the BLAS threads its matmuls use (a no-op where the
    platform has no such mode)."""
    fenv = _float_env()
    if fenv is None or fenv.flushing():
        yield
        return
    saved = fenv.get()
    fenv.set(fenv.with_flush(saved))
    try:
        if blas_threads:
            _restart_blas_threads()
        yield
    finally:
        fenv.set(saved)


def flushing(function):
    """Decorator: ``function`` runs inside :func:`flush_subnormals` (for kernels that flush as MindSpore's do)."""

    @functools.wraps(function)
    def run(*args, **kwargs):
        with flush_subnormals():
            return function(*args, **kwargs)

    return run


_BLAS_RESTARTED = False


def _restart_blas_threads() -> None:
    """Once, from inside a flushing block: stop OpenBLAS's worker threads and start them again,
    so they inherit the flush mode. Other BLAS libraries keep their threads as they are."""
    global _BLAS_RESTARTED
    if _BLAS_RESTARTED:
        return
    _BLAS_RESTARTED = True
    for lib in _openblas_pthread_libs():
        lib.blas_thread_shutdown_()
        lib.blas_thread_init()


def _openblas_pthread_libs() -> list:
    """The loaded OpenBLAS libraries with their own (pthreads) thread pool."""
    try:
        from threadpoolctl import threadpool_info
    except ImportError:  # pragma: no cover - threadpoolctl is a dependency
        return []
    libs = []
    for info in threadpool_info():
        if info.get("internal_api") != "openblas" or info.get("threading_layer") != "pthreads":
            continue
        import ctypes

        lib = ctypes.CDLL(info["filepath"])
        if hasattr(lib, "blas_thread_shutdown_") and hasattr(lib, "blas_thread_init"):
            libs.append(lib)
        else:
            log.info("%s has no thread-pool restart: its worker threads keep subnormals", info["filepath"])
    return libs


# ---------------------------------------------------------------------------- threads
def _bound_cores() -> int:
    """Cores this process may run on (its affinity mask; a launcher may bind ranks to cores)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def share_cores(ranks_on_node: int, cores: int | None = None) -> int | None:
    """Limit this process's BLAS/OpenMP threads to its share of the node's ``cores``
    (``os.cpu_count()`` by default) among ``ranks_on_node`` ranks, and to the cores it is bound
    to. Returns the thread count set, or None when a thread variable in the environment
    says the user chose (then nothing changes).

    """
    if any(os.environ.get(v) for v in THREAD_VARS):
        return None
    cores = cores or os.cpu_count() or 1
    threads = max(1, min(cores // max(ranks_on_node, 1), _bound_cores()))
    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=threads)
    global _BLAS_RESTARTED, _THREADS
    _BLAS_RESTARTED = False  # a larger pool may have started threads outside any flushing block
    _THREADS = threads
    log.info("%d rank(s) on this node, %d core(s): %d compute thread(s) per rank", ranks_on_node, cores, threads)
    return threads


def blas_threads() -> int:
    """The BLAS thread count now in force (the largest over the loaded BLAS libraries).

    >>> from distinfer._cpu import blas_threads
    >>> blas_threads() >= 1
    True
    """
    from threadpoolctl import threadpool_info

    return max((i["num_threads"] for i in threadpool_info() if i.get("user_api") == "blas"), default=1)


# ----------------------------------------------------------------------------- matmuls
_THREADS: int | None = None  # compute threads of this process, known once asked (or set by share_cores)
_SPLIT_MIN = 1 << 24  # multiply-adds below which one BLAS call is quicker than several
_POOL: tuple[int, int, object] | None = None  # (pid, workers, executor)
_SPLITTING = threading.Lock()  # one split product at a time: each sets the process's BLAS threads to 1


def compute_threads() -> int:
    """The threads this process computes with: its BLAS thread count when first asked, or the
    share :func:`share_cores` gave it."""
    global _THREADS
    if _THREADS is None:
        _THREADS = blas_threads()
    return _THREADS


def _pool(workers: int):
    """The worker threads of :func:`matmul` (made again after a fork: threads do not survive it)."""
    global _POOL
    if _POOL is None or _POOL[:2] != (os.getpid(), workers):
        from concurrent.futures import ThreadPoolExecutor

        _POOL = (os.getpid(), workers, ThreadPoolExecutor(workers, thread_name_prefix="distinfer-matmul"))
    return _POOL[2]


@functools.lru_cache(maxsize=None)
def _blas_controller():
    from threadpoolctl import ThreadpoolController

    return ThreadpoolController().select(user_api="blas")


def _piece(a, b, out, flush: bool) -> None:
    if flush:
        with flush_subnormals(blas_threads=False):
            np.matmul(a, b, out=out)
    else:
        np.matmul(a, b, out=out)


def matmul(a, b):
    """``np.matmul(a, b)`` for 2-D ``a`` and ``b``; a product of at least 2**24 multiply-adds is cut
    along its larger output dim into one piece per compute thread, each multiplied by
    single-threaded BLAS in its own thread (every output element is the same dot product).

    >>> import numpy as np
    >>> from distinfer._cpu import matmul
    >>> a, b = np.ones((512, 256), np.float32), np.ones((256, 1024), np.float32)
    >>> bool((matmul(a, b) == a @ b).all())
    True
    """
    threads = compute_threads()
    m, k = a.shape
    n = b.shape[1]
    if threads < 2 or m * k * n < _SPLIT_MIN:
        return np.matmul(a, b)
    out = np.empty((m, n), np.result_type(a, b))
    cuts = np.linspace(0, max(m, n), threads + 1).astype(int)
    pieces = [(a, b[:, lo:hi], out[:, lo:hi]) if n >= m else (a[lo:hi], b, out[lo:hi])
              for lo, hi in zip(cuts[:-1], cuts[1:])]
    fenv = _float_env()
    flush = fenv is not None and fenv.flushing()  # the pieces flush subnormals as the caller does
    with _SPLITTING, _blas_controller().limit(limits=1):
        done = [_pool(threads - 1).submit(_piece, *p, flush) for p in pieces[1:]]
        _piece(*pieces[0], False)
        for d in done:
            d.result()
    return out
