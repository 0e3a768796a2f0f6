"""``nn.GraphCell``: run a loaded MindIR graph with distinfer's local kernels and the MPI backend.

Files made by MindSpore and by distinfer are read the same way, as MindSpore's graphs: each
node is prepared once; a compute node's distinfer primitive is built from MindSpore's primitive
name and constant inputs by the table of :mod:`.mindspore_ops` (never from code in the file),
and runs on the whole tensors it receives, its output shapes from the op's ``infer`` and its
output dtypes from the node's ``shape`` attribute. The op nodes of a distinfer per-rank export
also find where their blocks sit in the global tensors in ``Graph.kernels``, which position-
dependent kernels need (a vocabulary-split Gather keeps only its rows).

Communication nodes run with ``communication._backend.world()``: ``AllReduce`` and
``ReduceScatter`` as those collectives, ``AllGather``, ``AlltoAll`` and each run of consecutive
``Send``/``Receive`` nodes as one exchange of messages, over the ranks listed in the primitive's
``group_ranks``. So every rank must run its own file, in a job of the same size.

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
from ..ops.primitive import KernelContext
from ..tensor import Parameter, Tensor
from ._codec import MONAD, abstract_specs
from .collectives import WORLD_GROUP
from .mindir_reader import Graph, constant_value, node_op, prim_attrs
from ..ops import registry
from .mindspore_ops import COMMUNICATION, from_mindspore, mindspore_name

log = logging.getLogger(__name__)

__all__ = ["GraphCell"]

_WORLD_GROUPS = {WORLD_GROUP, "nccl_world_group", "mccl_world_group", "WORLD_GROUP"}


# ------------------------------------------------------------------ prepared steps
@dataclass
class _Step:
    name: str
    op: str
    inputs: list[str]
    outputs: list[str]
    run: Callable[[list], list]  # input values -> one value per output


class _Runner:
    """Turns nodes into :class:`_Step` closures (see module doc)."""

    def __init__(self, graph: Graph) -> None:
        self.g = graph
        self.path = graph.path

    def steps(self) -> list[_Step]:
        out, run = [], []
        for node in self.g.nodes:
            op = node_op(node, self.g.primitives, self.path)
            if op in ("Send", "Receive"):
                run.append(node)
                continue
            if run:
                out.append(self._exchange(run))
                run = []
            out.append(self.step(node, op))
        if run:
            out.append(self._exchange(run))
        return out

    def _prim(self, node) -> dict:
        prim = self.g.primitives.get(node.op_type[5:]) if node.op_type.startswith("REF::") else None
        return prim_attrs(prim, self.path)

    def step(self, node, op: str) -> _Step:
        where = f"{self.path}: node {node.name!r} ({op})"
        if op == "Constant":
            value = constant_value(node, self.path)
            fn = lambda args, v=value: [v]  # noqa: E731
        elif op in COMMUNICATION:
            fn = self._collective(op, self._prim(node), where)
        elif mindspore_name(op) is not None:
            fn = self._compute(node, op, self._prim(node), where)
        else:
            fn = _STRUCTURAL[op]
        return _Step(node.name, op, list(node.input), list(node.output), fn)

    # -------------------------------------------------------------- compute nodes
    def _compute(self, node, op: str, attrs: dict, where: str) -> Callable:
        spec = registry.mindir_form(registry.lookup(mindspore_name(op)))
        declared = next((abstract_specs(a, where) for a in node.attribute if a.name == "shape"), None)
        context = self.g.kernels.get(node.name)

        def run(args):
            values = [a for a in args if a is not MONAD]
            prim, xs, consts = from_mindspore(op, values, attrs, where)
            xs = [np.asarray(x) for x in xs]
            ctx = _context(prim, xs, consts, context, declared, where)
            outs = prim.kernel(ctx, *xs)
            outs = [_cast(o, d) for o, d in zip(outs if isinstance(outs, tuple) else (outs,), ctx.out_dtypes)]
            return [tuple(outs) if spec.tuple_output else outs[0]]
        return run

    # -------------------------------------------------------------- communication
    def _collective(self, op: str, attrs: dict, where: str) -> Callable:
        group = _group(attrs, where)
        world = _backend.world
        if op == "AllReduce":
            return lambda args: [world().allreduce(args[0], (group,), attrs.get("op", "sum"))]
        if op == "ReduceScatter":
            return lambda args: [world().reduce_scatter(args[0], (group,), 0, attrs.get("op", "sum"))]
        if op == "AllGather":
            return lambda args: [np.concatenate(_all_to_all([args[0]] * len(group), group), axis=0)]
        split_dim, concat_dim = int(attrs["split_dim"]), int(attrs["concat_dim"])
        return lambda args: [np.concatenate(_all_to_all(np.split(args[0], len(group), axis=split_dim), group),
                                            axis=concat_dim)]

    def _exchange(self, nodes: list) -> _Step:
        """A run of Send/Receive nodes as one exchange. Pieces between two ranks go in the order
        of their ``sr_tag``, which sender and receiver share; a Send's output is what it sent."""
        sends, recvs, inputs, outputs, sources = [], [], [], [], []
        for node in nodes:
            attrs = self._prim(node)
            if node_op(node, self.g.primitives, self.path) == "Send":
                sends.append((int(attrs["dest_rank"]), int(attrs["sr_tag"]), len(inputs)))
                sources.append(("sent", len(inputs)))
                inputs.append(node.input[0])
            else:
                key = (int(attrs["src_rank"]), int(attrs["sr_tag"]))
                recvs.append((key, (tuple(int(d) for d in attrs["shape"]), attrs["dtype"].np)))
                sources.append(("received", key))
            outputs.append(node.output[0])
        recvs.sort(key=lambda r: r[0])

        def run(args):
            out: dict[int, list] = {}
            for dst, _, k in sorted(sends):
                out.setdefault(dst, []).append(np.ascontiguousarray(args[k]))
            specs: dict[int, list] = {}
            for (src, _), spec in recvs:
                specs.setdefault(src, []).append(spec)
            got = _backend.world().exchange(out, specs) if out or specs else {}
            queues = {src: iter(arrays) for src, arrays in got.items()}
            received = {key: next(queues[key[0]]) for key, _ in recvs}
            return [args[v] if kind == "sent" else received[v] for kind, v in sources]
        return _Step(nodes[0].name, "Send/Receive", inputs, outputs, run)


_STRUCTURAL: dict[str, Callable[[list], list]] = {
    "Load": lambda args: [args[0]],
    "Depend": lambda args: [args[0]],
    "Return": lambda args: [args[0]],
    "UpdateState": lambda args: [MONAD],
    "MakeTuple": lambda args: [tuple(args)],
    "TupleGetItem": lambda args: [args[0][int(args[1])]],
}


def _group(attrs: dict, where: str) -> tuple[int, ...]:
    """A communication primitive's ranks: ``group_ranks`` (``"0-2"``), or the whole world."""
    ranks = attrs.get("group_ranks")
    if ranks and ranks != "WORLD_GROUP":
        return tuple(int(r) for r in str(ranks).split("-"))
    if attrs.get("group", WORLD_GROUP) in _WORLD_GROUPS:
        return tuple(range(_backend.world().size))
    raise FormatError(f"{where}: group {attrs.get('group')!r} lists no group_ranks; distinfer cannot tell its ranks")


def _all_to_all(pieces: list[np.ndarray], group: tuple[int, ...]) -> list[np.ndarray]:
    """Piece j to the j-th member of ``group``; returns the piece each member sent here, in member order."""
    world = _backend.world()
    me = group.index(world.rank) if world.size > 1 else 0
    sends = {m: [np.ascontiguousarray(pieces[j])] for j, m in enumerate(group) if j != me}
    recvs = {m: [(pieces[me].shape, pieces[me].dtype)] for j, m in enumerate(group) if j != me}
    got = world.exchange(sends, recvs) if sends else {}
    return [pieces[me] if j == me else got[m][0] for j, m in enumerate(group)]


def _context(prim, xs: list, consts: dict, context: list | None, declared, where: str) -> KernelContext:
    """The kernel's context: a per-rank export's recorded boxes, or whole tensors (shapes from ``infer``)."""
    dtypes = [mstype.from_numpy(d) for _, d in declared] if declared else None
    if context is not None:
        if dtypes is None:
            raise FormatError(f"{where}: the node has no shape attribute (its output dtypes)")
        in_boxes, out_boxes, in_shapes, out_shapes = context
        boxes = lambda bs: [tuple(tuple(b) for b in box) for box in bs]  # noqa: E731
        for k, (x, box) in enumerate(zip(xs, in_boxes)):
            if np.shape(x) != tuple(b - a for a, b in box):
                raise ValueError(f"{where}: tensor input {k} has local shape {np.shape(x)}, the graph expects "
                                 f"{tuple(b - a for a, b in box)}")
        return KernelContext(consts, boxes(in_boxes), boxes(out_boxes), [tuple(s) for s in in_shapes],
                             [tuple(s) for s in out_shapes], dtypes)
    shapes = [tuple(x.shape) for x in xs]
    try:
        specs = prim.infer(shapes, [mstype.from_numpy(x.dtype) for x in xs], consts)
    except (ValueError, TypeError, KeyError, IndexError) as e:
        raise ValueError(f"{where}: inputs of shapes {shapes} rejected: {e}") from None
    full = lambda s: tuple((0, d) for d in s)  # noqa: E731
    if dtypes is None or len(dtypes) != len(specs):
        dtypes = [d for _, d in specs]
    return KernelContext(consts, [full(s) for s in shapes], [full(s) for s, _ in specs], shapes,
                         [s for s, _ in specs], dtypes)


def _cast(out: Any, dtype: mstype.Type | None) -> Any:
    """A kernel output in the dtype its node declares (numpy promotes some; MindSpore's
    ArgMaxWithValue indices are Int64)."""
    if isinstance(out, np.ndarray) and dtype is not None and out.dtype != dtype.np:
        return out.astype(dtype.np)
    return out


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
        object.__setattr__(self, "_steps", _Runner(graph).steps())

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
            values.update(zip(s.outputs, s.run(args)))
        results = [_wrap(values[name]) for name in g.outputs]
        return results[0] if len(results) == 1 else tuple(results)


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
