"""``mindspore.parallel.shard``: MindSpore's module path for :class:`~distinfer.Layout` and :func:`shard`.

>>> import distinfer as ms
>>> from distinfer.parallel.shard import Layout
>>> Layout is ms.Layout
True
"""
from .shard_layout import Layout
from .shard_region import shard

__all__ = ["Layout", "shard"]
