"""``mindspore.dataset.transforms``: general (non-image) transforms.

>>> import distinfer.dataset as ds
>>> ds.transforms.TypeCast("int32").dtype
dtype('int32')
"""
from . import c_transforms, py_transforms, transforms
from .transforms import Compose, OneHot, TypeCast

__all__ = ["TypeCast", "Compose", "OneHot", "transforms", "c_transforms", "py_transforms"]
