#!/usr/bin/env python3
"""Benchmark the .ckpt reader on a 1 GiB checkpoint built in a temp dir.

Prints the time to index, then read throughput for one whole tensor, a row range and a column
box, each next to a plain numpy copy of the same number of bytes measured in the same run, and
the peak RSS. Informational only: nothing here asserts on timings.

    .venv/bin/python scripts/bench_ckpt.py [--gib 1.0]
"""
from __future__ import annotations

import argparse
import os
import resource
import tempfile
import time

import numpy as np

from distinfer.io import CkptFile, write_ckpt


def _rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def _timed(fn, repeat: int = 3) -> float:
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--gib", type=float, default=1.0, help="checkpoint size in GiB")
    args = ap.parse_args()
    rows, cols = 8192, 4096                                     # 128 MiB float32 per tensor
    n_tensors = max(1, round(args.gib * 1024 / 128))
    tensor_bytes = rows * cols * 4
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "bench.ckpt")

        def items():
            base = np.random.default_rng(0).standard_normal((rows, cols)).astype(np.float32)
            for i in range(n_tensors):
                base[0, 0] = i
                yield f"layer{i}.weight", base

        t0 = time.perf_counter()
        # Written in a forked child so the peak RSS below measures the reader alone.
        # 100 MiB pieces so the reads below also cross chunk boundaries.
        pid = os.fork()
        if pid == 0:
            try:
                write_ckpt(path, items(), chunk_bytes=100 << 20)
            finally:
                os._exit(0)
        os.waitpid(pid, 0)
        t_write = time.perf_counter() - t0
        size = os.path.getsize(path)
        print(f"checkpoint: {size / 2**30:.2f} GiB, {n_tensors} tensors of {rows}x{cols} float32, "
              f"written in {t_write:.2f} s")
        rss0 = _rss_mib()
        t_index = _timed(lambda: CkptFile(path).close())
        print(f"index: {t_index * 1e3:.2f} ms")

        src = np.empty(tensor_bytes, np.uint8)
        src[:] = 1
        dst = np.empty_like(src)
        with CkptFile(path) as f:
            name = f.names()[n_tensors // 2]
            whole = np.empty((rows, cols), np.float32)
            f.read_box(name, ((0, rows), (0, cols)), out=whole)      # warm the page cache
            cases = [
                ("one tensor", lambda: f.read_box(name, ((0, rows), (0, cols)), out=whole), tensor_bytes),
                ("row range 1/4", lambda: f.read_rows(name, rows // 4, rows // 2), tensor_bytes // 4),
                ("column box 1/4", lambda: f.read_box(name, ((0, rows), (cols // 4, cols // 2))),
                 tensor_bytes // 4),
                ("column box 1/64", lambda: f.read_box(name, ((0, rows), (0, cols // 64))),
                 tensor_bytes // 64),
            ]
            for label, fn, nbytes in cases:
                t = _timed(fn)
                t_np = _timed(lambda: np.copyto(dst[:nbytes], src[:nbytes]))
                print(f"{label:16s}: {nbytes / t / 2**30:6.2f} GiB/s   "
                      f"(numpy copy of the same bytes: {nbytes / t_np / 2**30:6.2f} GiB/s, "
                      f"ratio {t_np / t:.2f})")
        print(f"peak RSS: {_rss_mib():.0f} MiB (before reads: {rss0:.0f} MiB; one tensor is "
              f"{tensor_bytes / 2**20:.0f} MiB, the numpy reference buffers 2 x that)")


if __name__ == "__main__":
    main()
