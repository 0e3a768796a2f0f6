"""A tiny harness for test bodies run under ``mpirun``: every rank runs every check, rank 0 reports.

Each check runs on every rank; its outcome (pass, or the exception text) is gathered to rank 0,
which prints ``PASS <name>`` or ``FAIL <name>: rank <r>: <error>`` per check and ``DONE <n>`` at
the end. A check must run the same collectives on every rank and only assert after them, so a
failing assertion on one rank cannot leave the others waiting.
"""
from __future__ import annotations

import os
import sys
import traceback
from typing import Callable

import numpy as np

import distinfer as ms
from distinfer.communication import _backend, init
from distinfer.layout import replicated
from distinfer.parallel import _executor as ex

__all__ = ["Checks", "full", "assert_close", "rank", "size", "reset"]


def rank() -> int:
    return _backend.world().rank


def size() -> int:
    return _backend.world().size


def reset(**ctx) -> None:
    """Default auto-parallel context (device count from init), then ``ctx``."""
    ms.reset_auto_parallel_context()
    if ctx:
        ms.set_auto_parallel_context(**ctx)


def full(t) -> np.ndarray:
    """The whole value of a (possibly laid-out, possibly partial) Tensor on every rank."""
    if t.layout is None and not t.spec.is_partial:
        return t.asnumpy()
    return ex.to_layout(t, replicated(t.shape, ex.stage_devices())).asnumpy()


def assert_close(got: np.ndarray, want: np.ndarray, rtol: float = 1e-5, what: str = "") -> None:
    """Max relative error (max |got - want| / max |want|) at most ``rtol``; exact for non-floats."""
    got, want = np.asarray(got), np.asarray(want)
    if got.shape != want.shape:
        raise AssertionError(f"{what}: shape {got.shape} != expected {want.shape}")
    if want.dtype.kind not in "fc":
        if not np.array_equal(got, want):
            raise AssertionError(f"{what}: values differ from the reference")
        return
    scale = float(np.abs(want).max()) if want.size else 0.0
    err = float(np.abs(got.astype(np.float64) - want).max()) / (scale or 1.0) if want.size else 0.0
    if not err <= rtol:
        raise AssertionError(f"{what}: max relative error {err:.3e} > {rtol:g}")


class Checks:
    """Named checks run in order on every rank."""

    def __init__(self) -> None:
        self.items: list[tuple[str, Callable[[], None]]] = []

    def add(self, name: str, fn: Callable[[], None]) -> None:
        self.items.append((name, fn))

    def __call__(self, name: str):
        def deco(fn):
            self.add(name, fn)
            return fn
        return deco

    def run(self) -> None:
        init()
        results = []
        for name, fn in self.items:
            try:
                fn()
                results.append((name, ""))
            except Exception as exc:  # noqa: BLE001 - reported, not swallowed
                last = traceback.extract_tb(exc.__traceback__)[-1]
                msg = f"{type(exc).__name__}: {exc} [{last.filename.rsplit('/', 1)[-1]}:{last.lineno}]"
                results.append((name, msg.replace("\n", " ")))
                if os.environ.get("DISTINFER_CHECK_TRACEBACKS"):  # the whole traceback, for debugging a check
                    traceback.print_exc()
        gathered = _backend.world().allgather_object(results)
        if rank() == 0:
            for i, (name, _) in enumerate(results):
                errors = [(r, res[i][1]) for r, res in enumerate(gathered) if res[i][1]]
                print(f"PASS {name}" if not errors else f"FAIL {name}: rank {errors[0][0]}: {errors[0][1]}")
            print(f"DONE {size()}")
        sys.stdout.flush()
