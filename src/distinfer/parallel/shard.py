"""``mindspore.parallel.shard``: MindSpore's module path for :class:`~distinfer.Layout`.

>>> import distinfer as ms
>>> from distinfer.parallel.shard import Layout
>>> Layout is ms.Layout
True
"""
from .shard_layout import Layout

__all__ = ["Layout"]
