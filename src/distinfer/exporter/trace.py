"""Tracing: one concrete run of a network under an executor observer, as a graph of steps.

The tracer sees every primitive call (``op``) and every communication (``comm``) of the run.
Communications happen while an op's inputs are being redistributed (before the op is
reported), while a MatMul ``out_strategy`` result is being finalised, and when the network's
outputs are laid out as ``Model.predict`` lays them out. For each tensor the tracer knows its
layout and pending partial sums, so it predicts which communications belong to which value
and checks each against the reported one (kind and destination layout); the reported info
(rank groups, plan layouts) is what gets recorded.

Values are identified by ``id()`` of the distinfer Tensors (kept alive by the trace). A tensor
first seen as an op input is a graph input (one of the network's inputs), a weight (a
Parameter) or a constant (any other Tensor, e.g. made inside ``construct``).

>>> import numpy as np, distinfer as ms
>>> from distinfer import nn
>>> tr = trace_network(nn.Dense(3, 2), [ms.Tensor(np.ones((4, 3), np.float32))])
>>> [s.prim.name for s in tr.steps]
['MatMul', 'BiasAdd']
"""
from __future__ import annotations

import inspect
import logging
from dataclasses import dataclass, field
from typing import Any, Sequence

from .. import context
from ..errors import DistinferError
from ..layout import Layout, replicated
from ..parallel import _executor as ex
from ..tensor import Parameter, Tensor

log = logging.getLogger(__name__)

__all__ = ["Trace", "OpStep", "CommStep", "trace_network", "TraceError"]


class TraceError(DistinferError, RuntimeError):
    """The traced run did something the exporter cannot record faithfully.

    >>> import numpy as np, distinfer as ms
    >>> from distinfer import nn
    >>> class Shape(nn.Cell):
    ...     def construct(self, x):
    ...         return x.shape  # ints, not Tensors
    >>> trace_network(Shape(), [ms.Tensor(np.ones((2, 2), np.float32))])  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    distinfer.exporter.trace.TraceError: export: the network returned a int; only Tensors ... can be exported
    """


@dataclass
class OpStep:
    """One primitive call on this rank.

    >>> import numpy as np, distinfer as ms
    >>> from distinfer import nn
    >>> step = trace_network(nn.Dense(3, 2), [ms.Tensor(np.ones((4, 3), np.float32))]).steps[0]
    >>> step.prim.name, step.inputs, step.outputs, step.in_shapes, step.out_shapes
    ('MatMul', ['x', 'weight'], ['MatMul-op_1'], [(4, 3), (2, 3)], [(4, 2)])
    """

    prim: Any
    inputs: list[str]  # value names of tensor inputs (after any communication)
    consts: dict[int, Any]
    outputs: list[str]  # value names of the kernel's outputs (before any out_strategy finalisation)
    in_boxes: list
    out_boxes: list
    in_shapes: list
    out_shapes: list
    out_dtypes: list
    out_arrays: list  # local kernel outputs (shapes/dtypes for the file)


@dataclass
class CommStep:
    """A communication applied to one value: ``kind`` is "allreduce", "reduce_scatter" or "redistribute".

    One process runs no communication, so its trace holds only :class:`OpStep` s; a rank's trace
    in an ``mpirun`` job holds a CommStep wherever a value is reduced or redistributed.

    >>> import numpy as np, distinfer as ms
    >>> from distinfer import nn
    >>> tr = trace_network(nn.Dense(3, 2), [ms.Tensor(np.ones((1, 3), np.float32))])
    >>> [type(s).__name__ for s in tr.steps], tr.has_comm
    (['OpStep', 'OpStep'], False)
    >>> Trace(steps=[CommStep("allreduce", "MatMul-op_1", "AllReduce_3", {})]).has_comm
    True
    """

    kind: str
    input: str
    output: str
    info: dict


@dataclass
class Trace:
    """What one rank ran: sources (inputs, weights, constants), steps in order, outputs.

    >>> import numpy as np, distinfer as ms
    >>> from distinfer import nn
    >>> tr = trace_network(nn.Dense(3, 2), [ms.Tensor(np.ones((4, 3), np.float32))])
    >>> tr.input_names, list(tr.params), [name for name, _ in tr.outputs], tr.outputs[0][1].shape
    (['x'], ['weight', 'bias'], ['BiasAdd-op_2'], (4, 2))
    >>> tr.sharded, tr.device_num, tr.rank, tr.has_comm  # a stand-alone run in one process
    (False, 1, 0, False)
    """

    inputs: list[tuple[str, Tensor]] = field(default_factory=list)  # (value name, wrapped input)
    input_names: list[str] = field(default_factory=list)  # the construct() argument names
    params: dict[str, Parameter] = field(default_factory=dict)  # value name -> Parameter
    consts: dict[str, Tensor] = field(default_factory=dict)
    steps: list = field(default_factory=list)
    outputs: list[tuple[str, Tensor]] = field(default_factory=list)
    output_is_tuple: bool = False
    sharded: bool = False
    device_num: int = 1
    rank: int = 0

    @property
    def has_comm(self) -> bool:
        return any(isinstance(s, CommStep) for s in self.steps)


class _Tracer:
    """The executor observer building a :class:`Trace`."""

    def __init__(self, tr: Trace, input_tensors: Sequence[Any], n: int) -> None:
        self.tr = tr
        self.n = n
        self.names: dict[int, str] = {}
        self.keep: list[Any] = []  # ids are only unique while the objects live
        self.pending: list[tuple[str, dict]] = []
        self.reduced: dict[str, str] = {}  # value name -> name of its AllReduce'd sum
        self.count = 0
        for i, t in enumerate(input_tensors):
            if isinstance(t, Tensor):
                name = tr.input_names[i] if i < len(tr.input_names) else f"input_{i}"
                self._bind(t, name)
                tr.inputs.append((name, t))

    # ---------------------------------------------------------------- naming
    def _bind(self, t: Tensor, name: str) -> str:
        self.names[id(t)] = name
        self.keep.append(t)
        return name

    def _fresh(self, stem: str) -> str:
        self.count += 1
        return f"{stem}_{self.count}"

    def value(self, t: Tensor) -> str:
        """Name of the value ``t``; registers weights and constants on first sight."""
        name = self.names.get(id(t))
        if name is not None:
            return name
        if isinstance(t, Parameter):
            taken = set(self.names.values())
            name = self._bind(t, t.name if t.name not in taken else f"param:{t.name}")
            self.tr.params[name] = t
            return name
        name = self._bind(t, self._fresh("Constant"))
        self.tr.consts[name] = t
        log.debug("export: tensor of shape %s not produced by an op is recorded as constant %s", t.shape, name)
        return name

    # ----------------------------------------------------------- observer API
    def comm(self, kind: str, **info: Any) -> None:
        self.pending.append((kind, info))

    def op(self, prim, ctx, tensors, lay, locals_, outs, results) -> None:
        in_layouts = list(lay.inputs) if lay is not None else [None] * len(tensors)
        inputs = [self._arrive(t, L, f"{prim.name} input {i}") for i, (t, L) in enumerate(zip(tensors, in_layouts))]
        raw = [self._fresh(f"{prim.name}-op") for _ in outs]
        partial = list(lay.partial) if lay is not None and lay.partial else [() for _ in outs]
        out_layouts = list(lay.outputs) if lay is not None else [None] * len(outs)
        self.tr.steps.append(OpStep(prim, inputs, dict(ctx.consts), raw, list(ctx.in_boxes), list(ctx.out_boxes),
                                    list(ctx.in_shapes), list(ctx.out_shapes), list(ctx.out_dtypes), list(outs)))
        finals = lay.final if lay is not None and lay.final else [None] * len(outs)
        for j, (name, res, F) in enumerate(zip(raw, results, finals)):
            if F is not None:
                name = self._finalise(name, out_layouts[j], partial[j], F, res, f"{prim.name} output {j}")
            self._bind(res, name)
        self._expect_none(f"after {prim.name}")

    # ------------------------------------------------------ communication steps
    def _arrive(self, t: Tensor, target: Layout | None, what: str) -> str:
        name = self.value(t)
        if target is None:
            return name
        src = t.layout if t.layout is not None else replicated(t.global_shape, target.num_devices)
        return self._finalise(name, src, t.spec.partial, target, None, what)

    def _finalise(self, name: str, src: Layout, partial, target: Layout, result, what: str) -> str:
        if partial and self.pending and self.pending[0][0] == "reduce_scatter":
            info = self._take("reduce_scatter", what)
            name = self._comm_step("reduce_scatter", name, info)
            src = info["result_layout"]
        elif partial:
            # The executor reduces a value's partial sums once and reuses the sum for later consumers.
            if name not in self.reduced:
                info = self._take("allreduce", what)
                self.reduced[name] = self._comm_step("allreduce", name, info)
            name = self.reduced[name]
        if not src.same_blocks(target):
            info = self._take("redistribute", what)
            if not info["plan"].dst.same_blocks(target):
                raise TraceError(f"export: {what}: redistribution to {info['plan'].dst} reported, expected {target}")
            name = self._comm_step("redistribute", name, info)
        return name

    def _comm_step(self, kind: str, src_name: str, info: dict) -> str:
        out = self._fresh({"allreduce": "AllReduce", "reduce_scatter": "ReduceScatter"}.get(kind, "Redistribute"))
        self.tr.steps.append(CommStep(kind, src_name, out, info))
        return out

    def _take(self, kind: str, what: str) -> dict:
        if not self.pending or self.pending[0][0] != kind:
            got = self.pending[0][0] if self.pending else "nothing"
            raise TraceError(f"export: {what} needed a {kind}, but the executor reported {got}")
        return self.pending.pop(0)[1]

    def _expect_none(self, what: str) -> None:
        if self.pending:
            kinds = [k for k, _ in self.pending]
            raise TraceError(f"export: unexplained communication {kinds} {what}; cannot record it")

    def output(self, t: Tensor, target: Layout | None, final: Tensor) -> str:
        """Record a network output ``t`` laid out as ``target`` (``final`` is the laid-out tensor)."""
        name = self.value(t)
        if target is not None:
            src = t.layout if t.layout is not None else replicated(t.global_shape, target.num_devices)
            name = self._finalise(name, src, t.spec.partial, target, final, "network output")
        self._expect_none("at a network output")
        self.keep.append(final)
        return name


def input_names(net: Any, count: int) -> list[str]:
    """``construct``'s positional parameter names (``x``...), padded with ``input_<i>``."""
    try:
        params = [p.name for p in inspect.signature(net.construct).parameters.values()
                  if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    except (TypeError, ValueError):
        params = []
    return [params[i] if i < len(params) else f"input_{i}" for i in range(count)]


def trace_network(net: Any, inputs: Sequence[Any]) -> Trace:
    """Run ``net`` once on ``inputs`` (following the dataset strategy, as ``Model.predict``) and trace it.

    >>> import numpy as np, distinfer as ms
    >>> from distinfer import nn
    >>> net = nn.SequentialCell([nn.Dense(3, 2), nn.ReLU()])
    >>> tr = trace_network(net, [ms.Tensor(np.ones((4, 3), np.float32))])
    >>> [step.prim.name for step in tr.steps], list(tr.params)
    (['MatMul', 'BiasAdd', 'ReLU'], ['0.weight', '0.bias'])
    """
    from ..parallel.inputs import distribute_inputs
    from ..train.model import _loaded_strategy_items, _output_layout

    net.set_train(False)
    tr = Trace(input_names=input_names(net, len(inputs)))
    tr.sharded = context.is_sharded_mode()
    if tr.sharded:
        tr.device_num = ex.stage_devices()
        tr.rank = ex.stage_rank()
        fed = distribute_inputs(list(inputs), tr.device_num)
    else:
        fed = [Tensor._make(x.asnumpy(), x.shape, None, dtype=x.dtype) if isinstance(x, Tensor) else x
               for x in inputs]
    tracer = _Tracer(tr, fed, tr.device_num)
    with ex.observing(tracer), ex.loaded_strategies(_loaded_strategy_items()):
        out = net(*fed)
        tr.output_is_tuple = isinstance(out, (tuple, list))
        for t in (list(out) if tr.output_is_tuple else [out]):
            if not isinstance(t, Tensor):
                raise TraceError(f"export: the network returned a {type(t).__name__}; only Tensors (or a tuple of "
                                 f"Tensors) can be exported")
            target = _output_layout(t, tr.device_num) if tr.sharded else None
            final = ex.to_layout(t, target) if target is not None else t
            tr.outputs.append((tracer.output(t, target, final), final))
    return tr
