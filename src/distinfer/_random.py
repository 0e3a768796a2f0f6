"""Seeded random values that do not depend on the rank count.

Every value is a pure function of ``(seed, flat index in the full tensor, stream)`` through a
counter-based generator (the splitmix64 mixer), so any rank computes exactly its own block of a
random tensor without generating the rest: initializers (:mod:`distinfer.common.initializer`)
and Dropout's masks both draw from here. :func:`set_seed` fixes the sequence of tensor seeds that
:func:`next_seed` hands out, identically on every rank.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

__all__ = ["set_seed", "get_seed", "next_seed", "uniform01", "standard_normal", "flat_indices"]

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


class _SeedState:
    seed: int | None = None
    counter: int = 0


def set_seed(seed: int) -> None:
    """Seed parameter initialisation (and numpy's global generator, as MindSpore does).

    The same seed gives the same parameters, whatever the rank count.

    >>> import distinfer as ms
    >>> from distinfer.common.initializer import initializer
    >>> ms.set_seed(42); a = initializer("normal", [3]).asnumpy()
    >>> ms.set_seed(42); bool((initializer("normal", [3]).asnumpy() == a).all())
    True
    """
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"set_seed: seed must be a non-negative int, got {seed!r}")
    _SeedState.seed = seed
    _SeedState.counter = 0
    np.random.seed(seed % (2 ** 32))


def get_seed() -> int | None:
    """The seed given to :func:`set_seed`, or None if it was never called.

    >>> import distinfer as ms
    >>> ms.set_seed(7); ms.get_seed()
    7
    """
    return _SeedState.seed


def next_seed() -> int:
    """A fresh 64-bit stream key for the next initialised tensor (same order on every rank)."""
    base = 0 if _SeedState.seed is None else _SeedState.seed
    _SeedState.counter += 1
    key = (base * 0x100000001B3 + _SeedState.counter) & 0xFFFFFFFFFFFFFFFF  # seeds >= 2**24 overflowed uint64
    return int(_mix(np.array([key], dtype=np.uint64))[0])


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser on a uint64 array (wrapping arithmetic)."""
    with np.errstate(over="ignore"):
        x = x ^ (x >> np.uint64(30))
        x = x * np.uint64(0xBF58476D1CE4E5B9)
        x = x ^ (x >> np.uint64(27))
        x = x * np.uint64(0x94D049BB133111EB)
        return x ^ (x >> np.uint64(31))


def uniform01(seed: int, flat: np.ndarray, stream: int) -> np.ndarray:
    """Uniform doubles in (0, 1), one per flat index, for ``stream``."""
    with np.errstate(over="ignore"):
        key = np.uint64((seed + stream * 0xD1B54A32D192ED03) & 0xFFFFFFFFFFFFFFFF)
        bits = _mix(flat * _GOLDEN + key)
    return ((bits >> np.uint64(11)).astype(np.float64) + 0.5) * (2.0 ** -53)


def flat_indices(shape: Sequence[int], box: Sequence[tuple[int, int]]) -> np.ndarray:
    """uint64 flat (C-order) indices of ``box`` inside a tensor of ``shape``."""
    strides = np.cumprod((list(shape[1:]) + [1])[::-1])[::-1] if shape else np.array([], np.int64)
    flat = np.zeros([b - a for a, b in box] or [], dtype=np.uint64)
    for d, ((a, b), s) in enumerate(zip(box, strides)):
        view = [1] * len(box)
        view[d] = b - a
        flat = flat + (np.arange(a, b, dtype=np.uint64) * np.uint64(s)).reshape(view)
    return flat


def standard_normal(seed: int, flat: np.ndarray, stream: int = 0) -> np.ndarray:
    """N(0, 1) doubles, one per flat index (Box-Muller on streams ``2 * stream`` and ``2 * stream + 1``)."""
    u1 = uniform01(seed, flat, 2 * stream)
    u2 = uniform01(seed, flat, 2 * stream + 1)
    return np.sqrt(-2.0 * np.log(u1)) * np.cos(2.0 * np.pi * u2)
