"""``mindspore.parallel.auto_parallel``: MindSpore 2.x's module path for :class:`AutoParallel`.

>>> from distinfer.parallel.auto_parallel import AutoParallel
>>> from distinfer.train.auto_parallel import AutoParallel as same
>>> AutoParallel is same
True
"""
from ..train.auto_parallel import AutoParallel

__all__ = ["AutoParallel"]
