"""Global settings of the data pipeline, as ``mindspore.dataset.config``.

>>> import distinfer.dataset as ds
>>> ds.config.set_seed(1000)
>>> ds.config.get_seed()
1000
"""
from __future__ import annotations

import os
import random

import numpy as np

__all__ = ["set_seed", "get_seed", "set_num_parallel_workers", "get_num_parallel_workers",
           "set_prefetch_size", "get_prefetch_size"]

# std::mt19937's default seed: what MindSpore's get_seed() reports when nobody set one.
DEFAULT_SEED = 5489
_MAX_SEED = 2**32 - 1

_state: dict[str, int | None] = {"seed": None, "global_seed": None, "workers": 8, "prefetch": 16}


def _check_seed(seed: int) -> int:
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"seed must be of type int, got {type(seed).__name__}")
    if not 0 <= seed <= _MAX_SEED:
        raise ValueError(f"seed {seed} is out of range [0, {_MAX_SEED}]")
    return seed


def set_seed(seed: int) -> None:
    """Seed every random choice the pipeline makes (shuffles, random samplers).

    As in MindSpore, this also seeds Python's ``random`` and ``numpy.random``, which Python
    transforms may use.

    >>> import distinfer.dataset as ds
    >>> ds.config.set_seed(7)
    """
    _state["seed"] = _check_seed(seed)
    random.seed(seed)
    np.random.seed(seed)


def get_seed() -> int:
    """The pipeline seed: set_seed's value, else the global seed, else 5489 (MindSpore's default).

    >>> import distinfer.dataset as ds
    >>> isinstance(ds.config.get_seed(), int)
    True
    """
    return configured_seed() if configured_seed() is not None else DEFAULT_SEED


def configured_seed() -> int | None:
    """The seed someone chose (``set_seed`` first, then ``distinfer.set_seed``), or None."""
    return _state["seed"] if _state["seed"] is not None else _state["global_seed"]


def _set_global_seed(seed: int | None) -> None:
    """Record ``distinfer.set_seed``'s value; an explicit ``config.set_seed`` still wins."""
    _state["global_seed"] = None if seed is None else _check_seed(int(seed))


def set_num_parallel_workers(num: int) -> None:
    """Accepted for compatibility; the pipeline runs in the calling thread.

    >>> import distinfer.dataset as ds
    >>> saved = ds.config._state["workers"]  # restored exactly at the end of the example
    >>> ds.config.set_num_parallel_workers(1); ds.config.get_num_parallel_workers()
    1
    >>> ds.config.set_num_parallel_workers(0)
    Traceback (most recent call last):
    ...
    ValueError: num_parallel_workers must be a positive int, got 0
    >>> ds.config._state["workers"] = saved
    """
    if not isinstance(num, int) or num <= 0:
        raise ValueError(f"num_parallel_workers must be a positive int, got {num!r}")
    _state["workers"] = min(num, os.cpu_count() or num)


def get_num_parallel_workers() -> int:
    """The configured worker count (informational only).

    >>> import os, distinfer.dataset as ds
    >>> saved = ds.config._state["workers"]  # restored exactly at the end of the example
    >>> ds.config.set_num_parallel_workers(100_000)  # capped at the number of CPUs
    >>> ds.config.get_num_parallel_workers() == os.cpu_count()
    True
    >>> ds.config._state["workers"] = saved
    """
    return int(_state["workers"])


def set_prefetch_size(size: int) -> None:
    """Accepted for compatibility; rows are produced on demand.

    >>> import distinfer.dataset as ds
    >>> saved = ds.config.get_prefetch_size()
    >>> ds.config.set_prefetch_size(4); ds.config.get_prefetch_size()
    4
    >>> ds.config.set_prefetch_size(saved)
    """
    if not isinstance(size, int) or size <= 0:
        raise ValueError(f"prefetch_size must be a positive int, got {size!r}")
    _state["prefetch"] = size


def get_prefetch_size() -> int:
    """The configured prefetch size (informational only).

    >>> import distinfer.dataset as ds
    >>> saved = ds.config.get_prefetch_size()
    >>> ds.config.set_prefetch_size(32); ds.config.get_prefetch_size()
    32
    >>> ds.config.set_prefetch_size(saved); ds.config.get_prefetch_size() == saved
    True
    """
    return int(_state["prefetch"])
