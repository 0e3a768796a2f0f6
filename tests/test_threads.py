"""Threads per rank: however a job is started, its ranks on a node run no more BLAS threads than
the node has cores, and a thread count the user set is kept."""
from __future__ import annotations

import multiprocessing
import os
import subprocess
import sys

import numpy as np
import pytest

from distinfer import _cpu, launch

CORES = os.cpu_count() or 1


@pytest.fixture
def restore_threads():
    from threadpoolctl import threadpool_limits

    before = _cpu.blas_threads()
    yield
    threadpool_limits(before)


def test_share_cores_divides_the_node(monkeypatch, restore_threads):
    for var in _cpu.THREAD_VARS:
        monkeypatch.delenv(var, raising=False)
    assert _cpu.share_cores(4, cores=4) == 1
    assert _cpu.blas_threads() == 1
    want = min(2, len(os.sched_getaffinity(0)))
    assert _cpu.share_cores(1, cores=2) == want and _cpu.blas_threads() == want
    assert _cpu.share_cores(8, cores=2) == 1  # more ranks than cores: one thread each


def test_share_cores_keeps_the_users_setting(monkeypatch, restore_threads):
    before = _cpu.blas_threads()
    monkeypatch.setenv("OMP_NUM_THREADS", "7")
    assert _cpu.share_cores(4, cores=4) is None
    assert _cpu.blas_threads() == before


@pytest.mark.parametrize("m,k,n", [(512, 768, 8192), (768, 512, 8192), (512, 8192, 768), (4096, 64, 96), (7, 5, 3)])
def test_split_matmul_gives_numpys_product(monkeypatch, m, k, n):
    """Large products are cut into one piece per compute thread (forced to 3 here), also for
    transposed operands; small ones are one BLAS call."""
    monkeypatch.setattr(_cpu, "_THREADS", 3)
    rng = np.random.RandomState(m + n)
    a, b = rng.randn(m, k).astype(np.float32), rng.randn(k, n).astype(np.float32)
    for x, y in ((a, b), (np.ascontiguousarray(a.T).T, b), (a, np.ascontiguousarray(b.T).T)):
        got = _cpu.matmul(x, y)
        assert got.shape == (m, n) and got.flags.c_contiguous
        np.testing.assert_allclose(got, x @ y, rtol=1e-6, atol=1e-5)


def _product_in_child(conn):
    a = np.ones((512, 256), np.float32)
    conn.send(float(_cpu.matmul(a, np.ones((256, 1024), np.float32)).sum()))


def test_split_matmul_works_in_a_forked_child(monkeypatch):
    """The worker threads do not survive a fork: a child makes its own."""
    monkeypatch.setattr(_cpu, "_THREADS", 2)
    a = np.ones((512, 256), np.float32)
    assert float(_cpu.matmul(a, np.ones((256, 1024), np.float32)).sum()) == 512 * 1024 * 256  # parent's pool
    ctx = multiprocessing.get_context("fork")
    parent, child = ctx.Pipe()
    proc = ctx.Process(target=_product_in_child, args=(child,))
    proc.start()
    assert parent.poll(120), "the child's matmul hung"
    assert parent.recv() == 512 * 1024 * 256
    proc.join(30)


PROBE = ("import os, sys; from distinfer.communication import init, get_rank; from distinfer._cpu import blas_threads; "
         "init(); print('THREADS', get_rank(), blas_threads(), len(os.sched_getaffinity(0)), flush=True)")


def _plain_mpirun(n: int, extra: list[str], env_extra: dict[str, str] | None = None) -> dict[int, tuple[int, int]]:
    """``mpirun -n N python -c PROBE`` as MindSpore's tutorials start jobs, with no thread variables:
    each rank's (BLAS threads, cores it is bound to)."""
    env = {k: v for k, v in os.environ.items() if k not in _cpu.THREAD_VARS}
    env.update({"OMPI_ALLOW_RUN_AS_ROOT": "1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1"}, **(env_extra or {}))
    cmd = [launch.mpirun_command(n, [])[0], "-n", str(n), *extra, sys.executable, "-c", PROBE]
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    assert res.returncode == 0, res.stderr[-3000:]
    found = {}
    for line in res.stdout.splitlines():
        if line.startswith("THREADS "):
            _, rank, threads, bound = line.split()
            found[int(rank)] = (int(threads), int(bound))
    assert sorted(found) == list(range(n)), res.stdout
    return found


@pytest.mark.mpi
@pytest.mark.parametrize("n,extra", [(2, []), (2, ["--bind-to", "none"]), (4, ["--oversubscribe"])])
def test_plain_mpirun_ranks_share_the_cores(n, extra):
    found = _plain_mpirun(n, extra)
    assert all(t == max(1, min(CORES // n, bound)) for t, bound in found.values()), found
    assert sum(t for t, _ in found.values()) <= max(CORES, n)


@pytest.mark.mpi
def test_plain_mpirun_keeps_an_explicit_thread_count():
    found = _plain_mpirun(2, ["--bind-to", "none", "-x", "OPENBLAS_NUM_THREADS"], {"OPENBLAS_NUM_THREADS": "2"})
    assert {t for t, _ in found.values()} == {2}
