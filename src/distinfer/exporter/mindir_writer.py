"""MindIR writer: a :class:`~distinfer.exporter.trace.Trace` as one rank's ``mind_ir.ModelProto``,
written the way MindSpore 2.10's exporter writes it, so that ``mindspore.load`` reads it.

* header: ``ir_version "1.1"``, ``model_version "2.10.0"`` (the MindSpore release the format
  follows), ``little_endian``, ``mind_ir_version 3``; ``producer_name "distinfer"`` and
  ``producer_version`` name the writer (MindSpore's loader only requires them to be present).
* graph ``<line>_<col>_<module>_<Class>_construct_<n>`` with attributes ``has_shard``, ``phase``
  and ``training``; inputs ``<graph>:<arg>`` and weights ``<graph>:<param>`` (``ref_key`` the
  parameter name, this rank's block as little-endian ``raw_data``; above :data:`TOTAL_SAVE`
  bytes in ``<file>_variables/data_0``, 64-byte aligned, as ``external_data``).
* nodes as MindSpore's: each weight read by ``Load(param, U)``; every op the primitive
  :mod:`.mindspore_ops` gives it, its constant inputs held by shared ``Constant`` nodes;
  a tuple-valued op read by ``TupleGetItem``; each node with its ``shape`` attribute (this
  rank's dims and dtypes) and ``checkpoint`` node attribute; at the end ``MakeTuple`` of the
  loads, ``UpdateState(U, ...)`` and ``Depend(output, state)``. Communication is MindSpore's
  primitives (:mod:`.collectives`): ``AllReduce``, ``ReduceScatter``, ``AllGather``,
  ``AlltoAll``, ``Send``/``Receive``, with MindSpore's group names and ``group_ranks``.
* ``parallel`` (sharded runs): one LayoutProto per parameter, equal to ``infer_predict_layout``.
* ``user_info`` (which MindSpore keeps but never interprets) holds what only distinfer needs:
  ``distinfer.format``, ``.rank``, ``.device_num``, ``.parallel_mode``, ``.param_layouts``
  (JSON ``{name: [dev_matrix, tensor_map, full_shape, opt_shard_size]}``), ``.groups`` (JSON
  ``{group name: ranks}``, what a cluster must create) and, for sharded runs, ``.kernels``
  (JSON ``{node: [in_boxes, out_boxes, in_shapes, out_shapes]}``: where each op's local blocks
  sit in the global tensors, which some local kernels need, e.g. a vocabulary-split Gather).
"""
from __future__ import annotations

import json
import logging
import os
from typing import Any, NamedTuple

import numpy as np

from .. import context
from .._proto import mind_ir_pb2 as pb
from ..io._atomic import atomic_output
from ..train.model import layout_dict_entry
from . import collectives as coll
from ._codec import MONAD, abstract, encode_value, np_to_data_type, tensor_proto
from .mindspore_ops import PRIMITIVE, PRIMITIVE_FUNCTION, TYPE_IDS, Call, GetItem, Prev, Ref, form_of
from .trace import CommStep, OpStep, Trace

log = logging.getLogger(__name__)

__all__ = ["build_model", "write_mindir", "TOTAL_SAVE", "FORMAT_VERSION", "MINDSPORE_VERSION"]

TOTAL_SAVE = 1 << 30  # bytes of weights above which they go to external data files (MindSpore's 1 GiB)
ALIGN = 64
FORMAT_VERSION = "2"  # of distinfer's user_info entries; "1" files (distinfer-only node attributes) are not read
MINDSPORE_VERSION = "2.10.0"


class Aval(NamedTuple):
    """What a MindIR value holds on this rank: a tensor's local dims and numpy dtype. A tuple
    value's aval is a plain tuple of these; a monad's is :data:`MONAD`."""

    dims: tuple
    dtype: np.dtype


class _Builder:
    """Accumulates one graph's nodes, primitives and constants (see module doc)."""

    def __init__(self, tr: Trace, graph_name: str, version: str) -> None:
        self.tr = tr
        self.g = graph_name
        self.model = pb.ModelProto(ir_version="1.1", producer_name="distinfer", producer_version=version,
                                   model_version=MINDSPORE_VERSION, little_endian=True, mind_ir_version=3)
        self.graph = self.model.graph
        self.ids = 0
        self.values: dict[str, str] = {}  # trace value -> MindIR value
        self.elements: dict[str, tuple] = {}  # trace value -> (tuple node, index, Aval) until first read
        self.avals: dict[str, Any] = {}  # MindIR value -> Aval, a tuple of them, or MONAD
        self.prims: dict[bytes, str] = {}
        self.consts: dict[bytes, str] = {}
        self.loads: dict[str, str] = {}  # parameter (MindIR value) -> its Load
        self.kernels: dict[str, list] = {}
        self.groups: dict[str, list[int]] = {}
        self.monad: str | None = None

    def _next(self) -> int:
        self.ids += 1
        return self.ids

    # ----------------------------------------------------------------- building blocks
    def prim(self, op: str, prim_type: int = PRIMITIVE, attrs: dict | None = None, instance_name: str = "") -> str:
        """The name of primitive ``op`` with ``attrs`` (one PrimitiveProto per distinct primitive)."""
        p = pb.PrimitiveProto(op_type=op, instance_name=instance_name, prim_type=prim_type)
        p.attribute.extend(encode_value(k, v) for k, v in (attrs or {}).items())
        key = p.SerializeToString()
        if key not in self.prims:
            p.name = f"{op}:{self._next()}"
            self.model.primitives.append(p)
            self.prims[key] = p.name
        return self.prims[key]

    def const(self, value: Any) -> str:
        """A Constant node holding ``value`` (shared by every node that uses the same value)."""
        attr = encode_value("value", value)
        key = attr.SerializeToString()
        if key not in self.consts:
            name = f"ValueNode_{self._next()}"
            self.graph.node.add(name=name, op_type="Constant", output=[name]).attribute.append(attr)
            self.consts[key] = name
            if value is MONAD:
                self.avals[name] = MONAD
        return self.consts[key]

    def node(self, prim: str, inputs: list[str], aval: Any) -> str:
        """A CNode applying primitive ``prim`` to ``inputs``; ``aval`` describes its output."""
        k = self._next()
        name = f"{self.g}:CNode_{k}:{k}"
        op = prim.rsplit(":", 1)[0]
        node = self.graph.node.add(name=name, op_type=f"REF::{prim}", input=inputs, output=[name],
                                   domain=f"Default/{op}-op{k}")
        node.attribute.append(_shape_attr(aval))
        node.node_attr.append(encode_value("checkpoint", True))
        self.avals[name] = aval
        return name

    def apply(self, op: str, inputs: list, aval: Any, prim_type: int = PRIMITIVE_FUNCTION, attrs: dict | None = None,
              instance_name: str = "") -> str:
        """``node`` with constants among ``inputs`` turned into Constant nodes."""
        names = [x if isinstance(x, _Value) else self.const(x) for x in inputs]
        return self.node(self.prim(op, prim_type, attrs, instance_name), [str(x) for x in names], aval)

    def operand(self, value: str) -> "_Value":
        """The MindIR value of trace value ``value``; a weight is read through its (first) Load."""
        name = self.values[value] if value not in self.elements else self._element(value)
        if value in self.tr.params:
            if name not in self.loads:
                self.monad = self.monad or self.const(MONAD)
                self.loads[name] = self.apply("Load", [_Value(name), _Value(self.monad)], self.avals[name],
                                              PRIMITIVE)
            name = self.loads[name]
        return _Value(name)

    # ---------------------------------------------------------------------- op steps
    def op_step(self, s: OpStep) -> None:
        spec = form_of(s.prim)
        if spec is None:
            raise NotImplementedError(f"export: distinfer has no MindSpore primitive for op {s.prim.name!r}")
        operands = [self.operand(v) for v in s.inputs]
        call = Call(s.prim, _call_args(s), [tuple(a.shape) for a in s.out_arrays],
                    [self.avals[o].dtype for o in operands])
        calls = spec.calls(call)
        prev = None
        for c in calls[:-1]:  # x[index]'s new axes, before its StridedSlice
            x = prev or operands[0]
            dims = list(self.avals[x].dims)
            dims.insert(c.inputs[1], 1)
            prev = _Value(self.apply(c.name, [x, c.inputs[1]], Aval(tuple(dims), self.avals[x].dtype)))
        last = calls[-1]
        inputs = [self._ms_input(x, operands, prev) for x in last.inputs]
        outs = [Aval(tuple(a.shape), last.out_dtypes[j].np if j < len(last.out_dtypes) and last.out_dtypes[j]
                     else a.dtype) for j, a in enumerate(s.out_arrays)]
        out = self.apply(last.name, inputs, tuple(outs) if last.tuple_output else outs[0], last.prim_type,
                         last.attrs, s.prim.instance_name)
        if self.tr.sharded and not isinstance(spec, GetItem):
            self.kernels[out] = _kernel_context(spec, call, s)
        self._bind_outputs(s, out)

    def _ms_input(self, x: Any, operands: list, prev: "_Value | None") -> Any:
        if isinstance(x, Ref):
            return operands[x.index]
        if isinstance(x, Prev):
            return prev
        if isinstance(x, tuple) and x and all(isinstance(v, Ref) for v in x):  # Concat's tuple of tensors
            items = [operands[v.index] for v in x]
            return _Value(self.apply("MakeTuple", items, tuple(self.avals[i] for i in items), PRIMITIVE))
        return x

    def _bind_outputs(self, s: OpStep, out: str) -> None:
        """The trace's output values: the node itself, or elements of its tuple (read by a
        TupleGetItem where first used, as MindSpore reads only the elements it uses)."""
        if isinstance(self.avals[out], Aval):
            self.values[s.outputs[0]] = out
            return
        for j, (value, arr) in enumerate(zip(s.outputs, s.out_arrays)):
            self.elements[value] = (out, j, Aval(tuple(arr.shape), arr.dtype))

    def _element(self, value: str) -> str:
        tup, j, want = self.elements.pop(value)
        item = self.apply("TupleGetItem", [_Value(tup), j], self.avals[tup][j], PRIMITIVE)
        if self.avals[item].dtype != want.dtype:  # MindSpore's output dtype differs: cast to distinfer's
            item = self.apply("Cast", [_Value(item), TYPE_IDS[_mstype(want.dtype)]], want)
        self.values[value] = item
        return item

    # -------------------------------------------------------------------- comm steps
    def comm_step(self, s: CommStep) -> None:
        x = self.operand(s.input)
        if s.kind == "allreduce":
            group = _my_group(s.info["partition"], self.tr.rank)
            out = self._comm("AllReduce", [x], self.avals[x], group, op=s.info["op"])
        elif s.kind == "reduce_scatter":
            out = self._reduce_scatter(x, s.info)
        else:
            out = str(x)
            for step in coll.lower(s.info["plan"].src, s.info["plan"].dst, self.tr.rank):
                out = self._lowered(_Value(out), step)
        self.values[s.output] = out

    def _comm(self, prim: str, inputs: list, aval: Any, group: tuple[int, ...], /, **extra: Any) -> str:
        """Communication primitive ``prim`` over ``group`` (``extra``: its own attributes)."""
        self.groups[coll.group_name(group)] = list(group)
        return self.apply(prim, inputs, aval, PRIMITIVE, coll.comm_attrs(prim, group, **extra))

    def _reduce_scatter(self, x: "_Value", info: dict) -> str:
        """MindSpore's ReduceScatter keeps a piece of dim 0: another dim is first moved there
        (Split along it, Concat along 0), so member i keeps piece i of that dim."""
        group = _my_group(info["partition"], self.tr.rank)
        k, axis = len(group), int(info["axis"])
        dims, dtype = self.avals[x]
        if axis:
            x = self._split_concat(x, axis, 0, k)
        out_dims = list(dims)
        out_dims[axis] //= k
        return self._comm("ReduceScatter", [x], Aval(tuple(out_dims), dtype), group, op=info["op"])

    def _split_concat(self, x: "_Value", split_dim: int, concat_dim: int, k: int) -> "_Value":
        """``Concat(Split(x, split_dim, k), concat_dim)``: k pieces of one dim laid along another."""
        dims, dtype = self.avals[x]
        piece = list(dims)
        piece[split_dim] //= k
        parts = self.apply("Split", [x, split_dim, k], (Aval(tuple(piece), dtype),) * k)
        joined = list(piece)
        joined[concat_dim] *= k
        return _Value(self.apply("Concat", [_Value(parts), concat_dim], Aval(tuple(joined), dtype)))

    def _lowered(self, x: "_Value", step: Any) -> str:
        dims, dtype = self.avals[x]
        if isinstance(step, coll.Slice):
            return self._slice(x, step.begin, step.end)
        if isinstance(step, coll.Gather):
            k = len(step.group)
            gathered = list(dims)
            gathered[0] *= k
            out = self._comm("AllGather", [x], Aval(tuple(gathered), dtype), step.group)
            return str(self._split_concat(_Value(out), 0, step.dim, k)) if step.dim else out
        if isinstance(step, coll.AllToAll):
            k = len(step.group)
            moved = list(dims)
            moved[step.split_dim] //= k
            moved[step.concat_dim] *= k
            return self._comm("AlltoAll", [x], Aval(tuple(moved), dtype), step.group, split_dim=step.split_dim,
                              concat_dim=step.concat_dim, split_count=k)
        return self._exchange(x, step)

    def _slice(self, x: "_Value", begin, end) -> str:
        n = len(begin)
        shape = tuple(e - b for b, e in zip(begin, end))
        return self.apply("StridedSlice", [x, tuple(begin), tuple(end), (1,) * n, 0, 0, 0, 0, 0],
                          Aval(shape, self.avals[x].dtype))

    def _exchange(self, x: "_Value", ex: coll.Exchange) -> str:
        """Send/Receive of a plan's pieces (all sends, then all receives: a reader can post them
        together), then the destination block concatenated from its grid of pieces."""
        dtype = self.avals[x].dtype
        world = tuple(range(self.tr.device_num))
        self.groups[coll.WORLD_GROUP] = list(world)
        base = {"group": coll.WORLD_GROUP, "group_ranks": coll.rank_list_name(world), "group_back": coll.WORLD_GROUP}
        pieces = [self._slice(x, b, e) for _, b, e, _ in ex.sends]
        sends = [self.apply("Send", [_Value(p)], self.avals[p], PRIMITIVE,
                            {**base, "shape": self.avals[p].dims, "dest_rank": int(dst), "sr_tag": int(tag),
                             "no_eliminate": True, "dtype": _mstype(dtype)})
                 for p, (dst, _, _, tag) in zip(pieces, ex.sends)]
        received = {}
        for cell in ex.cells.flat:
            if cell[0] == "recv":
                _, src, shape, tag = cell
                received[tag] = self.apply("Receive", [], Aval(tuple(shape), dtype), PRIMITIVE,
                                           {**base, "shape": list(shape), "src_rank": int(src), "sr_tag": int(tag),
                                            "no_eliminate": True, "dtype": _mstype(dtype)})
        grid = np.empty(ex.cells.shape, dtype=object)
        for at, cell in np.ndenumerate(ex.cells):
            grid[at] = received[cell[3]] if cell[0] == "recv" else self._slice(x, cell[1], cell[2])
        out = self._concat_grid(grid, 0)
        if sends:
            after = sends[0] if len(sends) == 1 else self.apply(
                "MakeTuple", [_Value(v) for v in sends], tuple(self.avals[v] for v in sends), PRIMITIVE)
            out = self.apply("Depend", [_Value(out), _Value(after)], self.avals[out], PRIMITIVE,
                             {"side_effect_propagate": 1})
        return out

    def _concat_grid(self, grid: np.ndarray, axis: int) -> str:
        """One value from a grid of pieces (``grid`` spans dims ``axis``...): each row is joined
        along the later dims first, then the rows along ``axis``."""
        if grid.ndim == 0 or grid.size == 1:
            return grid.reshape(-1)[0]
        parts = [self._concat_grid(sub, axis + 1) for sub in grid] if grid.ndim > 1 else list(grid)
        if len(parts) == 1:
            return parts[0]
        avals = [self.avals[p] for p in parts]
        dims = list(avals[0].dims)
        dims[axis] = sum(a.dims[axis] for a in avals)
        items = self.apply("MakeTuple", [_Value(p) for p in parts], tuple(avals), PRIMITIVE)
        return self.apply("Concat", [_Value(items), axis], Aval(tuple(dims), avals[0].dtype))

    # ------------------------------------------------------------------------- model
    def build(self) -> tuple[pb.ModelProto, list[tuple[pb.TensorProto, np.ndarray]]]:
        tr = self.tr
        self.graph.name = self.g
        for key, value in (("has_shard", tr.sharded), ("phase", "export"), ("training", False)):
            self.graph.attribute.append(encode_value(key, value))
        for name, t in tr.inputs:
            arr = t.asnumpy()
            vi = self.graph.input.add(name=self._bind(name, arr))
            vi.tensor.append(tensor_proto(arr, with_data=False))
        weights = self._weights()
        for name, t in tr.consts.items():
            self.values[name] = self.const(np.ascontiguousarray(t.asnumpy()))
            self.avals[self.values[name]] = _aval(t.asnumpy())
        for s in tr.steps:
            (self.op_step if isinstance(s, OpStep) else self.comm_step)(s)
        self._outputs()
        self._parallel()
        self._user_info()
        return self.model, weights

    def _bind(self, value: str, arr: np.ndarray) -> str:
        name = f"{self.g}:{value}"
        self.values[value], self.avals[name] = name, _aval(arr)
        return name

    def _weights(self) -> list[tuple[pb.TensorProto, np.ndarray]]:
        out = []
        for value_name, p in self.tr.params.items():
            arr = np.ascontiguousarray(p.asnumpy())
            t = tensor_proto(arr, name=self._bind(value_name, arr), with_data=False)
            t.ref_key = p.name
            t.compression_type = pb.TensorProto.NO_COMPRESSION
            out.append((t, arr))
        return out

    def _outputs(self) -> None:
        """The graph's output; with weights, ``Depend(output, UpdateState(U, loads))`` as MindSpore
        orders every read of a weight before the result."""
        outs = [self.operand(name) for name, _ in self.tr.outputs]
        if self.tr.output_is_tuple:
            out = self.apply("MakeTuple", outs, tuple(self.avals[o] for o in outs), PRIMITIVE)
        else:
            out = str(outs[0])
        if self.loads:
            loads = list(self.loads.values())
            after = loads[0] if len(loads) == 1 else self.apply(
                "MakeTuple", [_Value(v) for v in loads], tuple(self.avals[v] for v in loads), PRIMITIVE)
            state = self.apply("UpdateState", [_Value(self.monad), _Value(after)], MONAD, PRIMITIVE)
            out = self.apply("Depend", [_Value(out), _Value(state)], self.avals[out], PRIMITIVE,
                             {"side_effect_propagate": 1})
        vi = self.graph.output.add(name=out)
        aval = self.avals[out]
        if isinstance(aval, Aval):
            vi.tensor.add(dims=list(aval.dims), data_type=np_to_data_type(aval.dtype, out))
        else:  # MindSpore describes a tuple output by its elements' abstracts
            vi.denotation = "Tuple"
            vi.attr_info.CopyFrom(_shape_attr(aval, name=""))

    def _params_with_layout(self):
        return [(p.name, p.layout) for p in self.tr.params.values() if p.layout is not None]

    def _parallel(self) -> None:
        if not self.tr.sharded:
            return
        for name, lay in self._params_with_layout():
            e = layout_dict_entry(lay)
            tm = e[1]
            if any(isinstance(v, list) for v in tm):
                log.warning("export: %s has a nested tensor_map %s; LayoutProto stores it flattened", name, tm)
                tm = [v for entry in tm for v in (entry if isinstance(entry, list) else [entry])]
            self.model.parallel.layout.add(name=name, device_arrangement_int=e[0], tensor_map_int=tm,
                                           slice_shape_int=e[2], field_size=e[3], uniform_split=e[4],
                                           opt_shard_group=e[5])

    def _user_info(self) -> None:
        tr = self.tr
        info = self.model.user_info
        info["distinfer.format"] = FORMAT_VERSION
        info["distinfer.rank"] = str(tr.rank)
        info["distinfer.device_num"] = str(tr.device_num)
        info["distinfer.parallel_mode"] = context.parallel_mode()
        layouts = {name: [list(L.dev_matrix), L.tensor_map_list(), list(L.shape), L.opt_shard_size]
                   for name, L in self._params_with_layout()}
        info["distinfer.param_layouts"] = json.dumps(layouts, sort_keys=True)
        info["distinfer.groups"] = json.dumps(self.groups, sort_keys=True)
        if tr.sharded:
            info["distinfer.kernels"] = json.dumps(self.kernels, sort_keys=True)


class _Value(str):
    """A MindIR value name (as opposed to a constant string input)."""


# ------------------------------------------------------------------------------ helpers
def _call_args(s: OpStep) -> list:
    """The traced call's arguments in order: :class:`Ref` for tensors, the constants themselves."""
    args, k = [], 0
    for pos in range(len(s.inputs) + len(s.consts)):
        if pos in s.consts:
            args.append(s.consts[pos])
        else:
            args.append(Ref(k))
            k += 1
    return args


def _kernel_context(spec, call: Call, s: OpStep) -> list:
    """``[in_boxes, out_boxes, in_shapes, out_shapes]`` of a sharded op, one entry per tensor input
    of its MindSpore node (a scalar MindSpore turned into a 0-d tensor gets an empty box)."""
    boxes, shapes = iter(s.in_boxes), iter(s.in_shapes)
    in_boxes, in_shapes = [], []
    args = call.args if spec.tuple_input else call.args[:spec.tensors]
    for a in args:
        if isinstance(a, Ref):
            in_boxes.append([list(map(int, b)) for b in next(boxes)])
            in_shapes.append([int(d) for d in next(shapes)])
        else:
            in_boxes.append([])
            in_shapes.append([])
    out_boxes = [[list(map(int, b)) for b in box] for box in s.out_boxes]
    return [in_boxes, out_boxes, in_shapes, [[int(d) for d in shape] for shape in s.out_shapes]]


def _my_group(partition, rank: int) -> tuple[int, ...]:
    return next(tuple(int(r) for r in g) for g in partition if rank in g)


def _aval(arr: np.ndarray) -> Aval:
    return Aval(tuple(int(d) for d in arr.shape), np.asarray(arr).dtype)


def _mstype(dtype: Any):
    from .. import dtype as mstype

    return mstype.from_numpy(dtype)


def _shape_attr(aval: Any, name: str = "shape") -> pb.AttributeProto:
    """MindSpore's abstract of a value: its dims and dtype, a TUPLE of abstracts, or UMONAD."""
    if aval is MONAD or isinstance(aval, Aval):
        return abstract(name, [aval], is_tuple=False)
    a = pb.AttributeProto(name=name, type=pb.AttributeProto.TUPLE)
    for item in aval:
        a.values.append(_shape_attr(item, ""))
    a.seq_info.is_dyn_len = False
    return a


def build_model(tr: Trace, graph_name: str) -> tuple[pb.ModelProto, list[tuple[pb.TensorProto, np.ndarray]]]:
    """The ModelProto of a trace (weights not yet attached) and the ``(TensorProto, block)`` weight list.

    >>> import numpy as np, distinfer as ms
    >>> from distinfer import nn
    >>> from distinfer.exporter.trace import trace_network
    >>> model, weights = build_model(trace_network(nn.Dense(3, 2), [ms.Tensor(np.ones((1, 3), np.float32))]), "net")
    >>> [n.op_type.split(":")[2] if n.op_type != "Constant" else "Constant" for n in model.graph.node]  # REF::<op>:<id>
    ['Constant', 'Load', 'Constant', 'Constant', 'MatMul', 'Load', 'Constant', 'BiasAdd', 'MakeTuple', 'UpdateState', 'Depend']
    >>> [(proto.name, block.shape) for proto, block in weights]  # not in the model until write_mindir
    [('net:weight', (2, 3)), ('net:bias', (2,))]
    """
    from .._version import __version__ as version

    return _Builder(tr, graph_name, version).build()


def write_mindir(path: str, model: pb.ModelProto, weights: list[tuple[pb.TensorProto, np.ndarray]],
                 total_save: int | None = None) -> str:
    """Attach the weights (inline, or external above ``total_save`` bytes) and write ``path`` atomically.

    >>> import os, tempfile, numpy as np, distinfer as ms
    >>> from distinfer import nn
    >>> from distinfer.exporter.trace import trace_network
    >>> model, weights = build_model(trace_network(nn.Dense(3, 2), [ms.Tensor(np.ones((1, 3), np.float32))]), "net")
    >>> d = tempfile.mkdtemp()
    >>> p = write_mindir(os.path.join(d, "net.mindir"), model, weights, total_save=16)  # 32 bytes of weights > 16
    >>> sorted(os.listdir(d)), os.listdir(os.path.join(d, "net_variables")), ms.load(p).weights()["weight"].shape
    (['net.mindir', 'net_variables'], ['data_0'], (2, 3))
    """
    limit = TOTAL_SAVE if total_save is None else total_save
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    total = sum(arr.nbytes for _, arr in weights)
    if total > limit:
        _write_external(path, model, weights)
    else:
        for t, arr in weights:
            t.raw_data = _le(arr)
            model.graph.parameter.append(t)
    with atomic_output(path) as fh:
        fh.write(model.SerializeToString())
    log.info("export: wrote %s (%d nodes, %d weights, %d bytes of weights)", path, len(model.graph.node),
             len(weights), total)
    return path


def _le(arr: np.ndarray) -> bytes:
    return np.ascontiguousarray(arr.astype(arr.dtype.newbyteorder("<"), copy=False)).tobytes()


def _write_external(path: str, model: pb.ModelProto, weights) -> None:
    base = os.path.splitext(os.path.basename(path))[0]
    rel = f"{base}_variables/data_0"
    data_path = os.path.join(os.path.dirname(os.path.abspath(path)), rel)
    os.makedirs(os.path.dirname(data_path), exist_ok=True)
    offset = 0
    with atomic_output(data_path) as fh:
        for t, arr in weights:
            raw = _le(arr)
            fh.write(raw)
            pad = (-len(raw)) % ALIGN
            fh.write(b"\0" * pad)
            t.external_data.location, t.external_data.offset, t.external_data.length = rel, offset, len(raw)
            offset += len(raw) + pad
            model.graph.parameter.append(t)
