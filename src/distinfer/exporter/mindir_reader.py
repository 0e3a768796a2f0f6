"""MindIR reader: parse and validate a ``.mindir`` file into a :class:`Graph` (no code is executed).

Validation turns every way a file can be wrong into a :class:`~distinfer.errors.FormatError`
naming the file: not protobuf, not a MindIR model (no ``ir_version``/graph), truncated (a
node input, primitive or graph output that is never defined; weight data shorter than its
dims), external data outside the file's folder or past the end of its data file, a distinfer
file of an older format. Nodes whose op the interpreter cannot run raise
:class:`UnsupportedOpError` naming the node and the op.
"""
from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from google.protobuf.message import DecodeError

from .._proto import mind_ir_pb2 as pb
from ..errors import DistinferError, FormatError
from ..layout import Layout
from ._codec import attr_dict, decode_value, tensor_array
from .mindspore_ops import runnable

log = logging.getLogger(__name__)

__all__ = ["Graph", "read_mindir", "UnsupportedOpError", "node_op", "check_supported", "FORMAT_VERSION"]

# Version of distinfer's user_info entries. Format "1" files (distinfer-only node attributes,
# which MindSpore cannot parse) are refused with a request to export again.
FORMAT_VERSION = "2"


class UnsupportedOpError(DistinferError, NotImplementedError):
    """A MindIR node whose operator distinfer cannot interpret.

    >>> import os, tempfile, numpy as np, distinfer as ms
    >>> from distinfer import nn
    >>> p = ms.export(nn.ReLU(), ms.Tensor(np.ones(2, np.float32)), file_name=os.path.join(tempfile.mkdtemp(), "relu"))
    >>> model = read_mindir(p).model; model.primitives[0].op_type = "FancyOp"  # an op without a kernel
    >>> with open(p, "wb") as f: _ = f.write(model.SerializeToString())
    >>> try:
    ...     ms.load(p)
    ... except UnsupportedOpError as e:
    ...     print(isinstance(e, NotImplementedError), "operator 'FancyOp'" in str(e))
    True True
    """


@dataclass(repr=False)
class Graph:
    """A loaded MindIR model: weights, inputs, nodes and (for distinfer files) the rank it belongs to.

    ``params`` maps graph value names to local weight blocks; ``ref_keys`` maps them to parameter
    names. ``rank``/``device_num`` come from a distinfer file's ``user_info`` (0 and 1 for a
    stand-alone export); they are None for files made by MindSpore. ``kernels`` gives, for the op
    nodes of a sharded export, where their local blocks sit in the global tensors
    (``[in_boxes, out_boxes, in_shapes, out_shapes]``); ``groups`` the communication groups.

    >>> import os, tempfile, numpy as np, distinfer as ms
    >>> from distinfer import nn
    >>> x = ms.Tensor(np.ones((1, 3), np.float32))
    >>> g = ms.load(ms.export(nn.Dense(3, 2), x, file_name=os.path.join(tempfile.mkdtemp(), "dense")))
    >>> g.producer, [(name.split(":")[-1], shape) for name, shape, _ in g.inputs], len(g.outputs)
    ('distinfer', [('x', (1, 3))], 1)
    >>> {name: block.shape for name, block in g.weights().items()}
    {'weight': (2, 3), 'bias': (2,)}
    """

    path: str
    model: pb.ModelProto
    name: str
    params: dict[str, np.ndarray]
    ref_keys: dict[str, str]
    inputs: list[tuple[str, tuple[int, ...], np.dtype | None]]
    outputs: list[str]
    nodes: list[pb.NodeProto]
    primitives: dict[str, pb.PrimitiveProto]
    rank: int | None = None
    device_num: int | None = None
    param_layouts: dict[str, Layout] = field(default_factory=dict)
    kernels: dict[str, list] = field(default_factory=dict)
    groups: dict[str, list[int]] = field(default_factory=dict)

    @property
    def producer(self) -> str:
        return self.model.producer_name

    def parameter_layout_dict(self) -> dict[str, list]:
        """``{name: [dev_matrix, tensor_map, slice_shape, field_size, uniform_split, opt_shard_group]}``."""
        return {L.name: [list(L.device_arrangement_int), list(L.tensor_map_int), list(L.slice_shape_int),
                         int(L.field_size), bool(L.uniform_split), L.opt_shard_group]
                for L in self.model.parallel.layout}

    def weights(self) -> dict[str, np.ndarray]:
        """``{parameter name: local block}``."""
        return {self.ref_keys[k]: v for k, v in self.params.items()}

    def __repr__(self) -> str:
        """One line: the file, who made it, which rank, and the sizes (not the protobuf, which holds
        every weight).

        >>> import os, tempfile, numpy as np, distinfer as ms
        >>> from distinfer import nn
        >>> x = ms.Tensor(np.ones((1, 3), np.float32))
        >>> ms.load(ms.export(nn.Dense(3, 2), x, file_name=os.path.join(tempfile.mkdtemp(), "dense")))  # doctest: +ELLIPSIS
        Graph('/.../dense.mindir', producer distinfer, rank 0 of 1, inputs [x (1, 3)], 11 nodes, 2 weights (32 B))
        """
        where = "" if self.rank is None else f", rank {self.rank} of {self.device_num}"
        ins = ", ".join(f"{name.split(':')[-1]} {shape}" for name, shape, _ in self.inputs)
        size = sum(v.nbytes for v in self.params.values())
        return (f"Graph({self.path!r}, producer {self.producer}{where}, inputs [{ins}], {len(self.nodes)} nodes, "
                f"{len(self.params)} weights ({_bytes(size)}))")


def _bytes(n: int) -> str:
    if n < 1024:
        return f"{n} B"
    return f"{n / 1024:.1f} KiB" if n < 1 << 20 else f"{n / (1 << 20):.1f} MiB"


def _fail(path: str, msg: str) -> FormatError:
    return FormatError(f"{path}: {msg}")


def _parse(path: str) -> pb.ModelProto:
    try:
        with open(path, "rb") as fh:
            data = fh.read()
    except OSError as e:
        raise FileNotFoundError(f"cannot read MindIR file {path}: {e}") from e
    if not data:
        raise _fail(path, "empty file, not a MindIR model")
    model = pb.ModelProto()
    try:
        model.ParseFromString(data)
    except (DecodeError, RuntimeError, ValueError) as e:
        raise _fail(path, f"not a MindIR model or truncated ({len(data)} bytes): {e}") from None
    if not model.ir_version or not model.HasField("graph") or not model.graph.name:
        raise _fail(path, f"not a MindIR model ({len(data)} bytes): no ir_version or named graph "
                          f"(mind_ir.ModelProto fields 1 and 7)")
    return model


def node_op(node: pb.NodeProto, prims: dict[str, pb.PrimitiveProto], path: str) -> str:
    """The operator name of a node (``REF::MatMul:6`` -> the primitive's op_type ``MatMul``).

    >>> import os, tempfile, numpy as np, distinfer as ms
    >>> from distinfer import nn
    >>> x = ms.Tensor(np.ones((1, 3), np.float32))
    >>> g = ms.load(ms.export(nn.Dense(3, 2), x, file_name=os.path.join(tempfile.mkdtemp(), "dense")))
    >>> [node_op(node, g.primitives, g.path) for node in g.nodes if node.op_type != "Constant"]
    ['Load', 'MatMul', 'Load', 'BiasAdd', 'MakeTuple', 'UpdateState', 'Depend']
    >>> mm = next(node for node in g.nodes if node_op(node, g.primitives, g.path) == "MatMul")
    >>> mm.op_type.startswith("REF::MatMul:"), len(mm.input)  # x, the weight's Load, transpose_a, transpose_b
    (True, 4)
    """
    if node.op_type.startswith("REF::"):
        ref = node.op_type[5:]
        if ref not in prims:
            raise _fail(path, f"node {node.name!r} refers to primitive {ref!r}, which the file does not define "
                              f"(truncated file?)")
        return prims[ref].op_type
    return node.op_type


def _external(path: str, t: pb.TensorProto) -> bytes:
    ext = t.external_data
    loc = ext.location
    if not loc or os.path.isabs(loc) or ".." in loc.replace("\\", "/").split("/"):
        raise _fail(path, f"weight {t.name}: external data location {loc!r} must be a relative path inside "
                          f"the model's folder")
    data_path = os.path.join(os.path.dirname(os.path.abspath(path)), loc)
    try:
        size = os.path.getsize(data_path)
        if ext.offset < 0 or ext.length < 0 or ext.offset + ext.length > size:
            raise _fail(path, f"weight {t.name}: external data [{ext.offset}, {ext.offset + ext.length}) is past "
                              f"the end of {data_path} ({size} bytes)")
        with open(data_path, "rb") as fh:
            fh.seek(ext.offset)
            return fh.read(ext.length)
    except OSError as e:
        raise _fail(path, f"weight {t.name}: cannot read external data {data_path}: {e}") from None


def _weights(path: str, graph: pb.GraphProto) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    params, refs = {}, {}
    for t in graph.parameter:
        raw = _external(path, t) if t.HasField("external_data") else None
        params[t.name] = tensor_array(t, f"{path}: weight", raw)
        refs[t.name] = t.ref_key or t.name.split(":", 1)[-1]
    return params, refs


def _inputs(path: str, graph: pb.GraphProto) -> list[tuple[str, tuple[int, ...], Any]]:
    from ._codec import data_type_dtype

    out = []
    for vi in graph.input:
        if vi.tensor:
            t = vi.tensor[0]
            out.append((vi.name, tuple(int(d) for d in t.dims), data_type_dtype(t.data_type)))
        else:
            out.append((vi.name, None, None))
    return out


def _check_dataflow(path: str, g: Graph) -> None:
    """Every node input and graph output names something defined earlier (catches truncation)."""
    known = set(g.params) | {name for name, _, _ in g.inputs}
    for node in g.nodes:
        for name in node.input:
            if name not in known:
                raise _fail(path, f"node {node.name!r} ({node.op_type}) uses {name!r}, which is not defined before "
                                  f"it (truncated or corrupt file?)")
        known.update(node.output)
    for name in g.outputs:
        if name not in known:
            raise _fail(path, f"graph output {name!r} is never computed (truncated or corrupt file?)")


def _distinfer_info(path: str, model: pb.ModelProto, g: Graph) -> None:
    info = model.user_info
    if "distinfer.format" not in info:
        if model.producer_name == "distinfer":
            raise _fail(path, "made by distinfer but its user_info lacks distinfer.format (truncated file?)")
        return
    if info["distinfer.format"] != FORMAT_VERSION:
        raise _fail(path, f"written by an older distinfer (format {info['distinfer.format']!r}, this one reads "
                          f"{FORMAT_VERSION!r}, MindSpore's own node encoding); export the network again")
    try:
        g.rank = int(info["distinfer.rank"])
        g.device_num = int(info["distinfer.device_num"])
        for name, (dev, tm, shape, opt) in json.loads(info.get("distinfer.param_layouts", "{}")).items():
            g.param_layouts[name] = Layout(tuple(dev), tuple(tuple(e) if isinstance(e, list) else e for e in tm),
                                           tuple(shape), opt)
        g.kernels = json.loads(info.get("distinfer.kernels", "{}"))
        g.groups = json.loads(info.get("distinfer.groups", "{}"))
    except (KeyError, ValueError, TypeError) as e:
        raise _fail(path, f"bad distinfer user_info: {e}") from None


def read_mindir(path: str | os.PathLike) -> Graph:
    """Parse and validate a MindIR file (see module doc). Weights are read into memory.

    >>> read_mindir("/nonexistent.mindir")
    Traceback (most recent call last):
    ...
    FileNotFoundError: cannot read MindIR file /nonexistent.mindir: [Errno 2] No such file or directory: '/nonexistent.mindir'
    """
    path = os.fspath(path)
    model = _parse(path)
    graph = model.graph
    prims = {p.name: p for p in model.primitives}
    params, refs = _weights(path, graph)
    outputs = [vi.name for vi in graph.output]
    if not outputs:
        raise _fail(path, "the graph has no outputs (truncated file?)")
    g = Graph(path, model, graph.name, params, refs, _inputs(path, graph), outputs, list(graph.node), prims)
    _check_dataflow(path, g)
    _distinfer_info(path, model, g)
    for node in g.nodes:
        check_supported(node, node_op(node, prims, path), path)
    log.info("load: %s (%d nodes, %d weights, rank %s of %s)", path, len(g.nodes), len(params), g.rank,
             g.device_num)
    return g


def check_supported(node, op: str, path: str) -> None:
    """Raise :class:`UnsupportedOpError` for a node the interpreter cannot run.

    >>> from distinfer._proto import mind_ir_pb2
    >>> node = mind_ir_pb2.NodeProto(name="n1", op_type="REF::FancyOp:1")
    >>> check_supported(node, "MatMul", "net.mindir")  # an op distinfer can run: no error
    >>> check_supported(node, "FancyOp", "net.mindir")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    distinfer.exporter.mindir_reader.UnsupportedOpError: net.mindir: node 'n1' has operator 'FancyOp' ...
    """
    if not runnable(op):
        raise UnsupportedOpError(f"{path}: node {node.name!r} has operator {op!r} ({node.op_type}), which distinfer "
                                 f"cannot interpret")


def prim_attrs(prim: pb.PrimitiveProto | None, path: str) -> dict[str, Any]:
    if prim is None:
        return {}
    return attr_dict(prim.attribute, f"{path}: primitive {prim.name!r}")


def constant_value(node: pb.NodeProto, path: str) -> Any:
    for a in node.attribute:
        if a.name == "value":
            return decode_value(a, f"{path}: constant {node.name!r}")
    raise _fail(path, f"Constant node {node.name!r} has no value attribute")
