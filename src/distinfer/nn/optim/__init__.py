"""Optimizers with MindSpore's update rules, state names and state layouts.

State parameters are clones of the parameters they belong to — same shape, same layout, so
each rank updates only its own block — named as MindSpore names them (``moments.<param>``,
``moment1.<param>``/``moment2.<param>``, ``accum.<param>``/``stat.<param>``,
``adam_m.<param>``/``adam_v.<param>``), plus ``global_step`` (Int32 ``[1]``) and
``learning_rate`` (Float32 ``[]``). Updates run on local numpy blocks.

With ``enable_parallel_optimizer`` (semi-auto parallel), a parameter whose model-parallel block
is replicated on several ranks and is at least ``parallel_optimizer_threshold`` KiB (64 by
default) is stored and updated *optimizer-sharded* (spec §4.6): each replica keeps only its
piece of axis 0 of the block, with its optimizer state; the executor gathers the block where an
op consumes it and the gradient arrives already reduced to the piece.

>>> import numpy as np, distinfer as ms
>>> from distinfer import nn
>>> net = nn.Dense(2, 1)
>>> opt = nn.Momentum(net.trainable_params(), learning_rate=0.1, momentum=0.9)
>>> [p.name for p in opt.moments]
['moments.weight', 'moments.bias']
"""
from __future__ import annotations

from typing import Iterable, Sequence

import numpy as np

import math

from ... import context
from ... import dtype as mstype
from ...layout import DistSpec, Layout
from ...parallel import _executor as ex
from ...plan import local_index
from ...tensor import Parameter, ParameterTuple, Tensor
from ..cell import Cell

__all__ = ["Optimizer", "SGD", "Momentum", "Adam", "AdamWeightDecay"]


def _scalar_param(value: float, name: str, dtype=np.float32) -> Parameter:
    return Parameter(Tensor(np.asarray(value, dtype=dtype)), name=name, requires_grad=False)


class Optimizer(Cell):
    """Base optimizer: ``Optimizer(learning_rate, parameters, weight_decay=0.0, loss_scale=1.0)``.

    >>> import numpy as np, distinfer as ms
    >>> from distinfer import nn
    >>> class HalfSGD(nn.Optimizer):  # a custom rule: update() gets numpy arrays, returns the new value
    ...     def update(self, i, value, grad, lr):
    ...         return value - 0.5 * lr * grad
    >>> w = ms.Parameter(ms.Tensor(np.array([1.0, 2.0], np.float32)), name="w")
    >>> opt = HalfSGD(0.2, [w]); opt((ms.Tensor(np.array([1.0, -1.0], np.float32)),))
    True
    >>> w.asnumpy().astype(float).round(4).tolist(), opt.global_step.asnumpy().tolist()
    ([0.9, 2.1], [1])
    """

    _plan_boundary = False  # runs no ops of its own: not a graph for sharding propagation

    def __init__(self, learning_rate, parameters: Iterable[Parameter], weight_decay: float = 0.0,
                 loss_scale: float = 1.0) -> None:
        super().__init__(auto_prefix=False)
        params = list(parameters)
        if not params:
            raise ValueError(f"{type(self).__name__}: the parameter list is empty")
        if any(isinstance(p, dict) for p in params):
            raise ValueError(f"{type(self).__name__}: parameter groups are not supported")
        if isinstance(learning_rate, (list, tuple, np.ndarray, Tensor)) and np.ndim(
                learning_rate.asnumpy() if isinstance(learning_rate, Tensor) else learning_rate) > 0:
            raise ValueError(f"{type(self).__name__}: dynamic learning-rate tables are not supported")
        lr = float(learning_rate.asnumpy()) if isinstance(learning_rate, Tensor) else float(learning_rate)
        if lr < 0:
            raise ValueError(f"{type(self).__name__}: learning_rate must be >= 0, got {lr}")
        self.global_step = Parameter(Tensor(np.zeros(1, np.int32)), name="global_step", requires_grad=False)
        self.learning_rate = _scalar_param(lr, "learning_rate")
        self.parameters = ParameterTuple(params)
        self.weight_decay = float(weight_decay)
        # MindSpore's default filter: norm scales and shifts (names with gamma/beta) are not decayed.
        self.decay_flags = tuple("beta" not in p.name and "gamma" not in p.name for p in params)
        self.loss_scale = float(loss_scale)

    def _states(self) -> Sequence[ParameterTuple]:
        return ()

    def _adopt_layouts(self) -> None:
        """On first use: shard parameters for the parallel optimizer where it applies, then give the
        state (created before the parameters were laid out) the same layouts."""
        rank = ex.stage_rank() if context.is_sharded_mode() else 0
        for p in self.parameters:
            opt = _optimizer_shard_layout(p)
            if opt is not None:  # the piece is inside this rank's block: a local slice, no messages
                p._settle(np.ascontiguousarray(p.local[local_index(opt.box(rank), p.layout.box(rank))]), DistSpec(opt))
        for states in self._states():
            for s in states:
                src = s._clone_of
                if src.layout is not None and s.layout is None:
                    s._materialize(src.layout, rank)

    def construct(self, gradients: Sequence[Tensor]):
        self._adopt_layouts()
        lr = float(self.learning_rate.asnumpy())
        for i, (p, g) in enumerate(zip(self.parameters, gradients)):
            if p.has_init and p.layout is None and g.local is None:
                continue  # a parameter of another pipeline stage: never materialised here
            if p.layout is not None and g.layout is not None and not g.layout.same_blocks(p.layout):
                g = ex.to_layout(g, p.layout)  # the first step's gradients still have the unsharded layout
            grad = g.asnumpy().astype(np.float32 if p.dtype != mstype.float64 else np.float64, copy=False)
            if self.loss_scale != 1.0:
                grad = grad / self.loss_scale
            value = p.asnumpy()
            if self.weight_decay and self.decay_flags[i]:
                grad = grad + self.weight_decay * value
            p._set_local(self.update(i, value, grad, lr).astype(value.dtype, copy=False))
        self.global_step._set_local(self.global_step.asnumpy() + 1)
        return True

    def update(self, i: int, value: np.ndarray, grad: np.ndarray, lr: float) -> np.ndarray:
        raise NotImplementedError


def _optimizer_shard_layout(p: Parameter) -> Layout | None:
    """``p``'s layout with an optimizer shard (spec §4.6), or None where the parallel optimizer
    does not apply: disabled, excluded parameter, unreplicated or small block, indivisible axis 0."""
    layout = p.layout
    if (layout is None or layout.opt_shard_size or not p.parallel_optimizer or not layout.shape
            or not context.is_sharded_mode() or not context.get_auto_parallel_context("enable_parallel_optimizer")):
        return None
    config = context.get_auto_parallel_context("parallel_optimizer_config")
    threshold_kib = config.get("parallel_optimizer_threshold", 64)
    size = config.get("optimizer_weight_shard_size", -1)
    replicas = layout.num_devices // math.prod(layout.splits)
    group = replicas if size in (-1, 0) else min(size, replicas)
    if group <= 1 or math.prod(layout.mp_shape) * p.dtype.itemsize < threshold_kib * 1024:
        return None
    if layout.mp_shape[0] % group:
        return None
    return Layout(layout.dev_matrix, layout.tensor_map, layout.shape, -1 if size in (-1, 0) else size)


class SGD(Optimizer):
    """``SGD(params, learning_rate=0.1, momentum=0.0, dampening=0.0, weight_decay=0.0, nesterov=False,
    loss_scale=1.0)``; state ``accum.*`` (zeros), ``stat.*`` (ones), ``momentum``.

    >>> import numpy as np, distinfer as ms
    >>> from distinfer import nn
    >>> w = ms.Parameter(ms.Tensor(np.array([1.0, 2.0], np.float32)), name="w")
    >>> opt = nn.SGD([w], learning_rate=0.1)
    >>> _ = opt((ms.Tensor(np.array([0.5, -1.0], np.float32)),))  # w -= lr * grad
    >>> w.asnumpy().astype(float).round(4).tolist(), [p.name for p in opt.accum + opt.stat]
    ([0.95, 2.1], ['accum.w', 'stat.w'])
    """

    def __init__(self, params, learning_rate=0.1, momentum: float = 0.0, dampening: float = 0.0,
                 weight_decay: float = 0.0, nesterov: bool = False, loss_scale: float = 1.0) -> None:
        super().__init__(learning_rate, params, weight_decay, loss_scale)
        if nesterov and (momentum <= 0 or dampening):
            raise ValueError("SGD: nesterov needs momentum > 0 and dampening 0")
        self.momentum = _scalar_param(momentum, "momentum")
        self.dampening, self.nesterov = dampening, nesterov
        self.accum = self.parameters.clone(prefix="accum", init="zeros")
        self.stat = self.parameters.clone(prefix="stat", init="ones")

    def _states(self):
        return (self.accum, self.stat)

    def update(self, i, value, grad, lr):
        momentum = float(self.momentum.asnumpy())
        if momentum > 0:
            accum, stat = self.accum[i], self.stat[i]
            first = stat.asnumpy() > 0
            acc = np.where(first, grad, momentum * accum.asnumpy() + (1 - self.dampening) * grad)
            accum._set_local(acc.astype(accum.dtype.np))
            stat._set_local(np.zeros_like(stat.asnumpy()))
            grad = grad + momentum * acc if self.nesterov else acc
        return value - lr * grad


class Momentum(Optimizer):
    """``Momentum(params, learning_rate, momentum, weight_decay=0.0, loss_scale=1.0, use_nesterov=False)``;
    state ``moments.*``: ``m = momentum * m + g``; ``w -= lr * m`` (or ``lr * (g + momentum * m)``).

    >>> import numpy as np, distinfer as ms
    >>> from distinfer import nn
    >>> w = ms.Parameter(ms.Tensor(np.array([1.0, 2.0], np.float32)), name="w")
    >>> opt, g = nn.Momentum([w], learning_rate=0.1, momentum=0.9), (ms.Tensor(np.array([0.5, -1.0], np.float32)),)
    >>> _ = opt(g); _ = opt(g)  # m = g, then m = 0.9 * g + g
    >>> w.asnumpy().astype(float).round(4).tolist(), opt.moments[0].asnumpy().astype(float).round(4).tolist()
    ([0.855, 2.29], [0.95, -1.9])
    """

    def __init__(self, params, learning_rate, momentum: float, weight_decay: float = 0.0, loss_scale: float = 1.0,
                 use_nesterov: bool = False) -> None:
        super().__init__(learning_rate, params, weight_decay, loss_scale)
        if momentum < 0:
            raise ValueError(f"Momentum: momentum must be >= 0, got {momentum}")
        self.momentum = _scalar_param(momentum, "momentum")
        self.use_nesterov = use_nesterov
        self.moments = self.parameters.clone(prefix="moments", init="zeros")

    def _states(self):
        return (self.moments,)

    def update(self, i, value, grad, lr):
        mom = float(self.momentum.asnumpy())
        moment = self.moments[i].asnumpy()
        m = np.multiply(moment, mom, dtype=np.result_type(moment, grad))
        m += grad
        self.moments[i]._set_local(m.astype(moment.dtype, copy=False))
        new = np.multiply(grad + mom * m if self.use_nesterov else m, -lr)
        new += value  # value - lr * step, without a temporary the size of the parameter
        return new


class Adam(Optimizer):
    """``Adam(params, learning_rate=1e-3, beta1=0.9, beta2=0.999, eps=1e-8, use_locking=False,
    use_nesterov=False, weight_decay=0.0, loss_scale=1.0)``; state ``moment1.*``, ``moment2.*``,
    ``beta1_power``, ``beta2_power`` (updated before use, as MindSpore's ``Adam`` does).

    >>> import numpy as np, distinfer as ms
    >>> from distinfer import nn
    >>> w = ms.Parameter(ms.Tensor(np.array([1.0, 2.0], np.float32)), name="w")
    >>> opt = nn.Adam([w], learning_rate=0.1)
    >>> _ = opt((ms.Tensor(np.array([0.5, -1.0], np.float32)),))  # the first step moves each weight by ~lr
    >>> w.asnumpy().astype(float).round(4).tolist(), [p.name for p in opt.moment1 + opt.moment2]
    ([0.9, 2.1], ['moment1.w', 'moment2.w'])
    """

    def __init__(self, params, learning_rate=1e-3, beta1: float = 0.9, beta2: float = 0.999, eps: float = 1e-8,
                 use_locking: bool = False, use_nesterov: bool = False, weight_decay: float = 0.0,
                 loss_scale: float = 1.0) -> None:
        super().__init__(learning_rate, params, weight_decay, loss_scale)
        self.beta1, self.beta2, self.eps, self.use_nesterov = beta1, beta2, eps, use_nesterov
        self.beta1_power = _scalar_param(1.0, "beta1_power")
        self.beta2_power = _scalar_param(1.0, "beta2_power")
        self.moment1 = self.parameters.clone(prefix="moment1", init="zeros")
        self.moment2 = self.parameters.clone(prefix="moment2", init="zeros")

    def _states(self):
        return (self.moment1, self.moment2)

    def construct(self, gradients):
        self.beta1_power._set_local(np.asarray(self.beta1_power.asnumpy() * self.beta1, np.float32))
        self.beta2_power._set_local(np.asarray(self.beta2_power.asnumpy() * self.beta2, np.float32))
        return super().construct(gradients)

    def update(self, i, value, grad, lr):
        b1p, b2p = float(self.beta1_power.asnumpy()), float(self.beta2_power.asnumpy())
        m = self.beta1 * self.moment1[i].asnumpy() + (1 - self.beta1) * grad
        v = self.beta2 * self.moment2[i].asnumpy() + (1 - self.beta2) * grad * grad
        self.moment1[i]._set_local(m.astype(np.float32, copy=False))
        self.moment2[i]._set_local(v.astype(np.float32, copy=False))
        lr_t = lr * np.sqrt(1 - b2p) / (1 - b1p)
        step = (self.beta1 * m + (1 - self.beta1) * grad) if self.use_nesterov else m
        return value - lr_t * step / (np.sqrt(v) + self.eps)


class AdamWeightDecay(Optimizer):
    """``AdamWeightDecay(params, learning_rate=1e-3, beta1=0.9, beta2=0.999, eps=1e-6, weight_decay=0.0)``;
    state ``adam_m.*``/``adam_v.*``; decoupled decay, no bias correction (MindSpore's rule).

    >>> import numpy as np, distinfer as ms
    >>> from distinfer import nn
    >>> w = ms.Parameter(ms.Tensor(np.array([1.0, 2.0], np.float32)), name="w")
    >>> opt = nn.AdamWeightDecay([w], learning_rate=0.1, weight_decay=0.01)
    >>> _ = opt((ms.Tensor(np.array([0.5, -1.0], np.float32)),))  # no bias correction: a first step of ~lr * sqrt(10)
    >>> w.asnumpy().astype(float).round(4).tolist(), [p.name for p in opt.moments1 + opt.moments2]
    ([0.6828, 2.3142], ['adam_m.w', 'adam_v.w'])
    """

    def __init__(self, params, learning_rate=1e-3, beta1: float = 0.9, beta2: float = 0.999, eps: float = 1e-6,
                 weight_decay: float = 0.0) -> None:
        super().__init__(learning_rate, params, 0.0, 1.0)
        self.beta1, self.beta2, self.eps, self.decay = beta1, beta2, eps, float(weight_decay)
        self.moments1 = self.parameters.clone(prefix="adam_m", init="zeros")
        self.moments2 = self.parameters.clone(prefix="adam_v", init="zeros")

    def _states(self):
        return (self.moments1, self.moments2)

    def update(self, i, value, grad, lr):
        m = self.beta1 * self.moments1[i].asnumpy() + (1 - self.beta1) * grad
        v = self.beta2 * self.moments2[i].asnumpy() + (1 - self.beta2) * grad * grad
        self.moments1[i]._set_local(m.astype(np.float32, copy=False))
        self.moments2[i]._set_local(v.astype(np.float32, copy=False))
        decay = self.decay * value if self.decay_flags[i] else 0.0
        return value - lr * (m / (np.sqrt(v) + self.eps) + decay)
