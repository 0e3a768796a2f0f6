"""The lazy pipeline: ``Dataset`` and the operations chained on it (map, batch, shuffle ...).

Each node yields rows (tuples of numpy arrays, one per column) on demand, so nothing is
materialised beyond what the source already holds. A pass over the pipeline carries a
``key`` (epoch, repeat index ...) from which every random choice is seeded, which makes a
seeded pipeline reproducible and still reshuffled each epoch.

>>> import numpy as np
>>> import distinfer.dataset as ds
>>> data = ds.NumpySlicesDataset({"x": np.arange(5)}, shuffle=False).map(lambda x: x * 10, "x")
>>> [int(b[0].sum()) for b in data.batch(2).create_tuple_iterator(output_numpy=True)]
[10, 50, 40]
"""
from __future__ import annotations

import copy
import itertools
import logging
import math
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np

from .samplers import _rng

logger = logging.getLogger(__name__)

__all__ = ["Dataset", "TupleIterator", "DictIterator"]

Row = tuple[np.ndarray, ...]
Key = tuple[int, ...]


def _as_list(columns: str | Sequence[str] | None) -> list[str] | None:
    if columns is None:
        return None
    return [columns] if isinstance(columns, str) else list(columns)


class Dataset:
    """Base of every dataset: the chaining methods and the iterators.

    Subclasses implement ``_columns()``, ``_rows(key)`` and ``_size()`` (None when the
    size is only known by iterating).

    >>> import distinfer.dataset as ds
    >>> d = ds.NumpySlicesDataset([1, 2, 3, 4], column_names=["a"], shuffle=False)
    >>> d.repeat(2).skip(1).take(4).get_dataset_size()
    4
    """

    def __init__(self, children: Sequence[Dataset] = ()) -> None:
        self.children = list(children)
        self._cached_size: int | None = None

    # --- what subclasses provide -------------------------------------------------------
    def _columns(self) -> list[str]:
        return self.children[0]._columns()

    def _rows(self, key: Key) -> Iterator[Row]:
        raise NotImplementedError

    def _size(self) -> int | None:
        return self.children[0]._size()

    # --- chaining ----------------------------------------------------------------------
    def map(self, operations: Callable | Sequence[Callable], input_columns: str | Sequence[str] | None = None,
            output_columns: str | Sequence[str] | None = None, num_parallel_workers: int | None = None,
            **kwargs: Any) -> Dataset:
        """Apply ``operations`` (one callable or a list, in order) to ``input_columns`` of each row.

        >>> import distinfer.dataset as ds
        >>> d = ds.NumpySlicesDataset({"a": [1, 2]}, shuffle=False).map([lambda a: a + 1, lambda a: a * 3], "a")
        >>> [int(r["a"]) for r in d.create_dict_iterator(output_numpy=True)]
        [6, 9]
        """
        return MapDataset(self, operations, _as_list(input_columns), _as_list(output_columns))

    def batch(self, batch_size: int, drop_remainder: bool = False, num_parallel_workers: int | None = None,
              per_batch_map: Callable | None = None, **kwargs: Any) -> Dataset:
        """Stack ``batch_size`` consecutive rows; the last short batch is kept unless ``drop_remainder``.

        >>> import distinfer.dataset as ds
        >>> ds.NumpySlicesDataset([1, 2, 3], shuffle=False).batch(2).get_dataset_size()
        2
        """
        if per_batch_map is not None:
            raise NotImplementedError("batch(per_batch_map=...) is not supported by distinfer")
        return BatchDataset(self, batch_size, drop_remainder)

    def shuffle(self, buffer_size: int) -> Dataset:
        """Shuffle rows through a buffer of ``buffer_size`` rows (>= dataset size: a full shuffle).

        >>> import distinfer.dataset as ds
        >>> sorted(int(r[0]) for r in ds.NumpySlicesDataset([1, 2, 3], shuffle=False)
        ...        .shuffle(4).create_tuple_iterator(output_numpy=True))
        [1, 2, 3]
        """
        return ShuffleDataset(self, buffer_size)

    def repeat(self, count: int | None = None) -> Dataset:
        """Repeat the pipeline ``count`` times (None or -1: forever).

        >>> import distinfer.dataset as ds
        >>> ds.NumpySlicesDataset([1, 2], shuffle=False).repeat(3).get_dataset_size()
        6
        """
        return RepeatDataset(self, count)

    def take(self, count: int = -1) -> Dataset:
        """The first ``count`` rows (-1: all).

        >>> import distinfer.dataset as ds
        >>> ds.NumpySlicesDataset([1, 2, 3], shuffle=False).take(2).get_dataset_size()
        2
        """
        return TakeDataset(self, count)

    def skip(self, count: int) -> Dataset:
        """Everything after the first ``count`` rows.

        >>> import distinfer.dataset as ds
        >>> ds.NumpySlicesDataset([1, 2, 3], shuffle=False).skip(2).get_dataset_size()
        1
        """
        return SkipDataset(self, count)

    def project(self, columns: str | Sequence[str]) -> Dataset:
        """Keep only ``columns``, in that order.

        >>> import distinfer.dataset as ds
        >>> ds.NumpySlicesDataset({"a": [1], "b": [2]}).project(["b"]).get_col_names()
        ['b']
        """
        return ProjectDataset(self, _as_list(columns))

    def rename(self, input_columns: str | Sequence[str], output_columns: str | Sequence[str]) -> Dataset:
        """Rename columns.

        >>> import distinfer.dataset as ds
        >>> ds.NumpySlicesDataset({"a": [1]}).rename("a", "z").get_col_names()
        ['z']
        """
        return RenameDataset(self, _as_list(input_columns), _as_list(output_columns))

    def concat(self, datasets: Dataset | Sequence[Dataset]) -> Dataset:
        """Rows of this dataset, then of each of ``datasets`` (same columns).

        >>> import distinfer.dataset as ds
        >>> a = ds.NumpySlicesDataset([1, 2], shuffle=False)
        >>> (a + a).get_dataset_size()
        4
        """
        others = [datasets] if isinstance(datasets, Dataset) else list(datasets)
        return ConcatDataset([self, *others])

    __add__ = concat

    def split(self, sizes: Sequence[int | float], randomize: bool = True) -> list[Dataset]:
        """Split into consecutive (or, with ``randomize``, randomly chosen) disjoint parts.

        ``sizes`` are row counts summing to the dataset size, or fractions summing to 1 (the
        rounding difference goes to the first part). ``randomize`` needs a random-access source
        directly below, as in MindSpore.

        >>> import distinfer.dataset as ds
        >>> a, b = ds.NumpySlicesDataset(list(range(10)), shuffle=False).split([0.8, 0.2], randomize=False)
        >>> a.get_dataset_size(), [int(r[0]) for r in b.create_tuple_iterator(output_numpy=True)]
        (8, [8, 9])
        """
        counts = _split_counts(list(sizes), self.get_dataset_size())
        if not randomize:
            starts = np.cumsum([0, *counts[:-1]])
            return [self.skip(int(start)).take(count) for start, count in zip(starts, counts)]
        from .samplers import SequentialSampler, SubsetRandomSampler, SubsetSampler
        if not hasattr(self, "sampler") or self.children:
            raise RuntimeError("split(randomize=True) needs a source dataset (MnistDataset, NumpySlicesDataset ...)")
        order = self.sampler.indices(self._num_rows(), (0,))
        order = order[_rng((0x5911,), False).permutation(order.size)]
        # A shuffling source keeps reshuffling each part every epoch.
        subset = SubsetSampler if isinstance(self.sampler, SequentialSampler) else SubsetRandomSampler
        parts, start = [], 0
        for count in counts:
            part = copy.copy(self)
            part.sampler, part._cached_size = subset(order[start:start + count]), None
            parts.append(part)
            start += count
        return parts

    # --- introspection -----------------------------------------------------------------
    def get_dataset_size(self) -> int:
        """Number of rows (batches, after ``batch``) in one epoch.

        >>> import distinfer.dataset as ds
        >>> ds.NumpySlicesDataset([1, 2, 3]).get_dataset_size()
        3
        """
        if self._cached_size is None:
            size = self._size()
            if size is None:  # e.g. a generator without __len__: count one pass, as MindSpore does
                size = sum(1 for _ in self._rows((0,)))
            self._cached_size = size
        return self._cached_size

    def get_batch_size(self) -> int:
        """The batch size of the outermost ``batch`` (1 when unbatched).

        >>> import distinfer.dataset as ds
        >>> ds.NumpySlicesDataset([1, 2, 3]).batch(2).get_batch_size()
        2
        """
        node: Dataset | None = self
        while node is not None:
            if isinstance(node, BatchDataset):
                return node.batch_size
            node = node.children[0] if node.children else None
        return 1

    def get_repeat_count(self) -> int:
        """The count of the outermost ``repeat`` (1 when none)."""
        node: Dataset | None = self
        while node is not None:
            if isinstance(node, RepeatDataset):
                return node.count
            node = node.children[0] if node.children else None
        return 1

    def get_col_names(self) -> list[str]:
        """Column names of the rows this dataset yields.

        >>> import distinfer.dataset as ds
        >>> ds.NumpySlicesDataset({"a": [1], "b": [2]}).get_col_names()
        ['a', 'b']
        """
        return list(self._columns())

    def _first_row(self) -> Row:
        for row in self._rows((0,)):
            return row
        raise RuntimeError("the dataset is empty, so its output shapes and types are unknown")

    def output_shapes(self, estimate: bool = False) -> list[list[int]]:
        """Shape of each column of the first row.

        >>> import distinfer.dataset as ds
        >>> ds.NumpySlicesDataset([[1, 2], [3, 4]]).batch(2).output_shapes()
        [[2, 2]]
        """
        return [list(col.shape) for col in self._first_row()]

    def output_types(self) -> list[np.dtype]:
        """numpy dtype of each column of the first row.

        >>> import numpy as np
        >>> import distinfer.dataset as ds
        >>> ds.NumpySlicesDataset(np.zeros(2, np.float32)).output_types()
        [dtype('float32')]
        """
        return [col.dtype for col in self._first_row()]

    # --- iteration ---------------------------------------------------------------------
    def create_tuple_iterator(self, columns: Sequence[str] | None = None, num_epochs: int = -1,
                              output_numpy: bool = False, do_copy: bool = True) -> TupleIterator:
        """Iterator of lists of columns; each ``for`` over it is one epoch.

        >>> import distinfer.dataset as ds
        >>> it = ds.NumpySlicesDataset([1, 2], shuffle=False).create_tuple_iterator(num_epochs=2, output_numpy=True)
        >>> [[int(r[0]) for r in it] for _ in range(2)]
        [[1, 2], [1, 2]]
        """
        node = self.project(columns) if columns is not None else self
        return TupleIterator(node, num_epochs, output_numpy)

    def create_dict_iterator(self, num_epochs: int = -1, output_numpy: bool = False,
                             do_copy: bool = True) -> DictIterator:
        """Iterator of ``{column name: value}`` dicts; each ``for`` over it is one epoch.

        >>> import distinfer.dataset as ds
        >>> next(ds.NumpySlicesDataset({"a": [5]}).create_dict_iterator(output_numpy=True))["a"].item()
        5
        """
        return DictIterator(self, num_epochs, output_numpy)

    def __iter__(self) -> Iterator[list[Any]]:
        return iter(self.create_tuple_iterator(num_epochs=1))


def _split_counts(sizes: list[int | float], total: int) -> list[int]:
    """Row counts of each split part, following MindSpore's rules for ints and fractions."""
    if not sizes:
        raise ValueError("split sizes must not be empty")
    if all(isinstance(s, int) and not isinstance(s, bool) for s in sizes):
        if sum(sizes) != total or min(sizes) <= 0:
            raise ValueError(f"split sizes {sizes} must be positive and sum to the dataset size {total}")
        return list(sizes)
    if not all(isinstance(s, float) and 0 < s <= 1 for s in sizes) or abs(sum(sizes) - 1) > 1e-6:
        raise ValueError(f"split sizes {sizes} must be all ints or all floats in (0, 1] summing to 1")
    counts = [round(s * total) for s in sizes]
    counts[0] += total - sum(counts)
    if min(counts) <= 0:
        raise ValueError(f"split sizes {sizes} leave an empty part of a {total}-row dataset")
    return counts


# ---------------------------------------------------------------------------------------
# Operations
# ---------------------------------------------------------------------------------------
class MapDataset(Dataset):
    """Rows with some columns replaced by the output of a chain of callables."""

    def __init__(self, child: Dataset, operations, input_columns: list[str] | None,
                 output_columns: list[str] | None) -> None:
        super().__init__([child])
        ops = list(operations) if isinstance(operations, (list, tuple)) else [operations]
        if not ops or not all(callable(op) for op in ops):
            raise TypeError(f"map operations must be callables, got {operations!r}")
        self.ops = ops
        cols = child._columns()
        self.inputs = input_columns or cols[:1]
        missing = [c for c in self.inputs if c not in cols]
        if missing:
            raise ValueError(f"map input columns {missing} are not in the dataset columns {cols}")
        self.outputs = output_columns or list(self.inputs)
        self.in_idx = [cols.index(c) for c in self.inputs]
        kept = [c for c in cols if c not in self.inputs]
        clash = [c for c in self.outputs if c in kept]
        if clash:
            raise ValueError(f"map output columns {clash} already exist in the dataset")
        at = min(self.in_idx)
        # Outputs take the place of the first input column, as MindSpore orders them.
        before = [c for c in cols[:at] if c in kept]
        self.cols = before + self.outputs + [c for c in kept if c not in before]
        self.keep_idx = [cols.index(c) for c in kept]

    def _columns(self) -> list[str]:
        return self.cols

    def _apply(self, args: tuple) -> tuple:
        for op in self.ops:
            out = op(*args)
            args = out if isinstance(out, tuple) else (out,)
        if len(args) != len(self.outputs):
            raise RuntimeError(f"map produced {len(args)} columns but output_columns is {self.outputs}")
        return tuple(np.asarray(a) for a in args)

    def _rows(self, key: Key) -> Iterator[Row]:
        n_before = self.cols.index(self.outputs[0])
        for row in self.children[0]._rows(key):
            kept = [row[i] for i in self.keep_idx]
            yield (*kept[:n_before], *self._apply(tuple(row[i] for i in self.in_idx)), *kept[n_before:])


class BatchDataset(Dataset):
    """Rows stacked ``batch_size`` at a time along a new first axis."""

    def __init__(self, child: Dataset, batch_size: int, drop_remainder: bool) -> None:
        super().__init__([child])
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size <= 0:
            raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
        self.batch_size, self.drop_remainder = batch_size, bool(drop_remainder)

    def _size(self) -> int | None:
        n = self.children[0]._size()
        if n is None or n == -1:  # unknown, or an endless repeat
            return n
        return n // self.batch_size if self.drop_remainder else math.ceil(n / self.batch_size)

    def _stack(self, rows: list[Row]) -> Row:
        out = []
        for name, column in zip(self._columns(), zip(*rows)):
            try:
                out.append(np.stack(column))
            except ValueError as err:
                shapes = sorted({np.shape(c) for c in column})
                raise RuntimeError(f"batch: column {name!r} has rows of different shapes {shapes}") from err
        return tuple(out)

    def _rows(self, key: Key) -> Iterator[Row]:
        rows = iter(self.children[0]._rows(key))
        while True:
            chunk = list(itertools.islice(rows, self.batch_size))
            if not chunk or (self.drop_remainder and len(chunk) < self.batch_size):
                return
            yield self._stack(chunk)


class ShuffleDataset(Dataset):
    """Buffer shuffle: keep ``buffer_size`` rows, emit a random one as each new row arrives."""

    def __init__(self, child: Dataset, buffer_size: int) -> None:
        super().__init__([child])
        if not isinstance(buffer_size, int) or buffer_size < 2:
            raise ValueError(f"buffer_size must be an int >= 2, got {buffer_size!r}")
        self.buffer_size = buffer_size

    def _rows(self, key: Key) -> Iterator[Row]:
        rng = _rng((*key, 0x5F), False)
        buffer: list[Row] = []
        for row in self.children[0]._rows(key):
            if len(buffer) < self.buffer_size:
                buffer.append(row)
                continue
            j = int(rng.integers(self.buffer_size))
            yield buffer[j]
            buffer[j] = row
        for j in rng.permutation(len(buffer)):
            yield buffer[j]


class RepeatDataset(Dataset):
    """The child's rows ``count`` times, each repetition a fresh (re-shuffled) pass."""

    def __init__(self, child: Dataset, count: int | None) -> None:
        super().__init__([child])
        count = -1 if count is None else count
        if not isinstance(count, int) or (count <= 0 and count != -1):
            raise ValueError(f"repeat count must be a positive int or -1, got {count!r}")
        self.count = count

    def _size(self) -> int | None:
        n = self.children[0]._size()
        return None if n is None else (-1 if self.count == -1 else n * self.count)

    def _rows(self, key: Key) -> Iterator[Row]:
        passes = itertools.count() if self.count == -1 else range(self.count)
        for r in passes:
            yield from self.children[0]._rows((*key, r))


class TakeDataset(Dataset):
    """At most ``count`` rows."""

    def __init__(self, child: Dataset, count: int) -> None:
        super().__init__([child])
        if not isinstance(count, int) or (count <= 0 and count != -1):
            raise ValueError(f"take count must be a positive int or -1, got {count!r}")
        self.count = count

    def _size(self) -> int | None:
        n = self.children[0]._size()
        if n is None or self.count == -1:
            return n
        return self.count if n == -1 else min(n, self.count)

    def _rows(self, key: Key) -> Iterator[Row]:
        rows = self.children[0]._rows(key)
        return rows if self.count == -1 else itertools.islice(rows, self.count)


class SkipDataset(Dataset):
    """All but the first ``count`` rows."""

    def __init__(self, child: Dataset, count: int) -> None:
        super().__init__([child])
        if not isinstance(count, int) or count < 0:
            raise ValueError(f"skip count must be a non-negative int, got {count!r}")
        self.count = count

    def _size(self) -> int | None:
        n = self.children[0]._size()
        return n if n is None or n == -1 else max(n - self.count, 0)

    def _rows(self, key: Key) -> Iterator[Row]:
        return itertools.islice(self.children[0]._rows(key), self.count, None)


class ProjectDataset(Dataset):
    """A subset / reordering of the columns."""

    def __init__(self, child: Dataset, columns: list[str]) -> None:
        super().__init__([child])
        cols = child._columns()
        missing = [c for c in columns if c not in cols]
        if missing:
            raise ValueError(f"project: columns {missing} are not in the dataset columns {cols}")
        self.cols, self.idx = columns, [cols.index(c) for c in columns]

    def _columns(self) -> list[str]:
        return self.cols

    def _rows(self, key: Key) -> Iterator[Row]:
        for row in self.children[0]._rows(key):
            yield tuple(row[i] for i in self.idx)


class RenameDataset(Dataset):
    """The same rows under new column names."""

    def __init__(self, child: Dataset, inputs: list[str], outputs: list[str]) -> None:
        super().__init__([child])
        cols = child._columns()
        if len(inputs) != len(outputs):
            raise ValueError(f"rename: {len(inputs)} input columns but {len(outputs)} output columns")
        missing = [c for c in inputs if c not in cols]
        if missing:
            raise ValueError(f"rename: columns {missing} are not in the dataset columns {cols}")
        mapping = dict(zip(inputs, outputs))
        self.cols = [mapping.get(c, c) for c in cols]

    def _columns(self) -> list[str]:
        return self.cols

    def _rows(self, key: Key) -> Iterator[Row]:
        return self.children[0]._rows(key)


class ConcatDataset(Dataset):
    """Datasets one after another."""

    def __init__(self, children: Sequence[Dataset]) -> None:
        super().__init__(children)
        names = [c._columns() for c in children]
        if any(n != names[0] for n in names):
            raise ValueError(f"concat needs identical columns, got {names}")

    def _size(self) -> int | None:
        sizes = [c._size() for c in self.children]
        return None if any(s is None for s in sizes) else sum(sizes)

    def _rows(self, key: Key) -> Iterator[Row]:
        for i, child in enumerate(self.children):
            yield from child._rows((*key, i))


# ---------------------------------------------------------------------------------------
# Iterators
# ---------------------------------------------------------------------------------------
def _tensor_class() -> type | None:
    """distinfer's Tensor, imported late because the runtime may not provide it yet."""
    try:
        from ..tensor import Tensor
    except ImportError:
        logger.debug("distinfer.tensor is unavailable; iterators yield numpy arrays")
        return None
    return Tensor


class TupleIterator:
    """Yields each row as a list of columns; one ``for`` loop over it is one epoch.

    >>> import distinfer.dataset as ds
    >>> data = ds.NumpySlicesDataset({"x": [1, 2, 3], "y": [10, 20, 30]}, shuffle=False)
    >>> it = data.create_tuple_iterator(num_epochs=2, output_numpy=True)
    >>> type(it).__name__, it.columns
    ('TupleIterator', ['x', 'y'])
    >>> [[[int(v) for v in row] for row in it] for _ in range(3)]  # two epochs, then nothing
    [[[1, 10], [2, 20], [3, 30]], [[1, 10], [2, 20], [3, 30]], []]
    """

    def __init__(self, dataset: Dataset, num_epochs: int = -1, output_numpy: bool = False) -> None:
        if not isinstance(num_epochs, int) or (num_epochs <= 0 and num_epochs != -1):
            raise ValueError(f"num_epochs must be a positive int or -1, got {num_epochs!r}")
        self.dataset, self.num_epochs = dataset, num_epochs
        self.columns = dataset.get_col_names()
        self._wrap = None if output_numpy else _tensor_class()
        self._epoch = 0
        self._rows: Iterator[Row] | None = None

    def __iter__(self) -> TupleIterator:
        return self

    def _next_row(self) -> Row:
        if self._rows is None:
            if self.num_epochs != -1 and self._epoch >= self.num_epochs:
                raise StopIteration
            self._rows = self.dataset._rows((self._epoch,))
        try:
            return next(self._rows)
        except StopIteration:
            self._rows, self._epoch = None, self._epoch + 1
            raise

    def _convert(self, row: Row) -> list[Any]:
        if self._wrap is None:
            return list(row)
        return [self._wrap(np.asarray(col)) for col in row]

    def __next__(self) -> list[Any]:
        return self._convert(self._next_row())

    def get_next(self) -> list[Any]:
        """The next row (MindSpore's iterator spelling)."""
        return next(self)

    def stop(self) -> None:
        """Abandon the current pass and any remaining epochs."""
        self._rows, self.num_epochs = None, 0


class DictIterator(TupleIterator):
    """Yields each row as ``{column name: value}``.

    >>> import distinfer.dataset as ds
    >>> data = ds.NumpySlicesDataset({"x": [1, 2], "y": [10, 20]}, shuffle=False)
    >>> [{k: int(v) for k, v in row.items()} for row in data.create_dict_iterator(num_epochs=1, output_numpy=True)]
    [{'x': 1, 'y': 10}, {'x': 2, 'y': 20}]
    >>> type(next(data.create_dict_iterator(num_epochs=1))["x"]).__name__  # Tensors unless output_numpy
    'Tensor'
    """

    def __next__(self) -> dict[str, Any]:  # type: ignore[override]
        return dict(zip(self.columns, self._convert(self._next_row())))
