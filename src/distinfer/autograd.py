"""Reverse-mode gradients through sharded ops: ``value_and_grad``, ``grad``, ``ops.GradOperation``.

A :class:`Tape` observes the forward run (see ``_executor.observing``) and keeps, for every op
whose inputs need gradients, the local blocks it computed on and the layouts it used. Going
backwards, each op's *local* vector-Jacobian product (``Primitive.bprop``) gives gradients of
its local input blocks in the layouts the op required, as **partial sums** over every device
axis that the op's output is split over but the input is not (those ranks each saw a different
part of the output). The gradient of the redistribution that fed the op is then the same global
value laid out back where the input came from: redistributing it with the one planner performs
the transposed collectives (partial sums become AllReduce/ReduceScatter, slicing becomes
gathering). Gradients of data-parallel replicas of a parameter therefore arrive as partial sums
over the batch axes and are AllReduced once, when the parameter's gradient is read.

>>> import numpy as np, distinfer as ms
>>> from distinfer import ops
>>> w = ms.Parameter(ms.Tensor(np.array([[1.0], [2.0]], np.float32)), name="w")
>>> def f(x):
...     return ops.ReduceSum()(ops.MatMul()(x, w))
>>> loss, (gx, gw) = ms.value_and_grad(f, 0, [w])(ms.Tensor(np.ones((3, 2), np.float32)))
>>> float(loss.asnumpy()), gw[0].asnumpy().ravel().tolist()
(9.0, [3.0, 3.0])
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np

from .layout import DistSpec, Layout, replicated
from .parallel import _executor as ex
from .plan import make_plan
from .tensor import Parameter, Tensor

__all__ = ["Tape", "value_and_grad", "grad", "GradOperation", "gradients"]


@dataclass
class _Node:
    prim: Any
    ctx: Any
    inputs: list
    lay: Any
    locals_: list
    outs: list
    results: list


@dataclass
class _Grad:
    """A gradient contribution: a local block and how it is distributed (its layout, None for
    whole, and the device axes over which it is still a partial sum)."""

    local: np.ndarray
    spec: DistSpec


def _used_positions(layout: Layout | None) -> set[int]:
    return set(layout.used_axes) if layout is not None else set()


class Tape:
    """Records the ops of a forward pass that lead from ``sources`` to the output.

    >>> import numpy as np, distinfer as ms
    >>> from distinfer.autograd import Tape
    >>> from distinfer.parallel import _executor
    >>> x = ms.Tensor(np.array([1.0, 2.0], np.float32))
    >>> tape = Tape([x])  # record what depends on x
    >>> with _executor.observing(tape):
    ...     y = ms.ops.reduce_sum(ms.ops.square(x)) + 1.0
    >>> [node.prim.name for node in tape.nodes]
    ['Square', 'ReduceSum', 'Add']
    """

    def __init__(self, sources: Sequence[Tensor]) -> None:
        self.nodes: list[_Node] = []
        self._needs = {id(t) for t in sources}
        self._keep = list(sources)
        # Pipeline stages: (tensor, layout on the consuming stage, other stage), once per tensor and stage.
        self.received: list[tuple[Tensor, Layout, int]] = []
        self.sent: list[tuple[Tensor, Layout, int]] = []

    def op(self, prim, ctx, tensors, lay, locals_, outs, results) -> None:
        if not any(id(t) in self._needs for t in tensors):
            return
        self._needs.update(id(r) for r in results)
        self.nodes.append(_Node(prim, ctx, list(tensors), lay, list(locals_), list(outs), list(results)))

    def comm(self, kind: str, **info: Any) -> None:
        """Pipeline transfers: a received tensor needs its gradient sent back; a sent one receives it."""
        if kind == "stage_recv":
            t = info["tensor"]
            self._needs.add(id(t))
            self._keep.append(t)
            _add_transfer(self.received, t, info["layout"], info["src_stage"])
        elif kind == "stage_send":
            t = info["tensor"]
            self._keep.append(t)
            _add_transfer(self.sent, t, info["layout"], info["dst_stage"])

    # ------------------------------------------------------------------------ backward
    def backward(self, root: Tensor | None, sens: np.ndarray | float = 1.0,
                 grads: dict[int, _Grad] | None = None) -> dict[int, _Grad]:
        """Gradients of ``root`` (scaled by ``sens``; None: only the seeds in ``grads``) for every
        tensor on the tape, by ``id``."""
        grads = {} if grads is None else grads
        if root is not None:
            seed = np.broadcast_to(np.asarray(sens, dtype=root.dtype.np), _local_shape(root)).copy()
            _accumulate(grads, root, _Grad(seed, DistSpec(root.layout)))
        for node in reversed(self.nodes):
            douts = [self._dout(grads, r, node, j) for j, r in enumerate(node.results)]
            if all(d is None for d in douts):
                continue
            out = node.outs[0] if len(node.outs) == 1 else node.outs
            dins = node.prim.bprop(node.ctx, node.locals_, out, douts)
            for i, (t, din) in enumerate(zip(node.inputs, dins)):
                if din is None or id(t) not in self._needs:
                    continue
                layout = node.lay.inputs[i] if node.lay is not None else None
                partial = self._input_partial(node, i, douts)
                _accumulate(grads, t, _Grad(np.asarray(din), DistSpec(layout, partial)))
        return grads

    @staticmethod
    def _dout(grads, result: Tensor, node: _Node, j: int) -> np.ndarray | None:
        g = grads.get(id(result))
        if g is None:
            return None
        target = node.lay.outputs[j] if node.lay is not None else None
        return _resolve(g, result, target)

    @staticmethod
    def _input_partial(node: _Node, i: int, douts) -> tuple[int, ...]:
        """Device axes over which input ``i``'s local gradient is a partial sum."""
        if node.lay is None:
            return ()
        out_axes: set[int] = set()
        for j, d in enumerate(douts):
            if d is not None:
                out_axes |= _used_positions(node.lay.outputs[j])
                out_axes |= set(node.lay.partial[j]) if node.lay.partial else set()
        return tuple(sorted(out_axes - _used_positions(node.lay.inputs[i])))


def _add_transfer(log: list, t: Tensor, layout: Layout, stage: int) -> None:
    if not any(u is t and s == stage for u, _, s in log):
        log.append((t, layout, stage))


def _pipeline_backward(tape: Tape, root: Tensor, sens) -> dict[int, _Grad]:
    """Backward across pipeline stages: gradients of the tensors this stage sent arrive from the later
    stages that used them, this stage's ops run backwards, and the gradients of the tensors it received
    go back to the stages that sent them (point-to-point, so each stage waits only for its successors)."""
    mine = ex.my_stage()
    grads: dict[int, _Grad] = {}
    for t, layout, stage in tape.sent:
        plan = make_plan(layout, t.layout)  # transpose of the forward transfer
        local = ex.receive_from_stage(plan, stage, t.dtype.np)
        _accumulate(grads, t, _Grad(local, DistSpec(t.layout)))
    grads = tape.backward(root if root.spec.stage in (None, mine) else None, sens, grads)
    for t, layout, stage in tape.received:
        g = grads.get(id(t))
        local = _resolve(g, t, layout) if g is not None else np.zeros(layout.local_shape, t.dtype.np)
        ex.send_to_stage(make_plan(layout, t.layout), np.ascontiguousarray(local, dtype=t.dtype.np), stage)
    return grads


def _local_shape(t: Tensor) -> tuple[int, ...]:
    return t.layout.local_shape if t.layout is not None else t.global_shape


def _resolve(g: _Grad, like: Tensor, target: Layout | None) -> np.ndarray:
    """The gradient's local block laid out as ``target`` (None: whole), partial sums reduced."""
    if target is None and g.spec.layout is None and not g.spec.partial:
        return g.local
    n = target.num_devices if target is not None else g.spec.layout.num_devices
    if target is None:
        target = replicated(like.global_shape, n)
    return ex.redistribute(Tensor._make(g.local, like.global_shape, g.spec, like.dtype), target)


def _accumulate(grads: dict[int, _Grad], t: Tensor, new: _Grad) -> None:
    old = grads.get(id(t))
    if old is None:
        grads[id(t)] = new
        return
    a, b = old.spec.layout, new.spec.layout
    same = old.spec.partial == new.spec.partial and (
        (a is None and b is None) or (a is not None and b is not None and a.same_blocks(b)))
    if same:
        grads[id(t)] = _Grad(old.local + new.local, old.spec)
        return
    target = a if a is not None else b
    grads[id(t)] = _Grad(_resolve(old, t, target) + _resolve(new, t, target), DistSpec(target))


def gradients(tape: Tape, root: Tensor, targets: Sequence[Tensor], sens=1.0) -> list[Tensor]:
    """Gradients of ``root`` for ``targets``, each laid out like its target (zeros if unused).

    >>> import numpy as np, distinfer as ms
    >>> from distinfer.autograd import Tape, gradients
    >>> from distinfer.parallel import _executor
    >>> x, unused = ms.Tensor(np.array([1.0, 2.0], np.float32)), ms.Tensor(np.ones(2, np.float32))
    >>> tape = Tape([x, unused])
    >>> with _executor.observing(tape):
    ...     y = ms.ops.reduce_sum(ms.ops.square(x))
    >>> [g.asnumpy().tolist() for g in gradients(tape, y, [x, unused])]
    [[2.0, 4.0], [0.0, 0.0]]
    """
    from . import context

    pipeline = context.is_sharded_mode() and context.get_auto_parallel_context("pipeline_stages") > 1
    grads = _pipeline_backward(tape, root, sens) if pipeline else tape.backward(root, sens)
    out = []
    for t in targets:
        g = grads.get(id(t))
        layout = t.layout
        if g is None and t.local is None and layout is None and t.init is not None:
            out.append(Tensor._make(None, t.global_shape, None, t.dtype))  # a parameter of another stage
            continue
        if g is None:
            local = np.zeros(_local_shape(t), dtype=t.dtype.np)
        else:
            local = _resolve(g, t, layout).astype(t.dtype.np, copy=False)
        out.append(Tensor._make(local, t.global_shape, layout, t.dtype))
    return out


def _as_tuple(x) -> tuple:
    return tuple(x) if isinstance(x, (tuple, list)) else (x,)


def _root(out, has_aux: bool) -> tuple[Tensor, Any]:
    if has_aux:
        if not isinstance(out, (tuple, list)) or not out:
            raise ValueError("value_and_grad(has_aux=True): the function must return a tuple (loss, aux...)")
        return out[0], out[1:]
    if isinstance(out, (tuple, list)):
        return out[0], None
    return out, None


def _wrap_inputs(args: Sequence[Any]) -> list[Any]:
    return [Tensor(a) if isinstance(a, np.ndarray) else a for a in args]


def value_and_grad(fn: Callable, grad_position=0, weights=None, has_aux: bool = False) -> Callable:
    """``mindspore.value_and_grad``: a function returning ``(value, gradients)``.

    ``grad_position`` (int, tuple or None) selects positional inputs; ``weights`` (a Parameter,
    a list of them, or ``cell.trainable_params()``) adds parameter gradients. With both, the
    gradients are ``(input_grads, weight_grads)``.

    >>> import numpy as np, distinfer as ms
    >>> f = lambda x: ms.ops.reduce_sum(x * x)
    >>> value, g = ms.value_and_grad(f)(ms.Tensor(np.array([1.0, 2.0], np.float32)))
    >>> float(value.asnumpy()), g.asnumpy().tolist()
    (5.0, [2.0, 4.0])
    """
    weight_list = None if weights is None else list(_as_tuple(weights))
    if grad_position is None and weight_list is None:
        raise ValueError("value_and_grad: grad_position and weights cannot both be None")

    def wrapper(*args: Any):
        args = _wrap_inputs(args)
        positions = () if grad_position is None else _as_tuple(grad_position)
        inputs = [args[p] for p in positions]
        tape = Tape(inputs + (weight_list or []))
        with ex.observing(tape):
            out = fn(*args)
        root, aux = _root(out, has_aux)
        value = ex.to_layout(root, replicated(root.global_shape, root.layout.num_devices)) if root.layout is not None \
            else root
        targets = inputs + (weight_list or [])
        grads = gradients(tape, root, targets)
        gin, gw = grads[:len(inputs)], grads[len(inputs):]
        gin_out = (gin[0] if isinstance(grad_position, int) else tuple(gin)) if grad_position is not None else None
        result = gin_out if weight_list is None else (tuple(gw) if grad_position is None else (gin_out, tuple(gw)))
        return ((value,) + tuple(aux), result) if has_aux else (value, result)

    return wrapper


def grad(fn: Callable, grad_position=0, weights=None, has_aux: bool = False) -> Callable:
    """``mindspore.grad``: like :func:`value_and_grad` but returns only the gradients.

    >>> import numpy as np, distinfer as ms
    >>> w = ms.Parameter(ms.Tensor(np.array([3.0], np.float32)), name="w")
    >>> f = lambda x: ms.ops.reduce_sum(x * w)
    >>> gx, (gw,) = ms.grad(f, 0, w)(ms.Tensor(np.array([1.0, 2.0], np.float32)))
    >>> gx.asnumpy().tolist(), gw.asnumpy().tolist()
    ([3.0, 3.0], [3.0])
    """
    vg = value_and_grad(fn, grad_position, weights, has_aux)

    def wrapper(*args: Any):
        value, grads = vg(*args)
        return (grads, value[1:]) if has_aux else grads

    return wrapper


class GradOperation:
    """``ops.GradOperation(get_all=False, get_by_list=False, sens_param=False)``.

    With ``sens_param=True`` the last argument scales the output gradient.

    >>> import numpy as np, distinfer as ms
    >>> f = lambda x: ms.ops.reduce_sum(x * x)
    >>> x = ms.Tensor(np.array([1.0, 2.0], np.float32))
    >>> ms.ops.GradOperation()(f)(x).asnumpy().tolist()
    [2.0, 4.0]
    >>> ms.ops.GradOperation(sens_param=True)(f)(x, ms.Tensor(np.float32(3.0))).asnumpy().tolist()
    [6.0, 12.0]
    """

    def __init__(self, get_all: bool = False, get_by_list: bool = False, sens_param: bool = False) -> None:
        self.get_all, self.get_by_list, self.sens_param = get_all, get_by_list, sens_param

    def __call__(self, fn: Callable, weights=None) -> Callable:
        if self.get_by_list and weights is None:
            raise ValueError("GradOperation(get_by_list=True) needs weights")

        def wrapper(*args: Any):
            sens = 1.0
            if self.sens_param:
                *args, sens_t = args
                sens = sens_t.asnumpy() if isinstance(sens_t, Tensor) else sens_t
            args = _wrap_inputs(args)
            weight_list = list(_as_tuple(weights)) if self.get_by_list else []
            inputs = [a for a in args if isinstance(a, Tensor) and not isinstance(a, Parameter)]
            tape = Tape(inputs + weight_list)
            with ex.observing(tape):
                out = fn(*args)
            root, _ = _root(out, False)
            grads = gradients(tape, root, inputs + weight_list, sens)
            gin, gw = grads[:len(inputs)], tuple(grads[len(inputs):])
            if self.get_by_list and self.get_all:
                return tuple(gin), gw
            if self.get_by_list:
                return gw
            return tuple(gin) if self.get_all else gin[0]

        return wrapper
