"""Source datasets: MNIST idx files, in-memory numpy slices, and Python generators.

>>> import distinfer.dataset as ds
>>> mnist = ds.MnistDataset(ds.embedded_mnist_dir(), usage="test", shuffle=False)
>>> mnist.get_col_names(), mnist.get_dataset_size()
(['image', 'label'], 1000)
"""
from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from importlib import resources
from typing import Any

import numpy as np

from .engine import Dataset, Key, Row
from .idx import read_idx, read_idx_header
from .samplers import Sampler, select_sampler

logger = logging.getLogger(__name__)

__all__ = ["MnistDataset", "NumpySlicesDataset", "GeneratorDataset", "embedded_mnist_dir"]


def embedded_mnist_dir() -> str:
    """Directory of the bundled 5,000-image MNIST subset (4,000 'train', 1,000 'test').

    >>> import os, distinfer.dataset as ds
    >>> sorted(os.listdir(ds.embedded_mnist_dir()))[0]
    'README.md'
    """
    return str(resources.files(__package__) / "_data")


class RandomAccessDataset(Dataset):
    """A source whose rows can be read by index; a sampler picks the order and the shard."""

    def __init__(self, sampler: Sampler) -> None:
        super().__init__()
        self.sampler = sampler

    def _num_rows(self) -> int:
        raise NotImplementedError

    def _get(self, index: int) -> Row:
        raise NotImplementedError

    def _size(self) -> int:
        return self.sampler.size(self._num_rows())

    def _rows(self, key: Key) -> Iterator[Row]:
        for i in self.sampler.indices(self._num_rows(), key):
            yield self._get(int(i))


# ---------------------------------------------------------------------------------------
# MNIST
# ---------------------------------------------------------------------------------------
_PREFIX = {"train": ["train"], "test": ["t10k"], "all": ["train", "t10k"]}


def _find(directory: str, prefix: str, kind: str) -> str | None:
    """The idx file for ``prefix``/``kind``; accepts '-' or '.' before idx, plain or .gz."""
    for sep in ("-", "."):
        for ext in ("", ".gz"):
            path = os.path.join(directory, f"{prefix}-{kind}{sep}{'idx3' if kind == 'images' else 'idx1'}-ubyte{ext}")
            if os.path.isfile(path):
                return path
    return None


def _split_files(directory: str, usage: str) -> list[tuple[str, str]]:
    """(images, labels) paths of each split that ``usage`` reads, or a RuntimeError saying what is missing."""
    pairs, missing = [], []
    for prefix in _PREFIX[usage]:
        images, labels = _find(directory, prefix, "images"), _find(directory, prefix, "labels")
        if images and labels:
            pairs.append((images, labels))
        elif images or labels:  # half a split is always an error
            missing.append(f"{prefix}-{'labels-idx1' if images else 'images-idx3'}-ubyte[.gz]")
        elif usage != "all":
            missing += [f"{prefix}-images-idx3-ubyte[.gz]", f"{prefix}-labels-idx1-ubyte[.gz]"]
    if missing or not pairs:
        wanted = missing or [f"{p}-images-idx3-ubyte[.gz] and {p}-labels-idx1-ubyte[.gz]" for p in _PREFIX[usage]]
        raise RuntimeError(f"MnistDataset: {directory} has no MNIST files for usage={usage!r}; "
                           f"missing {', '.join(wanted)}")
    return pairs


def _check_pair(images: str, labels: str) -> int:
    """Validate one split's headers; return its row count."""
    ih, lh = read_idx_header(images), read_idx_header(labels)
    if ih.dtype != np.uint8 or len(ih.shape) != 3:
        raise RuntimeError(f"MnistDataset: {images} should hold uint8 images [N, H, W], has {ih.dtype} {ih.shape}")
    if lh.dtype != np.uint8 or len(lh.shape) != 1:
        raise RuntimeError(f"MnistDataset: {labels} should hold uint8 labels [N], has {lh.dtype} {lh.shape}")
    if ih.shape[0] != lh.shape[0]:
        raise RuntimeError(f"MnistDataset: {images} has {ih.shape[0]} images but {labels} has {lh.shape[0]} labels")
    return ih.shape[0]


class MnistDataset(RandomAccessDataset):
    """MNIST from idx files: columns ``image`` (uint8 [28, 28, 1]) and ``label`` (uint32 scalar).

    ``usage`` is 'train', 'test' or 'all' (None: all). ``dataset_dir=None`` reads the bundled
    5,000-image subset (see :func:`embedded_mnist_dir`) and logs a warning; there ``usage=None``
    means its 4,000-image 'train' split, so the 1,000 'test' images stay held out for evaluating
    what a script trained without ``DATA_PATH``. Shuffled by
    default; ``num_shards``/``shard_id`` read one shard as MindSpore's DistributedSampler.

    >>> import distinfer.dataset as ds
    >>> d = ds.MnistDataset(ds.embedded_mnist_dir(), usage="train", num_shards=4, shard_id=0)
    >>> d.get_dataset_size(), d.output_shapes(), [str(t) for t in d.output_types()]
    (1000, [[28, 28, 1], []], ['uint8', 'uint32'])
    """

    def __init__(self, dataset_dir: str | os.PathLike | None, usage: str | None = None,
                 num_samples: int | None = None, num_parallel_workers: int | None = None,
                 shuffle: bool | None = None, sampler: Any = None, num_shards: int | None = None,
                 shard_id: int | None = None, cache: Any = None) -> None:
        super().__init__(select_sampler(num_samples, sampler, shuffle, num_shards, shard_id))
        if dataset_dir is None:
            dataset_dir = embedded_mnist_dir()
            usage = "train" if usage is None else usage
            logger.warning("MnistDataset: no dataset_dir given (is DATA_PATH set?); using the embedded MNIST "
                           "subset at %s, usage=%r (its 'test' split is held out)", dataset_dir, usage)
        self.dataset_dir = os.fspath(dataset_dir)
        self.usage = "all" if usage is None else usage
        if self.usage not in _PREFIX:
            raise ValueError(f"MnistDataset: usage must be 'train', 'test' or 'all', got {usage!r}")
        if not os.path.isdir(self.dataset_dir):
            raise ValueError(f"MnistDataset: the folder {self.dataset_dir} does not exist or is not a directory")
        self.files = _split_files(self.dataset_dir, self.usage)
        self.counts = [_check_pair(images, labels) for images, labels in self.files]
        self._parts: list[tuple[np.ndarray, np.ndarray]] | None = None

    def _columns(self) -> list[str]:
        return ["image", "label"]

    def _num_rows(self) -> int:
        return sum(self.counts)

    def _load(self) -> list[tuple[np.ndarray, np.ndarray]]:
        # Loaded on first read, then kept: MindSpore's MNIST reader also holds the split in memory.
        if self._parts is None:
            self._parts = [(read_idx(images), read_idx(labels).astype(np.uint32))
                           for images, labels in self.files]
        return self._parts

    def _get(self, index: int) -> Row:
        for (images, labels), count in zip(self._load(), self.counts):
            if index < count:
                return np.array(images[index])[:, :, None], labels[index, ...]
            index -= count
        raise IndexError(index)


# ---------------------------------------------------------------------------------------
# In-memory data and Python sources
# ---------------------------------------------------------------------------------------
def _column_names(given: str | Sequence[str] | None, count: int, default: list[str]) -> list[str]:
    names = default if given is None else ([given] if isinstance(given, str) else list(given))
    if len(names) != count:
        raise ValueError(f"{len(names)} column names {names} given for {count} columns")
    return names


def _slice_columns(data: Any, column_names) -> tuple[list[str], list[np.ndarray]]:
    """MindSpore's rules: dict -> a column per key, tuple -> a column per element, else one column."""
    if isinstance(data, dict):
        keys = [str(k) for k in data]
        arrays = [np.asarray(v) for v in data.values()]
        names = _column_names(column_names, len(arrays), keys)
    elif isinstance(data, tuple):
        arrays = [np.asarray(v) for v in data]
        names = _column_names(column_names, len(arrays), [f"column_{i}" for i in range(len(arrays))])
    else:
        arrays = [np.asarray(data)]
        names = _column_names(column_names, 1, ["column_0"])
    if any(a.ndim == 0 for a in arrays):
        raise ValueError("NumpySlicesDataset needs data with at least one dimension to slice")
    lengths = {len(a) for a in arrays}
    if len(lengths) > 1:
        raise ValueError(f"NumpySlicesDataset columns have different lengths {sorted(lengths)}")
    return names, arrays


class NumpySlicesDataset(RandomAccessDataset):
    """Rows sliced along the first axis of in-memory data (list, tuple, dict or array).

    A list or array is one column; a tuple gives one column per element; a dict one column
    per key. Shuffled by default, as in MindSpore.

    >>> import distinfer.dataset as ds
    >>> d = ds.NumpySlicesDataset(([1, 2], [[3, 4], [5, 6]]), column_names=["a", "b"], shuffle=False)
    >>> [(int(a), b.tolist()) for a, b in d.create_tuple_iterator(output_numpy=True)]
    [(1, [3, 4]), (2, [5, 6])]
    """

    def __init__(self, data: Any, column_names: str | Sequence[str] | None = None,
                 num_samples: int | None = None, num_parallel_workers: int = 1,
                 shuffle: bool | None = None, sampler: Any = None, num_shards: int | None = None,
                 shard_id: int | None = None) -> None:
        super().__init__(select_sampler(num_samples, sampler, shuffle, num_shards, shard_id))
        self.names, self.arrays = _slice_columns(data, column_names)

    def _columns(self) -> list[str]:
        return self.names

    def _num_rows(self) -> int:
        return len(self.arrays[0])

    def _get(self, index: int) -> Row:
        return tuple(a[index, ...] for a in self.arrays)


def _as_row(item: Any, ncols: int) -> Row:
    """A generator's item as a row: a tuple is one value per column, anything else one column."""
    values = item if isinstance(item, tuple) else (item,)
    if isinstance(item, list) and ncols > 1 and len(item) == ncols:
        values = tuple(item)
    if len(values) != ncols:
        raise RuntimeError(f"GeneratorDataset: the source produced {len(values)} values for {ncols} columns")
    return tuple(np.asarray(v) for v in values)


class GeneratorDataset(RandomAccessDataset):
    """Rows from Python: a random-access source (``__getitem__`` + ``__len__``), an iterable,
    or a callable returning an iterator (e.g. a generator function), called once per pass.

    Only random-access sources can be shuffled, sampled or sharded, as in MindSpore.

    >>> import distinfer.dataset as ds
    >>> def gen():
    ...     for i in range(3):
    ...         yield i, i * i
    >>> d = ds.GeneratorDataset(gen, column_names=["x", "sq"])
    >>> [int(sq) for _, sq in d.create_tuple_iterator(output_numpy=True)]
    [0, 1, 4]
    """

    def __init__(self, source: Callable[[], Iterable] | Iterable | Any,
                 column_names: str | Sequence[str] | None = None, column_types: Any = None,
                 schema: Any = None, num_samples: int | None = None, num_parallel_workers: int = 1,
                 shuffle: bool | None = None, sampler: Any = None, num_shards: int | None = None,
                 shard_id: int | None = None, python_multiprocessing: bool = True,
                 max_rowsize: Any = None) -> None:
        if column_names is None:
            raise ValueError("GeneratorDataset: column_names must be given")
        self.names = [column_names] if isinstance(column_names, str) else list(column_names)
        self.source = source
        self.random_access = hasattr(source, "__getitem__") and hasattr(source, "__len__")
        if not self.random_access and (shuffle or sampler is not None or num_shards is not None):
            raise ValueError("GeneratorDataset: shuffle, sampler and num_shards need a random-access "
                             "source (one with __getitem__ and __len__)")
        self.limit = num_samples
        sampler_ = select_sampler(num_samples, sampler, shuffle, num_shards, shard_id) if self.random_access else None
        super().__init__(sampler_)  # type: ignore[arg-type]

    def _columns(self) -> list[str]:
        return self.names

    def _num_rows(self) -> int:
        return len(self.source)

    def _get(self, index: int) -> Row:
        return _as_row(self.source[index], len(self.names))

    def _size(self) -> int | None:
        if self.random_access:
            return super()._size()
        if hasattr(self.source, "__len__"):
            n = len(self.source)
            return n if self.limit is None else min(n, self.limit)
        return None

    def _rows(self, key: Key) -> Iterator[Row]:
        if self.random_access:
            yield from super()._rows(key)
            return
        items = self.source() if callable(self.source) else iter(self.source)
        for count, item in enumerate(items):
            if self.limit is not None and count >= self.limit:
                return
            yield _as_row(item, len(self.names))
