"""``mindspore.amp``: loss scale managers and the mixed-precision training network builder.

``Model(..., amp_level=..., loss_scale_manager=...)`` builds its training network here.
``"O1"`` runs MindSpore's amp white list in float16 (``nn.Dense`` cells; ``MatMul``,
``BatchMatMul`` and ``ReLU`` ops), their outputs cast back to float32. ``"O2"`` runs the network
in float16, its norm layers (``nn.LayerNorm``, MindSpore's black list) and the loss in float32,
with a dynamic loss scale; ``"O3"`` runs it all in float16 without loss scaling. ``"auto"`` on
CPU is ``"O0"``.

>>> import numpy as np, distinfer as ms
>>> from distinfer import nn
>>> net = nn.Dense(2, 1)
>>> step = ms.amp.build_train_network(net, nn.SGD(net.trainable_params(), 0.1), nn.MSELoss(), level="O2")
>>> type(step).__name__, step.network.backbone_network._mixed_precision, float(step.scale_sense.asnumpy())
('TrainOneStepWithLossScaleCell', Float16, 16777216.0)
"""
from __future__ import annotations

from typing import Any, Optional

from . import dtype as mstype

__all__ = ["LossScaleManager", "FixedLossScaleManager", "DynamicLossScaleManager", "build_train_network"]

_LEVELS = ("O0", "O1", "O2", "O3", "auto")


class LossScaleManager:
    """Base class of loss scale managers (``get_loss_scale``, ``update_loss_scale``, ``get_update_cell``)."""

    def get_loss_scale(self) -> float:
        raise NotImplementedError

    def update_loss_scale(self, overflow: bool) -> None:
        raise NotImplementedError

    def get_update_cell(self):
        raise NotImplementedError


class FixedLossScaleManager(LossScaleManager):
    """``FixedLossScaleManager(loss_scale=128.0, drop_overflow_update=True)``: a constant scale.

    With ``drop_overflow_update=False`` no step is checked or skipped: the loss gradient is simply
    seeded with the scale, so give the optimizer the same ``loss_scale`` to divide it out.

    >>> import distinfer as ms
    >>> m = ms.FixedLossScaleManager(1024.0, drop_overflow_update=False)
    >>> m.get_loss_scale(), m.get_drop_overflow_update(), m.get_update_cell()
    (1024.0, False, None)
    """

    def __init__(self, loss_scale: float = 128.0, drop_overflow_update: bool = True) -> None:
        if isinstance(loss_scale, bool) or not isinstance(loss_scale, (int, float)):
            raise TypeError(f"FixedLossScaleManager: loss_scale must be a float, got {type(loss_scale).__name__}")
        if loss_scale < 1:
            raise ValueError(f"FixedLossScaleManager: loss_scale must be at least 1, got {loss_scale}")
        if not isinstance(drop_overflow_update, bool):
            raise TypeError(f"FixedLossScaleManager: drop_overflow_update must be a bool, got "
                            f"{type(drop_overflow_update).__name__}")
        self._loss_scale = float(loss_scale)
        self._drop_overflow_update = drop_overflow_update

    def get_loss_scale(self) -> float:
        return self._loss_scale

    def get_drop_overflow_update(self) -> bool:
        return self._drop_overflow_update

    def update_loss_scale(self, overflow: bool) -> None:
        """A fixed scale does not change."""

    def get_update_cell(self):
        from .nn.loss_scale import FixedLossScaleUpdateCell

        return FixedLossScaleUpdateCell(self._loss_scale) if self._drop_overflow_update else None


class DynamicLossScaleManager(LossScaleManager):
    """``DynamicLossScaleManager(init_loss_scale=2**24, scale_factor=2, scale_window=2000)``: the
    scale falls by ``scale_factor`` after an overflowing step (which is skipped) and grows by it
    after ``scale_window`` clean steps.

    >>> import distinfer as ms
    >>> m = ms.DynamicLossScaleManager(init_loss_scale=16, scale_factor=2, scale_window=2)
    >>> for overflow in (True, False, False):
    ...     m.update_loss_scale(overflow)
    >>> m.get_loss_scale(), m.get_drop_overflow_update(), type(m.get_update_cell()).__name__
    (16.0, True, 'DynamicLossScaleUpdateCell')
    """

    def __init__(self, init_loss_scale: float = 2 ** 24, scale_factor: int = 2, scale_window: int = 2000) -> None:
        if init_loss_scale < 1:
            raise ValueError(f"DynamicLossScaleManager: init_loss_scale must be at least 1, got {init_loss_scale}")
        if isinstance(scale_factor, bool) or not isinstance(scale_factor, int) or scale_factor <= 1:
            raise ValueError(f"DynamicLossScaleManager: scale_factor must be an int > 1, got {scale_factor!r}")
        if isinstance(scale_window, bool) or not isinstance(scale_window, int) or scale_window <= 0:
            raise ValueError(f"DynamicLossScaleManager: scale_window must be a positive int, got {scale_window!r}")
        self.loss_scale = float(init_loss_scale)
        self.scale_factor = scale_factor
        self.scale_window = scale_window
        self.cur_iter = 1
        self.last_overflow_iter = 0

    def get_loss_scale(self) -> float:
        return self.loss_scale

    def get_drop_overflow_update(self) -> bool:
        return True

    def update_loss_scale(self, overflow: bool) -> None:
        """The update cell's rule, for a training loop of the user's own."""
        grow = self.cur_iter - self.last_overflow_iter >= self.scale_window
        if overflow:
            self.loss_scale = max(self.loss_scale / self.scale_factor, 1.0)
        elif grow:
            self.loss_scale *= self.scale_factor
        if overflow or grow:
            self.last_overflow_iter = self.cur_iter
        self.cur_iter += 1

    def get_update_cell(self):
        from .nn.loss_scale import DynamicLossScaleUpdateCell

        return DynamicLossScaleUpdateCell(self.loss_scale, self.scale_factor, self.scale_window)


def _white_list_float16(network) -> None:
    """amp O1: white-listed ops in float16 everywhere; ``nn.Dense`` cells wholly in float16, their
    outputs cast back to float32."""
    from .nn.layers import Dense
    from .parallel._executor import AMP_O1

    for _, cell in network.cells_and_names():
        object.__setattr__(cell, "_mixed_precision", AMP_O1)
    for _, cell in network.cells_and_names():
        if isinstance(cell, Dense):
            cell.to_float(mstype.float16)
            object.__setattr__(cell, "_output_dtype", mstype.float32)


def build_train_network(network, optimizer, loss_fn=None, level: str = "O0", boost_level: str = "O0",
                        loss_scale_manager: Optional[LossScaleManager] = None,
                        keep_batchnorm_fp32: Optional[bool] = None, **kwargs: Any):
    """The one-step training cell of ``network`` at mixed-precision ``level`` (module doc).

    ``"O2"``/``"O3"`` cast ``network`` to float16 in place (``Cell.to_float``) and keep ``loss_fn``
    in float32; ``"O2"`` keeps norm layers in float32 (``keep_batchnorm_fp32``, default True for
    ``"O2"`` only) and uses ``DynamicLossScaleManager()`` unless ``loss_scale_manager`` is given.
    A manager whose update cell is None (a fixed scale without overflow checks) seeds the loss
    gradient with its scale in a plain ``TrainOneStepCell``.
    """
    from .nn.loss_scale import TrainOneStepWithLossScaleCell
    from .nn.wrap import TrainOneStepCell, WithLossCell

    if level not in _LEVELS:
        raise ValueError(f"For 'build_train_network', 'level' must be one of {list(_LEVELS)}, but got {level!r}")
    if level == "O1":
        _white_list_float16(network)
    if level in ("O2", "O3"):
        from .nn.layers import LayerNorm

        network.to_float(mstype.float16)
        if keep_batchnorm_fp32 if keep_batchnorm_fp32 is not None else level == "O2":
            for _, cell in network.cells_and_names():
                if isinstance(cell, LayerNorm):
                    cell.to_float(mstype.float32)
        if level == "O2" and loss_scale_manager is None:
            loss_scale_manager = DynamicLossScaleManager()
    if loss_fn is not None:
        if level in ("O2", "O3"):
            loss_fn.to_float(mstype.float32)  # its inputs (the float16 logits, the labels) come in as float32
        network = WithLossCell(network, loss_fn)
    if loss_scale_manager is None:
        return TrainOneStepCell(network, optimizer)
    update_cell = loss_scale_manager.get_update_cell()
    if update_cell is None:
        return TrainOneStepCell(network, optimizer, sens=loss_scale_manager.get_loss_scale())
    return TrainOneStepWithLossScaleCell(network, optimizer, scale_sense=update_cell)
