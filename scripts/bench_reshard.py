#!/usr/bin/env python3
"""Benchmark checkpoint resharding on a synthetic 8-rank GPT-style tensor-parallel checkpoint.

For each size (256 MiB and 1 GiB; 4 GiB with ``--big``) it writes 8 rank files (Megatron-style
tensor parallel: qkv/fc1 split by columns, proj/fc2 by rows, embedding by rows, layer norms
replicated), then measures in the same run:

* ``transform 8->4``: ``transform_checkpoints`` to a 2x2 destination with different splits;
* ``transform 8->1``: the full merge (``dst_strategy_file=None``);
* ``load``: ``load_distributed_checkpoint`` of destination rank 0's blocks (predict layout 2x2),
  timed around the call alone (the stand-in network and its predict layout are built first);
* ``limit``: the physical limit for the same bytes: the needed source bytes (pieces only, no
  coalesced gaps) read from the page cache into a preallocated buffer, plus the output files
  written as the transform writes them (same atomic writer: buffered writes, fsync, rename);
* ``naive``: merge-then-split written here (read every rank file whole, concatenate full
  tensors, slice per destination rank, write);
* ``memcpy``: numpy copy bandwidth between warm buffers, the yardstick for ``load``; also
  into freshly allocated memory, which is what a load fills;
* ``load limit``: the bytes the load needs read from the page cache into a fresh buffer of its
  output size by as many threads as the load uses, one contiguous read per file.
* ``cpu``: the process CPU time (all threads) of the load and of its limit; with C cores a wall
  time below cpu / C is impossible.

Each operation runs in a fresh spawned process so its peak RSS is its own (reported above the
process's baseline after imports), ``--repeat`` times (default 3; the best time is reported,
with the largest peak RSS), each after ``os.sync()`` with the source files read into the page
cache first (``--cold``: evicted with ``POSIX_FADV_DONTNEED`` instead, for the disk-bound
figures). ``read MiB`` of ``load`` is what the ranged reader reads for rank 0 (coalesced gaps
included), ``over-read`` that over the bytes needed. Informational: nothing asserts on timings.

    .venv/bin/python scripts/bench_reshard.py [--sizes 256,1024] [--big] [--keep DIR] [--repeat N] [--cold]
"""
from __future__ import annotations

import argparse
import math
import multiprocessing as mp
import os
import resource
import shutil
import tempfile
import time

import numpy as np

MiB = 1 << 20
HIDDEN = 1024
VOCAB = 8192
TP = 8


def _rss() -> int:
    """Peak RSS of this process since the last :func:`_reset_peak` (VmHWM; ru_maxrss survives exec)."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _cur_rss() -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def _reset_peak() -> None:
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
    except OSError:
        pass


# ---------------------------------------------------------------------------- synthetic
def _params(size_mib: int) -> list[tuple[str, tuple[int, ...], list, list]]:
    """(name, full shape, source tensor_map on [8], destination tensor_map on [2, 2])."""
    h = HIDDEN
    per_layer = 12 * h * h * 4
    layers = max(1, round((size_mib * MiB - VOCAB * h * 4) / per_layer))
    out = [("embedding.weight", (VOCAB, h), [0, -1], [-1, 0])]
    for i in range(layers):
        p = f"layers.{i}."
        out += [(p + "ln1.gamma", (h,), [-1], [-1]),
                (p + "attn.qkv.weight", (h, 3 * h), [-1, 0], [1, 0]),
                (p + "attn.proj.weight", (h, h), [0, -1], [0, 1]),
                (p + "ln2.gamma", (h,), [-1], [-1]),
                (p + "mlp.fc1.weight", (h, 4 * h), [-1, 0], [1, 0]),
                (p + "mlp.fc2.weight", (4 * h, h), [0, -1], [0, 1])]
    return out


def build(root: str, size_mib: int) -> tuple[str, str, str, int]:
    """Rank files and strategies under ``root``; returns (src_dir, src_strategy, dst_strategy, bytes)."""
    from distinfer.io import ParamLayout, StrategyFile, write_ckpt, write_strategy
    from distinfer.layout import Layout

    params = _params(size_mib)
    src_s = StrategyFile(layouts={n: ParamLayout([TP], s) for n, _, s, _ in params})
    dst_s = StrategyFile(layouts={n: ParamLayout([2, 2], d) for n, _, _, d in params})
    src_path, dst_path = os.path.join(root, "src_strategy.ckpt"), os.path.join(root, "dst_strategy.ckpt")
    write_strategy(src_path, src_s)
    write_strategy(dst_path, dst_s)
    rng = np.random.default_rng(0)
    base = rng.standard_normal(4 * HIDDEN * HIDDEN + VOCAB * HIDDEN, dtype=np.float32)
    total = 0
    for r in range(TP):
        d = os.path.join(root, "src", f"rank_{r}")
        os.makedirs(d, exist_ok=True)

        def items(r=r):
            for i, (n, shape, s, _) in enumerate(params):
                full = base[i: i + math.prod(shape)].reshape(shape)
                yield n, np.ascontiguousarray(Layout((TP,), tuple(s), shape).slice(full, r))
            yield "global_step", np.array([1], np.int32)

        write_ckpt(os.path.join(d, "checkpoint-1_1.ckpt"), items())
    total = sum(math.prod(s) * 4 for _, s, _, _ in params)
    return os.path.join(root, "src"), src_path, dst_path, total


# ---------------------------------------------------------------------------- operations
def _op_transform(src_dir, out, src_s, dst_s):
    from distinfer.parallel import transform_checkpoints

    transform_checkpoints(src_dir, out, "checkpoint_", src_s, dst_s)


def _op_load(src_dir, out, src_s, dst_s):
    from distinfer.io import read_strategy
    from distinfer.nn import Cell
    from distinfer.parallel import load_distributed_checkpoint
    from distinfer.reshard.planning import TrainStrategy, infer_full_shape
    from distinfer.reshard.sources import open_checkpoint

    files = [os.path.join(src_dir, f"rank_{r}", "checkpoint-1_1.ckpt") for r in range(TP)]
    train = TrainStrategy.from_file(src_s)

    class _P:  # a network parameter: only its full shape matters here
        def __init__(self, shape):
            self.global_shape = self.shape = shape

    with open_checkpoint(files[0]) as f:
        shapes = {n: f.entry(n).shape for n in f.names()}
    net_params = []
    for n in train.names():
        pl = train.param_layout(n)
        net_params.append((n, _P(infer_full_shape(pl, shapes[n]))))

    class _Net(Cell):  # the network: only its parameters' names and full shapes matter here
        def parameters_and_names(self, *args, **kwargs):
            return iter(net_params)

    layout = {n: [pl.dev_matrix, list(pl.tensor_map), [], 0, True, ""] for n, pl in read_strategy(dst_s).layouts.items()}
    # The clock covers the call alone: a user has the network and its predict layout already.
    t0, c0 = time.perf_counter(), time.process_time()
    got = load_distributed_checkpoint(_Net(), files, layout, src_s, rank_id=0, return_param_dict=True)
    t1, c1 = time.perf_counter(), time.process_time()
    return {"time": t1 - t0, "cpu": c1 - c0, "bytes": sum(p.asnumpy().nbytes for p in got.values())}


def _op_naive(src_dir, out, src_s, dst_s):
    """Merge every tensor in full from whole files, then split it for each destination rank."""
    from distinfer.io import CkptFile, write_ckpt
    from distinfer.reshard.planning import TrainStrategy

    src, dst = TrainStrategy.from_file(src_s), (TrainStrategy.from_file(dst_s) if dst_s else None)
    files = [CkptFile(os.path.join(src_dir, f"rank_{r}", "checkpoint-1_1.ckpt")) for r in range(TP)]
    full = {}
    for n in src.names():
        pieces = [f.read(n) for f in files]
        lay = src.layout(n, _full_shape(src, n, pieces[0].shape))
        arr = np.empty(lay.shape, np.float32)
        for r, p in enumerate(pieces):
            arr[lay.block(r)] = p
        full[n] = arr
    ndst = dst.device_num if dst else 1
    for r in range(ndst):
        path = os.path.join(out, f"rank_{r}", f"naive_{r}.ckpt")
        os.makedirs(os.path.dirname(path), exist_ok=True)
        write_ckpt(path, [(n, np.ascontiguousarray(a[dst.layout(n, a.shape).block(r)]) if dst else a)
                          for n, a in full.items()] + [("global_step", files[0].read("global_step"))])


def _full_shape(strategy, name, local):
    from distinfer.reshard.planning import infer_full_shape

    return infer_full_shape(strategy.param_layout(name), local)


def _op_limit(src_dir, out, src_s, dst_s):
    """The physical limit of a transform: read the needed source bytes from the page cache into
    a preallocated (already faulted-in) buffer, and write the output files the way the transform
    does (one file per destination rank, through the same atomic writer: 1 MiB-buffered writes,
    fsync, rename, directory fsync)."""
    from distinfer.io._atomic import atomic_output
    from distinfer.reshard.targets import plan_transform

    job = plan_transform(src_dir, src_s, dst_s)
    ranks = sorted(job.layouts)
    costs = [job.cost(r) for r in ranks]
    needed = _needed_per_file(job, ranks)
    job.close()
    sizes = [c["bytes_written"] for c in costs]
    buf = np.ones(min(max(max(needed.values()), max(sizes)), 64 * MiB), np.uint8)  # faulted in
    mv = memoryview(buf)
    t0 = time.perf_counter()
    for f, need in needed.items():
        fd = os.open(f, os.O_RDONLY)
        size = os.path.getsize(f)
        off = 0
        while off < need:
            pos = off % size
            off += os.preadv(fd, [mv[: min(len(buf), need - off, size - pos)]], pos)
        os.close(fd)
    t_read = time.perf_counter() - t0
    t0 = time.perf_counter()
    for r, n in zip(ranks, sizes):
        path = os.path.join(out, f"rank_{r}", f"limit{r}.ckpt")
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with atomic_output(path) as fh:
            left = n
            while left:
                left -= fh.write(mv[: min(len(buf), left)])
    t_write = time.perf_counter() - t0
    return {"read": sum(needed.values()), "written": sum(sizes), "t_read": t_read, "t_write": t_write}


def _needed_per_file(job, ranks) -> dict:
    """Bytes each source file must supply (the pieces alone, no coalesced gaps) for ``ranks``."""
    out: dict[str, int] = {}
    for r in ranks:
        for name, dl in job.layouts[r].items():
            plan = job.source.plan(name, dl, r, job.hint(r))
            item = np.dtype(job.source.dtype(name)).itemsize
            for pc in plan.pieces:
                f = job.files[job.source.file_rank(name, pc.src)]
                out[f] = out.get(f, 0) + pc.size * item
    return out


def _op_load_limit(src_dir, out, src_s, dst_s):
    """The physical limit of ``load``: the bytes rank 0 needs (pieces only, no gaps), read from
    the page cache by the load's reader threads into a fresh destination buffer of the load's
    output size (allocation and first-touch page faults included, as the load pays them), one
    contiguous read per file: no strides, no staging."""
    from concurrent.futures import ThreadPoolExecutor

    from distinfer.reshard.sources import read_threads
    from distinfer.reshard.targets import plan_transform

    job = plan_transform(src_dir, src_s, dst_s)
    needed = _needed_per_file(job, [0])
    job.close()
    threads = read_threads()
    t0, c0 = time.perf_counter(), time.process_time()
    buf = np.empty(sum(needed.values()), np.uint8)
    spans, pos = [], 0
    for f, n in needed.items():
        spans.append((f, pos, n))
        pos += n

    def read(part):
        mv = memoryview(buf)
        for f, at, n in part:
            fd = os.open(f, os.O_RDONLY)
            size = os.path.getsize(f)
            done = 0
            while done < n:
                done += os.preadv(fd, [mv[at + done: at + min(n, done + size - done % size)]], done % size)
            os.close(fd)

    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(read, [spans[k::threads] for k in range(threads)]))
    return {"time": time.perf_counter() - t0, "cpu": time.process_time() - c0, "bytes": len(buf), "threads": threads}


def _memcpy_fresh_gbps() -> float:
    """numpy copy into freshly allocated memory (page faults included), 128 MiB."""
    a = np.ones(128 * MiB // 4, np.float32)
    best = min(_t(lambda: np.copyto(np.empty_like(a), a)) for _ in range(5))
    return a.nbytes / best / 1e9


def _op_cost(src_dir, out, src_s, dst_s):
    """Bytes read vs needed for destination rank 0 (what load and transform read, from the plans)."""
    from distinfer.reshard.targets import plan_transform

    job = plan_transform(src_dir, src_s, dst_s)
    c = job.cost(0)
    job.close()
    return c


def _child(op, args, q):
    import distinfer  # noqa: F401  (imports count in the baseline, not in the peak)
    import distinfer.reshard.api  # noqa: F401  (imported before the peak is measured)

    _reset_peak()
    base = _cur_rss()
    t0 = time.perf_counter()
    res = globals()[op](*args)
    q.put({"time": time.perf_counter() - t0, "peak": _rss(), "base": base, "result": res})


REPEAT = 3
COLD = False


def _evict(src_dir: str) -> None:
    """Drop the source files' pages from the page cache (only theirs: POSIX_FADV_DONTNEED)."""
    for r, _, fs in os.walk(src_dir):
        for f in fs:
            fd = os.open(os.path.join(r, f), os.O_RDONLY)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            os.close(fd)


def _warm(src_dir: str) -> None:
    for r, _, fs in os.walk(src_dir):
        for f in fs:
            with open(os.path.join(r, f), "rb", buffering=0) as fh:
                while fh.read(64 * MiB):
                    pass


def run(op: str, *args, out_dir: str | None = None, src_dir: str | None = None) -> dict:
    """Best of ``REPEAT`` runs, each in a fresh process, each after ``os.sync()`` (no dirty pages
    from the previous run) with the source files cached (or evicted with ``--cold``) and the
    output directory removed. Peak RSS is the largest of the runs."""
    best = None
    for _ in range(REPEAT):
        if out_dir:
            shutil.rmtree(out_dir, ignore_errors=True)
        os.sync()
        if src_dir:
            _evict(src_dir) if COLD else _warm(src_dir)
        ctx = mp.get_context("spawn")
        q = ctx.Queue()
        p = ctx.Process(target=_child, args=(op, args, q))
        p.start()
        res = q.get()
        p.join()
        if isinstance(res["result"], dict) and "time" in res["result"]:
            res["time"] = res["result"]["time"]  # the op timed its own call (setup excluded)
        if best is None or res["time"] < best["time"]:
            peak = max(res["peak"] - res["base"], best["peak"] - best["base"]) if best else res["peak"] - res["base"]
            best = dict(res, peak=peak + res["base"])
        else:
            best["peak"] = max(best["peak"] - best["base"], res["peak"] - res["base"]) + best["base"]
    return best


def _memcpy_gbps() -> float:
    a = np.ones(128 * MiB // 4, np.float32)
    b = np.empty_like(a)
    best = min(_t(lambda: np.copyto(b, a)) for _ in range(5))
    return a.nbytes / best / 1e9


def _t(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def _dir_bytes(d: str) -> int:
    return sum(os.path.getsize(os.path.join(r, f)) for r, _, fs in os.walk(d) for f in fs)


def bench(root: str, size_mib: int) -> None:
    src_dir, src_s, dst_s, total = build(root, size_mib)
    _warm(src_dir)
    memcpy = _memcpy_gbps()
    print(f"\n== {size_mib} MiB model ({total / MiB:.0f} MiB of tensors; 8 rank files {_dir_bytes(src_dir) / MiB:.0f} MiB), "
          f"memcpy {memcpy:.2f} GB/s, page cache {'cold (source files evicted)' if COLD else 'warm'}, "
          f"best of {REPEAT}")
    print(f"{'operation':<18}{'wall s':>8}{'out GB/s':>10}{'read MiB':>10}{'written MiB':>12}"
          f"{'peak RSS MiB':>13}{'(+base)':>9}{'dest MiB':>10}{'vs limit':>10}{'vs naive':>10}")
    for label, dst, tag in [("transform 8->4", dst_s, "t4"), ("transform 8->1", None, "t1")]:
        out = os.path.join(root, tag)
        res = run("_op_transform", src_dir, out, src_s, dst, out_dir=out, src_dir=src_dir)
        written = _dir_bytes(out)
        shutil.rmtree(out, ignore_errors=True)
        lim_out = os.path.join(root, tag + "_lim")
        lim = run("_op_limit", src_dir, lim_out, src_s, dst, out_dir=lim_out, src_dir=src_dir)
        naive_out = os.path.join(root, tag + "_naive")
        naive = run("_op_naive", src_dir, naive_out, src_s, dst, out_dir=naive_out, src_dir=src_dir)
        limit_t = lim["result"]["t_read"] + lim["result"]["t_write"]
        ndst = 4 if dst else 1
        dest_block = written / ndst
        print(f"{label:<18}{res['time']:>8.2f}{written / res['time'] / 1e9:>10.2f}{lim['result']['read'] / MiB:>10.0f}"
              f"{written / MiB:>12.0f}{(res['peak'] - res['base']) / MiB:>13.0f}{res['base'] / MiB:>9.0f}"
              f"{dest_block / MiB:>10.0f}{limit_t / res['time']:>9.2f}x{naive['time'] / res['time']:>9.2f}x")
        print(f"{'  limit':<18}{limit_t:>8.2f}{written / limit_t / 1e9:>10.2f}   (read {lim['result']['t_read']:.2f} s"
              f" + write/fsync {lim['result']['t_write']:.2f} s)")
        print(f"{'  naive':<18}{naive['time']:>8.2f}{written / naive['time'] / 1e9:>10.2f}{'':>22}"
              f"{(naive['peak'] - naive['base']) / MiB:>13.0f}")
        for d in (out, lim_out, naive_out):
            shutil.rmtree(d, ignore_errors=True)
    cost = run("_op_cost", src_dir, "", src_s, dst_s)["result"]
    res = run("_op_load", src_dir, "", src_s, dst_s, src_dir=src_dir)
    lim = run("_op_load_limit", src_dir, "", src_s, dst_s, src_dir=src_dir)
    nbytes = res["result"]["bytes"]
    print(f"{'load (rank 0/4)':<18}{res['time']:>8.3f}{nbytes / res['time'] / 1e9:>10.2f}{cost['bytes_read'] / MiB:>10.0f}"
          f"{'-':>12}{(res['peak'] - res['base']) / MiB:>13.0f}{res['base'] / MiB:>9.0f}{nbytes / MiB:>10.0f}"
          f"   {nbytes / res['time'] / 1e9 / memcpy:.2f}x memcpy, {lim['time'] / res['time']:.2f}x limit, "
          f"over-read {cost['over_read']:.2f}x")
    # CPU seconds of all threads: with C cores the wall time cannot drop below cpu / C.
    print(f"{'  cpu':<18}{res['result']['cpu']:>8.3f}   (process CPU time of the load, all threads; the limit's "
          f"{lim['result']['cpu']:.3f}; {os.cpu_count()} cores)")
    fresh = _memcpy_fresh_gbps()
    print(f"{'  limit':<18}{lim['time']:>8.3f}{lim['result']['bytes'] / lim['time'] / 1e9:>10.2f}   (the needed bytes, "
          f"page cache -> fresh buffer, {lim['result']['threads']} threads, one read per file; "
          f"{lim['result']['bytes'] / lim['time'] / 1e9 / memcpy:.2f}x memcpy)")
    print(f"{'  memcpy':<18}{'':>8}{memcpy:>10.2f}   (warm buffers; into fresh memory {fresh:.2f} GB/s = "
          f"{fresh / memcpy:.2f}x)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="256,1024", help="model sizes in MiB, comma-separated")
    ap.add_argument("--big", action="store_true", help="also 4 GiB")
    ap.add_argument("--keep", default=None, help="work directory to use (kept)")
    ap.add_argument("--repeat", type=int, default=3, help="runs per measurement (the best is reported)")
    ap.add_argument("--cold", action="store_true",
                    help="evict the source files from the page cache before each run (default: warm them)")
    args = ap.parse_args()
    global REPEAT, COLD
    REPEAT, COLD = max(1, args.repeat), args.cold
    sizes = [int(s) for s in args.sizes.split(",") if s]
    if args.big:
        sizes.append(4096)
    for size in sizes:
        root = args.keep or tempfile.mkdtemp(prefix="bench_reshard_")
        try:
            bench(root, size)
        finally:
            if not args.keep:
                shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
