"""``mindspore.dataset.vision``: image transforms on numpy HWC images.

>>> import numpy as np
>>> import distinfer.dataset as ds
>>> ds.vision.HWC2CHW()(np.zeros((28, 28, 1), np.uint8)).shape
(1, 28, 28)
"""
from . import c_transforms, py_transforms, transforms
from .transforms import HWC2CHW, Inter, Normalize, Rescale, Resize, ToTensor

__all__ = ["Rescale", "Normalize", "HWC2CHW", "Resize", "ToTensor", "Inter",
           "transforms", "c_transforms", "py_transforms"]
