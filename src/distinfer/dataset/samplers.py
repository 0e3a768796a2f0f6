"""Samplers: which row indices a random-access source reads, and in what order.

Sharding follows MindSpore's ``DistributedSampler``: every shard reads
``ceil(N / num_shards)`` rows, shard ``k`` taking positions ``k, k + num_shards, ...`` of the
(optionally shuffled) order and wrapping around to the start so all shards are equally long.
All shards shuffle with the same seed, so with ``N % num_shards == 0`` they are disjoint and
together cover the dataset.

>>> from distinfer.dataset.samplers import DistributedSampler
>>> DistributedSampler(num_shards=4, shard_id=3, shuffle=False).indices(10, (0,)).tolist()
[3, 7, 1]
"""
from __future__ import annotations

import math

import numpy as np

from . import config

__all__ = ["Sampler", "SequentialSampler", "RandomSampler", "DistributedSampler",
           "SubsetSampler", "SubsetRandomSampler", "select_sampler"]


def _rng(key: tuple[int, ...], shared: bool) -> np.random.Generator:
    """A generator for one pass. ``key`` makes each epoch/repeat differ.

    Without a configured seed, a single process draws fresh entropy; in an MPI job every rank uses
    MindSpore's default seed 5489 so that all ranks read the same order — shards stay disjoint, and
    with pipeline stages the first stage's images and the last stage's labels belong together.
    """
    from ..communication._backend import launched_size

    seed = config.configured_seed()
    if seed is None:
        if not shared and launched_size() == 1:
            return np.random.default_rng()
        seed = config.DEFAULT_SEED
    return np.random.default_rng([seed, *key])


class Sampler:
    """Base class: ``indices(n, key)`` gives the row order of one pass over ``n`` rows.

    >>> import numpy as np, distinfer.dataset as ds
    >>> class Reverse(Sampler):  # a custom sampler implements _order(n, key)
    ...     def _order(self, n, key):
    ...         return np.arange(n)[::-1]
    >>> Reverse().indices(4, (0,)).tolist(), Reverse(num_samples=2).indices(4, (0,)).tolist()
    ([3, 2, 1, 0], [3, 2])
    >>> data = ds.NumpySlicesDataset([1, 2, 3], column_names=["a"], sampler=Reverse())
    >>> [int(row[0]) for row in data.create_tuple_iterator(num_epochs=1, output_numpy=True)]
    [3, 2, 1]
    """

    shared_seed = False

    def __init__(self, num_samples: int | None = None) -> None:
        if num_samples is not None and (not isinstance(num_samples, int) or num_samples < 0):
            raise ValueError(f"num_samples must be a non-negative int or None, got {num_samples!r}")
        self.num_samples = num_samples or None

    def _order(self, n: int, key: tuple[int, ...]) -> np.ndarray:
        raise NotImplementedError

    def indices(self, n: int, key: tuple[int, ...]) -> np.ndarray:
        order = self._order(n, key)
        return order if self.num_samples is None else order[: self.num_samples]

    def size(self, n: int) -> int:
        full = self._size(n)
        return full if self.num_samples is None else min(full, self.num_samples)

    def _size(self, n: int) -> int:
        return n


class SequentialSampler(Sampler):
    """Rows in order, optionally from ``start_index``.

    >>> SequentialSampler(start_index=2).indices(5, (0,)).tolist()
    [2, 3, 4]
    """

    def __init__(self, start_index: int | None = None, num_samples: int | None = None) -> None:
        super().__init__(num_samples)
        self.start = start_index or 0

    def _order(self, n: int, key: tuple[int, ...]) -> np.ndarray:
        return np.arange(min(self.start, n), n)

    def _size(self, n: int) -> int:
        return max(n - self.start, 0)


class RandomSampler(Sampler):
    """A fresh permutation each pass (``replacement=True`` draws with replacement).

    >>> sorted(RandomSampler().indices(4, (0,)).tolist())
    [0, 1, 2, 3]
    """

    def __init__(self, replacement: bool = False, num_samples: int | None = None) -> None:
        super().__init__(num_samples)
        self.replacement = replacement

    def _order(self, n: int, key: tuple[int, ...]) -> np.ndarray:
        rng = _rng(key, self.shared_seed)
        if self.replacement:
            return rng.integers(0, n, size=self.num_samples or n)
        return rng.permutation(n)


class DistributedSampler(Sampler):
    """One shard of the rows (see the module docstring for the distribution).

    >>> [DistributedSampler(2, k, shuffle=False).indices(5, (0,)).tolist() for k in (0, 1)]
    [[0, 2, 4], [1, 3, 0]]
    """

    shared_seed = True

    def __init__(self, num_shards: int, shard_id: int, shuffle: bool = True,
                 num_samples: int | None = None, offset: int = -1) -> None:
        super().__init__(num_samples)
        if not isinstance(num_shards, int) or num_shards <= 0:
            raise RuntimeError(f"num_shards must be a positive int, got {num_shards!r}")
        if not isinstance(shard_id, int) or not 0 <= shard_id < num_shards:
            raise RuntimeError(f"shard_id must be in [0, {num_shards - 1}], got {shard_id!r}")
        self.num_shards, self.shard_id, self.shuffle = num_shards, shard_id, bool(shuffle)

    def _order(self, n: int, key: tuple[int, ...]) -> np.ndarray:
        if n == 0:
            return np.arange(0)
        positions = (np.arange(self._size(n)) * self.num_shards + self.shard_id) % n
        if not self.shuffle:
            return positions
        return _rng(key, True).permutation(n)[positions]

    def _size(self, n: int) -> int:
        return math.ceil(n / self.num_shards)


class SubsetSampler(Sampler):
    """Exactly the given indices, in order.

    >>> SubsetSampler([3, 1]).indices(5, (0,)).tolist()
    [3, 1]
    """

    def __init__(self, indices, num_samples: int | None = None) -> None:
        super().__init__(num_samples)
        self.subset = np.asarray(list(indices), dtype=np.int64)

    def _order(self, n: int, key: tuple[int, ...]) -> np.ndarray:
        if self.subset.size and (self.subset.max() >= n or self.subset.min() < -n):
            raise ValueError(f"sampler index out of range for a dataset of {n} rows")
        return self.subset % max(n, 1)

    def _size(self, n: int) -> int:
        return int(self.subset.size)


class SubsetRandomSampler(SubsetSampler):
    """The given indices in a random order each pass.

    >>> sorted(SubsetRandomSampler([3, 1]).indices(5, (0,)).tolist())
    [1, 3]
    """

    def _order(self, n: int, key: tuple[int, ...]) -> np.ndarray:
        return _rng(key, False).permutation(super()._order(n, key))


def select_sampler(num_samples: int | None, sampler, shuffle: bool | None,
                   num_shards: int | None, shard_id: int | None) -> Sampler:
    """MindSpore's rules for turning a source's arguments into one sampler.

    >>> [type(select_sampler(None, None, shuffle, None, None)).__name__ for shuffle in (False, None)]
    ['SequentialSampler', 'RandomSampler']
    >>> sharded, listed = select_sampler(None, None, None, 2, 1), select_sampler(None, [3, 1], None, None, None)
    >>> type(sharded).__name__, (sharded.num_shards, sharded.shard_id), type(listed).__name__
    ('DistributedSampler', (2, 1), 'SubsetSampler')
    >>> select_sampler(None, [3, 1], True, None, None)
    Traceback (most recent call last):
    ...
    RuntimeError: sampler and shuffle cannot be specified at the same time
    """
    if sampler is not None:
        if shuffle is not None:
            raise RuntimeError("sampler and shuffle cannot be specified at the same time")
        if num_shards is not None or shard_id is not None:
            raise RuntimeError("sampler and sharding cannot be specified at the same time")
        if isinstance(sampler, Sampler):
            return sampler
        return SubsetSampler(sampler)  # MindSpore also takes a plain list of indices
    if (num_shards is None) != (shard_id is None):
        raise RuntimeError("num_shards and shard_id need to be specified together")
    if num_shards is not None:
        return DistributedSampler(num_shards, shard_id, shuffle=shuffle is not False,
                                  num_samples=num_samples)
    if shuffle is False:
        return SequentialSampler(num_samples=num_samples)
    return RandomSampler(num_samples=num_samples)
