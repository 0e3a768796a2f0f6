"""File formats at the numpy level: MindSpore ``.ckpt``, safetensors and strategy files.

>>> from distinfer.io import CkptFile, write_ckpt, read_strategy, write_strategy
"""
from .ckpt import CkptEntry, CkptFile, RawValue, write_ckpt

__all__ = ["CkptEntry", "CkptFile", "RawValue", "write_ckpt"]
