"""``nn.GraphCell``: run a loaded MindIR graph with distinfer's local kernels and the MPI backend.

Each node is prepared once: its primitive is re-created from the op name (looked up in
:mod:`distinfer.ops.registry`, never from the file) plus the file's attributes (only attributes
the op already has are set), and its kernel context (constants, block boxes, global shapes,
dtypes) is rebuilt from the node attributes. MindSpore-made nodes carry none of that: they run on
whole tensors, with shapes from the op's own ``infer``; the constructor arguments MindSpore 2.x
passes as node inputs (the op's ``mindir_inputs``) set those attributes. Values are this rank's
local numpy blocks; ``AllReduce`` and ``Redistribute`` nodes run with
``communication._backend.world()`` and ``_executor.run_plan``, so every rank must run its own
file in a job of the same size.

>>> import numpy as np, tempfile, os, distinfer as ms
>>> from distinfer import nn
>>> net = nn.Dense(3, 2)
>>> x = ms.Tensor(np.ones((4, 3), np.float32))
>>> path = ms.export(net, x, file_name=os.path.join(tempfile.mkdtemp(), "dense"))
>>> cell = nn.GraphCell(ms.load(path))
>>> bool(np.array_equal(cell(x).asnumpy(), net(x).asnumpy()))
True
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from .. import dtype as mstype
from ..communication import _backend
from ..errors import CommError, FormatError
from ..nn.cell import Cell
from ..ops import registry
from ..ops.primitive import KernelContext, Primitive
from ..plan import make_plan
from ..tensor import Parameter, Tensor
from ._codec import MONAD
from .mindir_reader import STRUCTURAL, Graph, constant_value, node_attrs, node_op, prim_attrs

log = logging.getLogger(__name__)

__all__ = ["GraphCell"]


# ------------------------------------------------------------------ prepared steps
@dataclass
class _Step:
    name: str
    op: str
    inputs: list[str]
    outputs: list[str]
    run: Callable[[list], Any]


def _make_prim(cls: type, attrs: dict, where: str) -> Primitive:
    """``cls()`` with the file's values for attributes the op already has (nothing else is set)."""
    prim = cls()
    own = prim.op_attrs()
    for k, v in attrs.items():
        if k in own and not callable(own[k]):
            if isinstance(v, (np.ndarray, Tensor)) and not isinstance(own[k], (np.ndarray, Tensor)):
                raise FormatError(f"{where}: attribute {k!r} holds a tensor, expected {type(own[k]).__name__}")
            _set(prim, k, v)
    return prim


def _set(prim: Primitive, k: str, v: Any) -> None:
    setattr(prim, k, v)
    prim.attrs[k] = v


def _set_from_input(prim: Primitive, k: str, v: Any, where: str) -> None:
    """Attribute ``k`` from a node input (one of the op's ``mindir_inputs``): a scalar of the attribute's type."""
    current = getattr(prim, k)
    if isinstance(current, (bool, int, float)) and not isinstance(v, (str, tuple, list, dict)) and np.ndim(v) == 0:
        _set(prim, k, type(current)(np.asarray(v).item()))
    else:
        raise FormatError(f"{where}: the input setting {k!r} holds {type(v).__name__} {v!r:.60}, expected a "
                          f"{type(current).__name__} scalar")


class _Runner:
    """Turns nodes into :class:`_Step` closures (see module doc)."""

    def __init__(self, graph: Graph) -> None:
        self.g = graph
        self.path = graph.path
        self.rank = graph.rank or 0

    def step(self, node) -> _Step:
        op = node_op(node, self.g.primitives, self.path)
        prim = self.g.primitives.get(node.op_type[5:]) if node.op_type.startswith("REF::") else None
        where = f"{self.path}: node {node.name!r} ({op})"
        if op == "Constant":
            value = constant_value(node, self.path)
            fn = lambda args, v=value: v  # noqa: E731
        elif op in STRUCTURAL:
            fn = self._structural(op, prim_attrs(prim, self.path), where)
        else:
            fn = self._compute(node, op, prim_attrs(prim, self.path), where)
        return _Step(node.name, op, list(node.input), list(node.output), fn)

    def _structural(self, op: str, attrs: dict, where: str) -> Callable:
        if op in ("Load", "Depend", "Return"):
            return lambda args: args[0]
        if op == "UpdateState":
            return lambda args: MONAD
        if op == "MakeTuple":
            return lambda args: tuple(args)
        if op == "TupleGetItem":
            return lambda args: args[0][int(args[1])]
        if op == "AllReduce":
            part = tuple(tuple(g) for g in attrs["rank_groups"])
            red = attrs.get("op", "sum")
            return lambda args: _backend.world().allreduce(args[0], part, red)
        if op == "ReduceScatter":
            part = tuple(tuple(g) for g in attrs["rank_groups"])
            red, axis = attrs.get("op", "sum"), int(attrs["axis"])
            return lambda args: _backend.world().reduce_scatter(args[0], part, axis, red)
        src, dst = attrs["src_layout"], attrs["dst_layout"]
        plan = make_plan(src, dst)

        def redistribute(args):
            from ..parallel._executor import run_plan

            return run_plan(plan, args[0], self.rank)
        return redistribute

    def _compute(self, node, op: str, attrs: dict, where: str) -> Callable:
        cls = registry.lookup(op)
        nattrs = node_attrs(node, self.path)
        if "const_inputs" in nattrs:
            return self._distinfer_node(cls, attrs, nattrs, where)
        return self._mindspore_node(cls, attrs, where)

    def _distinfer_node(self, cls, attrs: dict, na: dict, where: str) -> Callable:
        prim = _make_prim(cls, attrs, where)
        const_pos = set(na["const_inputs"])
        out_dtypes = [mstype.get_dtype(d) for d in na["out_dtypes"]]
        in_boxes, out_boxes = [tuple(map(tuple, b)) for b in na["in_boxes"]], [tuple(map(tuple, b)) for b in
                                                                                 na["out_boxes"]]
        in_shapes, out_shapes = [tuple(s) for s in na["in_shapes"]], [tuple(s) for s in na["out_shapes"]]
        expect = [tuple(b - a for a, b in box) for box in in_boxes]

        def run(args):
            consts = {i: a for i, a in enumerate(args) if i in const_pos}
            xs = [a for i, a in enumerate(args) if i not in const_pos]
            for k, (x, shape) in enumerate(zip(xs, expect)):
                if tuple(np.shape(x)) != shape:
                    raise ValueError(f"{where}: tensor input {k} has local shape {tuple(np.shape(x))}, the graph "
                                     f"expects {shape}")
            ctx = KernelContext(consts, in_boxes, out_boxes, in_shapes, out_shapes, out_dtypes)
            return _as_list(prim.kernel(ctx, *xs))
        return run

    def _mindspore_node(self, cls, attrs: dict, where: str) -> Callable:
        prim = _make_prim(cls, attrs, where)
        attr_inputs = dict(cls.mindir_inputs)

        def run(args):
            for pos, k in attr_inputs.items():
                if pos < len(args):
                    _set_from_input(prim, k, args[pos], f"{where} input {pos}")
            args = [a for i, a in enumerate(args) if i not in attr_inputs and a is not MONAD]
            consts = {i: a for i, a in enumerate(args) if not isinstance(a, np.ndarray)}
            xs = [a for a in args if isinstance(a, np.ndarray)]
            shapes = [tuple(x.shape) for x in xs]
            try:
                specs = prim.infer(shapes, [mstype.from_numpy(x.dtype) for x in xs], consts)
            except (ValueError, TypeError, KeyError, IndexError) as e:
                raise ValueError(f"{where}: inputs of shapes {shapes} rejected: {e}") from None
            full = lambda s: tuple((0, d) for d in s)  # noqa: E731
            ctx = KernelContext(consts, [full(s) for s in shapes], [full(s) for s, _ in specs], shapes,
                                [s for s, _ in specs], [d for _, d in specs])
            return _as_list(prim.kernel(ctx, *xs))
        return run


def _as_list(out) -> list:
    return list(out) if isinstance(out, tuple) else [out]


# ------------------------------------------------------------------------ GraphCell
class GraphCell(Cell):
    """MindSpore's ``nn.GraphCell(graph, params_init=None, obf_random_seed=None)``: a loaded graph as a Cell.

    ``params_init`` maps parameter names to new values (Tensors or arrays of the stored local
    shape). A graph exported by rank r of an n-rank job must run on rank r of an n-rank job.

    >>> import os, tempfile, numpy as np, distinfer as ms
    >>> from distinfer import nn
    >>> net, x = nn.Dense(3, 2, weight_init="ones", bias_init="zeros"), ms.Tensor(np.ones((1, 3), np.float32))
    >>> graph = ms.load(ms.export(net, x, file_name=os.path.join(tempfile.mkdtemp(), "dense")))
    >>> GraphCell(graph)(x).asnumpy().tolist()
    [[3.0, 3.0]]
    >>> GraphCell(graph, params_init={"bias": np.array([1.0, 2.0], np.float32)})(x).asnumpy().tolist()
    [[4.0, 5.0]]
    """

    def __init__(self, graph: Graph, params_init: dict | None = None, obf_random_seed: int | None = None) -> None:
        super().__init__(auto_prefix=False)
        if not isinstance(graph, Graph):
            raise TypeError(f"GraphCell: graph must come from distinfer.load, got {type(graph).__name__}")
        if obf_random_seed is not None:
            raise NotImplementedError("GraphCell: obfuscated models (obf_random_seed) are not supported")
        object.__setattr__(self, "graph", graph)
        _check_world(graph)
        values = dict(graph.params)
        for name, new in (params_init or {}).items():
            _init_param(graph, values, name, new)
        object.__setattr__(self, "_weights", values)
        for key, arr in values.items():
            self._params[graph.ref_keys[key]] = Parameter(Tensor(arr), name=graph.ref_keys[key], requires_grad=False)
        runner = _Runner(graph)
        object.__setattr__(self, "_steps", [runner.step(n) for n in graph.nodes])

    def construct(self, *inputs: Any) -> Any:
        g = self.graph
        if len(inputs) != len(g.inputs):
            raise TypeError(f"GraphCell({g.path}): expected {len(g.inputs)} input(s) "
                            f"{[n for n, _, _ in g.inputs]}, got {len(inputs)}")
        values: dict[str, Any] = dict(self._weights)
        for (name, shape, dt), x in zip(g.inputs, inputs):
            values[name] = _check_input(g, name, shape, dt, x)
        for s in self._steps:
            try:
                args = [values[i] for i in s.inputs]
            except KeyError as e:
                raise FormatError(f"{g.path}: node {s.name!r} ({s.op}) uses undefined value {e}") from None
            _store(g, s, s.run(args), values)
        results = [_wrap(values[name]) for name in g.outputs]
        return results[0] if len(results) == 1 else tuple(results)


def _store(g: Graph, s: _Step, out: Any, values: dict) -> None:
    if s.op in STRUCTURAL:
        values[s.outputs[0]] = out
    elif len(s.outputs) == len(out):
        values.update(zip(s.outputs, out))
    elif len(s.outputs) == 1:
        values[s.outputs[0]] = tuple(out)
    else:
        raise FormatError(f"{g.path}: node {s.name!r} ({s.op}) names {len(s.outputs)} outputs but its op "
                          f"returned {len(out)}")


def _wrap(v: Any) -> Any:
    if isinstance(v, np.ndarray):
        return Tensor(v)
    if isinstance(v, tuple):
        return tuple(_wrap(x) for x in v)
    return v


def _check_input(g: Graph, name: str, shape, dt, x: Any) -> np.ndarray:
    arr = x.asnumpy() if isinstance(x, Tensor) else np.asarray(x)
    if shape is not None and tuple(arr.shape) != tuple(shape):
        raise ValueError(f"GraphCell({g.path}): input {name!r} has shape {tuple(arr.shape)}, the graph was "
                         f"exported for {tuple(shape)}")
    if dt is not None and arr.dtype != dt:
        raise TypeError(f"GraphCell({g.path}): input {name!r} has dtype {arr.dtype}, the graph expects {dt}")
    return arr


def _check_world(g: Graph) -> None:
    if g.device_num is None or (g.device_num == 1 and _backend.launched_size() == 1):
        return
    world = _backend.world()
    if world.size != g.device_num:
        raise CommError(f"{g.path} is rank {g.rank}'s part of a {g.device_num}-rank export, but this job has "
                        f"{world.size} rank(s); run it with `mpirun -n {g.device_num}`, each rank loading its own file")
    if world.rank != g.rank:
        raise CommError(f"{g.path} is rank {g.rank}'s part of a {g.device_num}-rank export, but it is being run on "
                        f"rank {world.rank}; each rank must load its own file")


def _init_param(g: Graph, values: dict, name: str, new: Any) -> None:
    key = next((k for k, ref in g.ref_keys.items() if ref == name or k == name), None)
    if key is None:
        raise KeyError(f"GraphCell: params_init names {name!r}, which is not a parameter of {g.path} "
                       f"(parameters: {sorted(g.ref_keys.values())})")
    arr = new.asnumpy() if isinstance(new, Tensor) else np.asarray(new)
    old = values[key]
    if arr.shape != old.shape:
        raise ValueError(f"GraphCell: params_init[{name!r}] has shape {arr.shape}, the graph's block is {old.shape}")
    values[key] = np.ascontiguousarray(arr.astype(old.dtype, copy=False))
