"""Loss scaling for low-precision training: the scale update cells and ``TrainOneStepWithLossScaleCell``.

The loss's gradient is seeded with the scale ``S`` (small float16 gradients then stay above
underflow), the parameter gradients are divided by ``S``, and a step whose gradients hold an
inf or NaN on any rank is skipped. ``DynamicLossScaleUpdateCell`` divides ``S`` by
``scale_factor`` (not below 1) after such a step and multiplies it after ``scale_window`` steps
without one, as MindSpore's does.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from ..autograd import Tape, gradients
from ..communication import _backend
from ..parallel import _executor as ex
from ..tensor import Parameter, Tensor
from .cell import Cell
from .wrap import TrainOneStepCell, _replicated_value

__all__ = ["FixedLossScaleUpdateCell", "DynamicLossScaleUpdateCell", "TrainOneStepWithLossScaleCell"]


def _scalar(value: float, name: str, dtype=np.float32) -> Parameter:
    return Parameter(Tensor(np.array(value, dtype)), name=name, requires_grad=False)


class FixedLossScaleUpdateCell(Cell):
    """A constant loss scale: ``cell(scale, overflow)`` leaves ``scale`` and returns ``overflow``.

    >>> from distinfer import nn
    >>> cell = nn.FixedLossScaleUpdateCell(1024.0)
    >>> cell.get_loss_scale(), cell(None, True)
    (1024.0, True)
    """

    _plan_boundary = False  # runs no ops of its own: not a graph for sharding propagation

    def __init__(self, loss_scale_value: float) -> None:
        super().__init__()
        self.loss_scale_value = float(loss_scale_value)

    def get_loss_scale(self) -> float:
        return self.loss_scale_value

    def construct(self, loss_scale: Any, overflow: bool) -> bool:
        return bool(overflow)


class DynamicLossScaleUpdateCell(Cell):
    """``DynamicLossScaleUpdateCell(loss_scale_value, scale_factor, scale_window)``: updates a scale
    Parameter after each step (see the module doc); its step counters are Parameters named as
    MindSpore names them, so they are saved with the training network.

    >>> import numpy as np, distinfer as ms
    >>> from distinfer import nn
    >>> cell = nn.DynamicLossScaleUpdateCell(loss_scale_value=8.0, scale_factor=2, scale_window=2)
    >>> scale = ms.Parameter(ms.Tensor(np.array(8.0, np.float32)), name="scale_sense")
    >>> [(cell(scale, o), float(scale.asnumpy())) for o in (False, True, False, False, False)]
    [(False, 8.0), (True, 4.0), (False, 4.0), (False, 8.0), (False, 8.0)]
    """

    _plan_boundary = False  # runs no ops of its own: not a graph for sharding propagation

    def __init__(self, loss_scale_value: float, scale_factor: int, scale_window: int) -> None:
        super().__init__()
        if float(loss_scale_value) < 1:
            raise ValueError(f"DynamicLossScaleUpdateCell: loss_scale_value must be >= 1, got {loss_scale_value}")
        if scale_factor <= 1 or scale_window <= 0:
            raise ValueError(f"DynamicLossScaleUpdateCell: scale_factor must be > 1 and scale_window > 0, got "
                             f"{scale_factor} and {scale_window}")
        self.loss_scale_value = float(loss_scale_value)
        self.scale_factor = scale_factor
        self.scale_window = scale_window
        self.cur_iter = _scalar(1, "current_iterator_step", np.int32)
        self.last_overflow_iter = _scalar(0, "last_overflow_iterator_step", np.int32)

    def get_loss_scale(self) -> float:
        return self.loss_scale_value

    def construct(self, loss_scale: Parameter, overflow: bool) -> bool:
        scale = float(loss_scale.asnumpy())
        cur, last = int(self.cur_iter.asnumpy()), int(self.last_overflow_iter.asnumpy())
        grow = cur - last >= self.scale_window
        if overflow:
            scale = max(scale / self.scale_factor, 1.0)
        elif grow:
            scale *= self.scale_factor
        if overflow or grow:
            self.last_overflow_iter.set_data(Tensor(np.array(cur, np.int32)))
        loss_scale.set_data(Tensor(np.array(scale, loss_scale.dtype.np)))
        self.cur_iter.set_data(Tensor(np.array(cur + 1, np.int32)))
        return bool(overflow)


class TrainOneStepWithLossScaleCell(TrainOneStepCell):
    """``TrainOneStepWithLossScaleCell(network, optimizer, scale_sense)``: one training step with a
    loss scale; returns ``(loss, overflow, scale)``. ``scale_sense`` is an update cell
    (:class:`DynamicLossScaleUpdateCell`, :class:`FixedLossScaleUpdateCell`) or a scalar Tensor
    (a fixed scale, set again with :meth:`set_sense_scale`).

    >>> import numpy as np, distinfer as ms
    >>> from distinfer import nn
    >>> net = nn.WithLossCell(nn.Dense(2, 1, weight_init="ones", bias_init="zeros"), nn.MSELoss())
    >>> step = nn.TrainOneStepWithLossScaleCell(net, nn.SGD(net.trainable_params(), 0.1),
    ...                                         nn.DynamicLossScaleUpdateCell(2.0 ** 10, 2, 1000))
    >>> x, y = ms.Tensor(np.array([[1.0, 2.0]], np.float32)), ms.Tensor(np.array([[5.0]], np.float32))
    >>> loss, overflow, scale = step(x, y)
    >>> float(loss.asnumpy()), bool(overflow.asnumpy()), float(scale.asnumpy())
    (4.0, False, 1024.0)
    >>> net.backbone_network.weight.asnumpy().astype(float).round(4).tolist()  # the unscaled gradient step
    [[1.4, 1.8]]
    """

    def __init__(self, network: Cell, optimizer: Cell, scale_sense: Any) -> None:
        super().__init__(network, optimizer)
        self.loss_scaling_manager = None
        if isinstance(scale_sense, Cell):
            self.loss_scaling_manager = scale_sense
            value = scale_sense.get_loss_scale()
        elif isinstance(scale_sense, Tensor):
            if scale_sense.shape not in ((), (1,)):
                raise ValueError(f"TrainOneStepWithLossScaleCell: a Tensor scale_sense must have shape () or (1,), "
                                 f"got {scale_sense.shape}")
            value = float(scale_sense.asnumpy().reshape(-1)[0])
        else:
            raise TypeError(f"TrainOneStepWithLossScaleCell: scale_sense must be a Cell or a Tensor, got "
                            f"{type(scale_sense).__name__}")
        self.scale_sense = _scalar(value, "scale_sense")

    def set_sense_scale(self, sens: Tensor) -> None:
        """Set the (fixed) loss scale."""
        self.scale_sense.set_data(Tensor(np.asarray(sens.asnumpy(), np.float32).reshape(())))

    def construct(self, *inputs):
        self.network.set_train(True)
        scale = float(self.scale_sense.asnumpy())
        tape = Tape(list(self.weights))
        with np.errstate(over="ignore", invalid="ignore"):  # overflow is expected here, and detected below
            with ex.observing(tape):
                loss = self.network(*inputs)
            grads = gradients(tape, loss, list(self.weights), scale)
            if self.grad_reducer is not None:
                grads = self.grad_reducer(grads)
            grads = [_times(g, 1.0 / scale) for g in grads]
        overflow = _any_rank(not all(np.isfinite(g.local).all() for g in grads if g.local is not None))
        if self.loss_scaling_manager is not None:
            overflow = self.loss_scaling_manager(self.scale_sense, overflow)
        if not overflow:
            self.optimizer(tuple(grads))
        return _replicated_value(loss), Tensor(np.array(overflow)), Tensor(np.array(scale, np.float32))


def _times(g: Tensor, k: float) -> Tensor:
    """``g * k`` on its local block, keeping its layout (no op, so no redistribution)."""
    if g.local is None:
        return g
    return Tensor._make((g.local * k).astype(g.local.dtype, copy=False), g.global_shape, g.spec, g.dtype)


def _any_rank(flag: bool) -> bool:
    """True on every rank if ``flag`` is True on any (the ranks skip or take the step together)."""
    world = _backend.world()
    if world.size == 1:
        return bool(flag)
    return bool(world.allreduce(np.array([flag], np.int32), (tuple(range(world.size)),), op="max")[0])
