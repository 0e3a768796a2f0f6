"""``mindspore.common.dtype`` (``import mindspore.common.dtype as mstype``): the objects of :mod:`distinfer.dtype`.

>>> import distinfer as ms
>>> import distinfer.common.dtype as mstype
>>> mstype.float32 is ms.float32, mstype.dtype_to_nptype(mstype.int8).__name__
(True, 'int8')
"""
from ..dtype import *  # noqa: F401,F403
from ..dtype import __all__  # noqa: F401
