"""Image transforms, as ``mindspore.dataset.vision``; images are numpy arrays, HWC unless stated.

>>> import numpy as np
>>> from distinfer.dataset import vision
>>> img = np.full((28, 28, 1), 255, np.uint8)
>>> out = vision.HWC2CHW()(vision.Normalize((0.5,), (0.5,))(vision.Rescale(1 / 255, 0)(img)))
>>> out.shape, out.dtype, float(out.max())
((1, 28, 28), dtype('float32'), 1.0)
"""
from __future__ import annotations

from collections.abc import Sequence
from enum import Enum
from typing import Any

import numpy as np

__all__ = ["Inter", "Rescale", "Normalize", "HWC2CHW", "Resize", "ToTensor"]


class Inter(Enum):
    """Interpolation modes (only NEAREST and LINEAR/BILINEAR are implemented).

    >>> import numpy as np
    >>> from distinfer.dataset.vision import Inter, Resize
    >>> Inter.BILINEAR is Inter.LINEAR
    True
    >>> row = np.array([[10, 20, 30, 40]], np.uint8)
    >>> Resize((1, 2), Inter.NEAREST)(row).tolist(), Resize((1, 2), Inter.LINEAR)(row).tolist()
    ([[10, 30]], [[15, 35]])
    """

    NEAREST = 0
    LINEAR = 1
    BILINEAR = 1
    CUBIC = 2
    BICUBIC = 2
    AREA = 3
    PILCUBIC = 4
    ANTIALIAS = 5


def _image(img: Any) -> np.ndarray:
    arr = np.asarray(img)
    if arr.ndim not in (2, 3):
        raise RuntimeError(f"expected an image of shape <H, W> or <H, W, C>, got shape {arr.shape}")
    return arr


class Rescale:
    """``image * rescale + shift`` as float32.

    >>> import numpy as np
    >>> from distinfer.dataset.vision import Rescale
    >>> Rescale(0.5, 1)(np.array([[2]], np.uint8)).tolist()
    [[2.0]]
    """

    def __init__(self, rescale: float, shift: float) -> None:
        self.rescale, self.shift = np.float32(rescale), np.float32(shift)

    def __call__(self, img: Any) -> np.ndarray:
        return np.asarray(img, dtype=np.float32) * self.rescale + self.shift


class Normalize:
    """``(image - mean) / std`` per channel, as float32 (channels last unless ``is_hwc=False``).

    >>> import numpy as np
    >>> from distinfer.dataset.vision import Normalize
    >>> Normalize((1.0, 2.0), (2.0, 4.0))(np.array([[[3, 6]]], np.uint8)).tolist()
    [[[1.0, 1.0]]]
    """

    def __init__(self, mean: Sequence[float], std: Sequence[float], is_hwc: bool = True) -> None:
        self.mean = np.asarray(mean, dtype=np.float32).reshape(-1)
        self.std = np.asarray(std, dtype=np.float32).reshape(-1)
        if self.mean.size != self.std.size:
            raise ValueError(f"mean has {self.mean.size} values but std has {self.std.size}")
        if np.any(self.std <= 0):
            raise ValueError(f"std values must be positive, got {self.std.tolist()}")
        self.is_hwc = is_hwc

    def __call__(self, img: Any) -> np.ndarray:
        arr = _image(img).astype(np.float32, copy=False)
        channels = 1 if arr.ndim == 2 else arr.shape[-1 if self.is_hwc else 0]
        if self.mean.size not in (1, channels):
            raise RuntimeError(f"Normalize: {self.mean.size} mean/std values for an image with {channels} channels")
        shape = (-1,) if self.is_hwc or arr.ndim == 2 else (-1, 1, 1)
        return (arr - self.mean.reshape(shape)) / self.std.reshape(shape)


class HWC2CHW:
    """Move channels first: <H, W, C> -> <C, H, W> (a 2-D <H, W> image is returned as is).

    >>> import numpy as np
    >>> from distinfer.dataset.vision import HWC2CHW
    >>> HWC2CHW()(np.zeros((4, 5, 3))).shape
    (3, 4, 5)
    """

    def __call__(self, img: Any) -> np.ndarray:
        arr = _image(img)
        return arr if arr.ndim == 2 else np.ascontiguousarray(arr.transpose(2, 0, 1))


def _axis_weights(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Half-pixel-centred source positions: lower index, upper index, upper weight."""
    pos = np.clip((np.arange(n_out) + 0.5) * (n_in / n_out) - 0.5, 0, n_in - 1)
    lo = np.floor(pos).astype(np.int64)
    hi = np.minimum(lo + 1, n_in - 1)
    return lo, hi, (pos - lo).astype(np.float32)


class Resize:
    """Resize to ``size`` (h, w), or an int for the shorter side keeping the aspect ratio.

    >>> import numpy as np
    >>> from distinfer.dataset.vision import Resize
    >>> Resize((2, 3))(np.zeros((4, 6, 1), np.uint8)).shape
    (2, 3, 1)
    """

    def __init__(self, size: int | Sequence[int], interpolation: Inter = Inter.LINEAR) -> None:
        if interpolation not in (Inter.NEAREST, Inter.LINEAR):
            raise NotImplementedError(f"Resize: interpolation {interpolation} is not implemented")
        self.size, self.interpolation = size, interpolation

    def _target(self, h: int, w: int) -> tuple[int, int]:
        if isinstance(self.size, int):
            if h <= w:
                return self.size, max(1, int(w * self.size / h))
            return max(1, int(h * self.size / w)), self.size
        return int(self.size[0]), int(self.size[1])

    def __call__(self, img: Any) -> np.ndarray:
        arr = _image(img)
        out_h, out_w = self._target(*arr.shape[:2])
        if self.interpolation is Inter.NEAREST:
            rows = np.minimum((np.arange(out_h) * arr.shape[0] / out_h).astype(np.int64), arr.shape[0] - 1)
            cols = np.minimum((np.arange(out_w) * arr.shape[1] / out_w).astype(np.int64), arr.shape[1] - 1)
            return arr[rows][:, cols]
        r0, r1, wr = _axis_weights(arr.shape[0], out_h)
        c0, c1, wc = _axis_weights(arr.shape[1], out_w)
        extra = (1,) * (arr.ndim - 2)
        wr, wc = wr.reshape(-1, 1, *extra), wc.reshape(1, -1, *extra)
        src = arr.astype(np.float32)
        top = src[r0][:, c0] * (1 - wc) + src[r0][:, c1] * wc
        bottom = src[r1][:, c0] * (1 - wc) + src[r1][:, c1] * wc
        out = top * (1 - wr) + bottom * wr
        if np.issubdtype(arr.dtype, np.integer):
            info = np.iinfo(arr.dtype)
            out = np.clip(np.rint(out), info.min, info.max)
        return out.astype(arr.dtype)


class ToTensor:
    """HWC uint8 image -> CHW float32 scaled to [0, 1] (``output_type`` to change the dtype).

    >>> import numpy as np
    >>> from distinfer.dataset.vision import ToTensor
    >>> ToTensor()(np.full((2, 2, 1), 255, np.uint8)).tolist()
    [[[1.0, 1.0], [1.0, 1.0]]]
    """

    def __init__(self, output_type: Any = np.float32) -> None:
        from ..transforms.transforms import to_numpy_dtype
        self.dtype = to_numpy_dtype(output_type)

    def __call__(self, img: Any) -> np.ndarray:
        arr = _image(img)
        arr = arr[:, :, None] if arr.ndim == 2 else arr
        return (arr.astype(np.float32) / 255.0).transpose(2, 0, 1).astype(self.dtype)
