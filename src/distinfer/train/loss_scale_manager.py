"""The loss scale managers under MindSpore's module name ``mindspore.train.loss_scale_manager``
(the same classes as :mod:`distinfer.amp`).

>>> from distinfer.train.loss_scale_manager import FixedLossScaleManager
>>> FixedLossScaleManager(64.0).get_loss_scale()
64.0
"""
from ..amp import DynamicLossScaleManager, FixedLossScaleManager, LossScaleManager

__all__ = ["LossScaleManager", "FixedLossScaleManager", "DynamicLossScaleManager"]
