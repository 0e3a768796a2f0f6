"""MindSpore 1.x spelling (``mindspore.dataset.transforms.c_transforms``) of the same transforms."""
from .transforms import Compose, OneHot, TypeCast  # noqa: F401
