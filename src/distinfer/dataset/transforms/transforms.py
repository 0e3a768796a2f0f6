"""General data transforms, as ``mindspore.dataset.transforms``.

>>> import numpy as np
>>> from distinfer import dtype as mstype
>>> from distinfer.dataset import transforms
>>> transforms.TypeCast(mstype.int32)(np.uint32(7)).dtype
dtype('int32')
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

__all__ = ["TypeCast", "Compose", "OneHot", "to_numpy_dtype"]


def to_numpy_dtype(data_type: Any) -> np.dtype:
    """A numpy dtype from a distinfer/MindSpore dtype (anything with ``.np``) or a numpy dtype.

    >>> import numpy as np, distinfer as ms
    >>> to_numpy_dtype(ms.int32), to_numpy_dtype(np.float16), to_numpy_dtype("uint8")
    (dtype('int32'), dtype('float16'), dtype('uint8'))
    """
    np_dtype = getattr(data_type, "np", None)
    if np_dtype is not None:
        return np.dtype(np_dtype)
    try:
        return np.dtype(data_type)
    except TypeError as err:
        raise TypeError(f"not a data type: {data_type!r}") from err


class TypeCast:
    """Cast the input to ``data_type`` (a distinfer dtype such as ``ms.int32``, or a numpy dtype).

    >>> import numpy as np
    >>> from distinfer.dataset.transforms import TypeCast
    >>> TypeCast(np.float16)(np.array([1, 2])).dtype
    dtype('float16')
    """

    def __init__(self, data_type: Any) -> None:
        self.dtype = to_numpy_dtype(data_type)

    def __call__(self, data: Any) -> np.ndarray:
        return np.asarray(data).astype(self.dtype, copy=False)

    def __repr__(self) -> str:
        return f"TypeCast({self.dtype})"


class Compose:
    """Apply ``transforms`` one after another (a tuple output feeds the next op's arguments).

    >>> import numpy as np
    >>> from distinfer.dataset.transforms import Compose, TypeCast
    >>> Compose([lambda x: x + 1, TypeCast(np.int8)])(np.array(1))
    array(2, dtype=int8)
    """

    def __init__(self, transforms: Sequence[Callable]) -> None:
        self.transforms = list(transforms)
        if not self.transforms or not all(callable(t) for t in self.transforms):
            raise ValueError("Compose needs a non-empty list of callables")

    def __call__(self, *args: Any) -> Any:
        for op in self.transforms:
            out = op(*args)
            args = out if isinstance(out, tuple) else (out,)
        return args if len(args) > 1 else args[0]


class OneHot:
    """One-hot encode integer labels into ``num_classes`` columns (dtype of the input).

    >>> import numpy as np
    >>> from distinfer.dataset.transforms import OneHot
    >>> OneHot(3)(np.array(1)).tolist()
    [0, 1, 0]
    """

    def __init__(self, num_classes: int, smoothing_rate: float = 0.0) -> None:
        self.num_classes, self.smoothing = int(num_classes), float(smoothing_rate)

    def __call__(self, label: Any) -> np.ndarray:
        label = np.asarray(label)
        out = (label[..., None] == np.arange(self.num_classes)).astype(label.dtype)
        if self.smoothing:
            out = out * (1 - self.smoothing) + self.smoothing / self.num_classes
        return out
