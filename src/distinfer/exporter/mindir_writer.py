"""MindIR writer: a :class:`~distinfer.exporter.trace.Trace` as one rank's ``mind_ir.ModelProto``.

Encoding (spec §9; the distinfer-specific parts are documented here):

* header: ``ir_version "1.1"``, ``producer_name "distinfer"``, ``producer_version`` = distinfer's,
  ``model_version "2.10.0"`` (the MindSpore release the format follows), ``little_endian``,
  ``mind_ir_version 3``; ``user_info`` holds ``distinfer.format``, ``distinfer.rank``,
  ``distinfer.device_num``, ``distinfer.parallel_mode`` and ``distinfer.param_layouts`` (JSON
  ``{name: [dev_matrix, tensor_map, full_shape, opt_shard_size]}``, the exact layouts).
* weights: ``graph.parameter`` TensorProtos named ``<graph>:<param>`` with ``ref_key`` and this
  rank's local block as little-endian ``raw_data``; above :data:`TOTAL_SAVE` bytes they go to
  ``<file>_variables/data_0`` (64-byte aligned) and carry ``external_data{location, offset, length}``.
* inputs/outputs: ValueInfos with this rank's local dims; an input's ``attr_info`` is its Layout.
* compute nodes: ``op_type "REF::<Op>:<k>"``, one ``primitives`` entry per node with the op's
  attributes and the effective ``in_strategy`` (pieces per input dim); positional constant
  arguments are ``Constant`` nodes; node attributes ``const_inputs``, ``in_boxes``/``out_boxes``
  (global ``[start, stop)`` of the local blocks), ``in_shapes``/``out_shapes`` (global),
  ``out_dtypes``, ``in_layouts``/``out_layouts``, ``partial`` and MindSpore's ``shape``.
* communication nodes: ``REF::ReduceScatter:<k>`` (as AllReduce, plus ``axis``: the tensor dim
  whose pieces stay on the group's members in rank order, and ``dst_layout``),
  ``REF::AllReduce:<k>`` (primitive attributes ``op``, ``group``,
  ``group_rank_ids`` = this rank's group, ``rank_groups`` = the whole partition, ``layout``) and
  ``REF::Redistribute:<k>`` (``src_layout``, ``dst_layout``: replaying ``make_plan(src, dst)``
  reproduces the exact point-to-point plan; ``send_to``/``recv_from`` list this rank's peers).
* ``parallel``: one LayoutProto per parameter, equal to ``infer_predict_layout`` (sharded runs only).

Layouts are TUPLE attributes marked ``ref_attr_name "Layout"`` (see :mod:`._codec`).
"""
from __future__ import annotations

import json
import logging
import os
from typing import Any

import numpy as np

from .. import context
from .._proto import mind_ir_pb2 as pb
from .._version import __version__
from ..io._atomic import atomic_output
from ..layout import Layout
from ..train.model import layout_dict_entry
from ._codec import encode_value, tensor_proto
from .trace import CommStep, OpStep, Trace

log = logging.getLogger(__name__)

__all__ = ["build_model", "write_mindir", "TOTAL_SAVE", "FORMAT_VERSION"]

TOTAL_SAVE = 1 << 30  # bytes of weights above which they go to external data files (MindSpore's 1 GiB)
ALIGN = 64
FORMAT_VERSION = "1"


class _Builder:
    def __init__(self, tr: Trace, graph_name: str) -> None:
        self.tr = tr
        self.g = graph_name
        self.model = pb.ModelProto()
        self.graph = self.model.graph
        self.nodes = 0

    def v(self, name: str) -> str:
        return f"{self.g}:{name}"

    # ----------------------------------------------------------------------- nodes
    def _node(self, op: str, inputs: list[str], outputs: list[str], prim_attrs: dict, node_attrs: dict,
              instance_name: str = "") -> pb.NodeProto:
        self.nodes += 1
        prim_name = f"{op}:{self.nodes}"
        prim = self.model.primitives.add(name=prim_name, op_type=op, instance_name=instance_name, prim_type=1)
        for k, val in prim_attrs.items():
            prim.attribute.append(encode_value(k, val))
        node = self.graph.node.add(name=outputs[0], op_type=f"REF::{prim_name}", domain=f"Default/{op}-op{self.nodes}")
        node.input.extend(inputs)
        node.output.extend(outputs)
        for k, val in node_attrs.items():
            node.attribute.append(encode_value(k, val))
        return node

    def constant(self, name: str, value: Any, layout: Layout | None = None) -> str:
        node = self.graph.node.add(name=name, op_type="Constant")
        node.output.append(name)
        node.attribute.append(encode_value("value", value))
        if layout is not None:
            node.attribute.append(encode_value("layout", layout))
        return name

    def op_step(self, s: OpStep) -> None:
        args, it = [], iter(s.inputs)
        for pos in range(len(s.inputs) + len(s.consts)):
            if pos in s.consts:
                self.nodes += 1
                args.append(self.constant(self.v(f"ValueNode_{self.nodes}"), s.consts[pos]))
            else:
                args.append(self.v(next(it)))
        strategy = tuple(L.splits for L in s.in_layouts) if s.in_layouts and s.in_layouts[0] is not None else None
        node_attrs = {
            "const_inputs": tuple(sorted(s.consts)), "in_boxes": _boxes(s.in_boxes), "out_boxes": _boxes(s.out_boxes),
            "in_shapes": _shapes(s.in_shapes), "out_shapes": _shapes(s.out_shapes), "out_dtypes": tuple(s.out_dtypes),
            "in_layouts": tuple(s.in_layouts), "out_layouts": tuple(s.out_layouts),
            "partial": tuple(tuple(int(a) for a in p) for p in s.partial),
        }
        node = self._node(s.prim.name, args, [self.v(o) for o in s.outputs], _prim_attrs(s.prim, strategy),
                          node_attrs, s.prim.instance_name)
        node.attribute.append(_abstract("shape", s.out_arrays))

    def comm_step(self, s: CommStep) -> None:
        if s.kind == "allreduce":
            part = tuple(tuple(int(r) for r in grp) for grp in s.info["partition"])
            mine = next((grp for grp in part if self.tr.rank in grp), ())
            attrs = {"op": s.info["op"], "group": "allreduce-" + "-".join(map(str, mine)), "group_rank_ids": mine,
                     "rank_groups": part, "layout": s.info["layout"]}
            self._node("AllReduce", [self.v(s.input)], [self.v(s.output)], attrs, {})
            return
        if s.kind == "reduce_scatter":
            part = tuple(tuple(int(r) for r in grp) for grp in s.info["partition"])
            mine = next((grp for grp in part if self.tr.rank in grp), ())
            attrs = {"op": s.info["op"], "group": "reducescatter-" + "-".join(map(str, mine)),
                     "group_rank_ids": mine, "rank_groups": part, "axis": int(s.info["axis"]),
                     "layout": s.info["layout"], "dst_layout": s.info["result_layout"]}
            self._node("ReduceScatter", [self.v(s.input)], [self.v(s.output)], attrs, {})
            return
        plan = s.info["plan"]
        me = self.tr.rank
        attrs = {"src_layout": plan.src, "dst_layout": plan.dst,
                 "send_to": tuple(sorted({p.dst for p in plan.pieces if p.src == me and p.dst != me})),
                 "recv_from": tuple(sorted({p.src for p in plan.pieces if p.dst == me and p.src != me}))}
        self._node("Redistribute", [self.v(s.input)], [self.v(s.output)], attrs, {})

    # ------------------------------------------------------------------- the model
    def build(self) -> tuple[pb.ModelProto, list[tuple[pb.TensorProto, np.ndarray]]]:
        m, tr = self.model, self.tr
        m.ir_version, m.producer_name, m.producer_version = "1.1", "distinfer", __version__
        m.model_version, m.little_endian, m.mind_ir_version = "2.10.0", True, 3
        self.graph.name = self.g
        self.graph.attribute.append(encode_value("phase", "export"))
        self.graph.attribute.append(encode_value("has_shard", tr.sharded))
        for name, t in tr.inputs:
            vi = self.graph.input.add(name=self.v(name))
            vi.tensor.append(tensor_proto(t.asnumpy(), with_data=False))
            vi.attr_info.CopyFrom(encode_value("layout", t.layout))
        for name, t in tr.consts.items():
            self.constant(self.v(name), t.asnumpy(), t.layout)
        for s in tr.steps:
            (self.op_step if isinstance(s, OpStep) else self.comm_step)(s)
        outs = [self.v(name) for name, _ in tr.outputs]
        if tr.output_is_tuple:
            out = self.v("output_tuple")
            self._node("MakeTuple", outs, [out], {}, {})
            outs = [out]
        for name, (_, t) in zip(outs, tr.outputs if not tr.output_is_tuple else [(None, None)]):
            vi = self.graph.output.add(name=name)
            if t is not None:
                vi.tensor.append(tensor_proto(t.asnumpy(), with_data=False))
        weights = self._weights()
        self._parallel()
        self._user_info()
        return m, weights

    def _weights(self) -> list[tuple[pb.TensorProto, np.ndarray]]:
        out = []
        for value_name, p in self.tr.params.items():
            arr = np.ascontiguousarray(p.asnumpy())
            t = tensor_proto(arr, name=self.v(value_name), with_data=False)
            t.ref_key = p.name
            t.compression_type = pb.TensorProto.NO_COMPRESSION
            out.append((t, arr))
        return out

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


def _prim_attrs(prim, strategy) -> dict:
    out = {}
    for k, val in prim.op_attrs().items():
        try:
            encode_value(k, val)
        except TypeError:
            log.debug("export: %s attribute %s (%s) is not recorded", prim.name, k, type(val).__name__)
            continue
        out[k] = val
    if strategy is not None:
        out["in_strategy"] = strategy
    if prim.out_strategy is not None:
        out["out_strategy"] = prim.out_strategy
    return out


def _boxes(boxes) -> tuple:
    return tuple(tuple((int(a), int(b)) for a, b in box) for box in boxes)


def _shapes(shapes) -> tuple:
    return tuple(tuple(int(d) for d in s) for s in shapes)


def _abstract(name: str, arrays) -> pb.AttributeProto:
    """MindSpore's ``shape`` node attribute: the local outputs' dims and dtypes."""
    a = pb.AttributeProto(name=name, type=pb.AttributeProto.TENSORS)
    for arr in arrays:
        a.tensors.append(tensor_proto(np.asarray(arr), with_data=False))
    return a


def build_model(tr: Trace, graph_name: str) -> tuple[pb.ModelProto, list[tuple[pb.TensorProto, np.ndarray]]]:
    """The ModelProto of a trace (weights not yet attached) and the ``(TensorProto, block)`` weight list.

    >>> import numpy as np, distinfer as ms
    >>> from distinfer import nn
    >>> from distinfer.exporter.trace import trace_network
    >>> model, weights = build_model(trace_network(nn.Dense(3, 2), [ms.Tensor(np.ones((1, 3), np.float32))]), "net")
    >>> model.producer_name, [node.op_type for node in model.graph.node]
    ('distinfer', ['REF::MatMul:1', 'REF::BiasAdd:2'])
    >>> [(proto.name, block.shape) for proto, block in weights]  # not in the model until write_mindir
    [('net:weight', (2, 3)), ('net:bias', (2,))]
    """
    return _Builder(tr, graph_name).build()


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
