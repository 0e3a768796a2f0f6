"""The communication functions under MindSpore's module name ``mindspore.communication.management``
(scripts write ``import mindspore.communication.management as D``): the same objects as
:mod:`distinfer.communication`.

>>> import distinfer.communication.management as D
>>> D.get_rank(), D.get_group_size(), D.init is __import__("distinfer").communication.init
(0, 1, True)
"""
from . import *  # noqa: F401,F403
from . import __all__  # noqa: F401
