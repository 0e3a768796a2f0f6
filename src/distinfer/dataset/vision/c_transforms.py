"""MindSpore 1.x spelling (``mindspore.dataset.vision.c_transforms``) of the same transforms."""
from .transforms import HWC2CHW, Inter, Normalize, Rescale, Resize, ToTensor  # noqa: F401
