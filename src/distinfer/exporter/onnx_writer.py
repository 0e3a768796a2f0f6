"""ONNX writer (opset 17) for stand-alone networks, from a :class:`~distinfer.exporter.trace.Trace`.

Weights become initializers named like the parameters, inputs keep ``construct``'s argument
names. Each op writes its own ONNX form (``onnx_op`` or ``to_onnx`` on its class, see
:mod:`distinfer.ops.registry`), through an :class:`OnnxNode`; an op with ``onnx_refusal`` stops
the export with that reason. A traced run with more than one device cannot be expressed in ONNX:
export MINDIR per rank instead.
"""
from __future__ import annotations

import logging
import os
from typing import Any

import numpy as np

from .._version import __version__
from ..errors import OnnxExportError
from ..io._atomic import atomic_output
from .trace import OpStep, Trace

log = logging.getLogger(__name__)

__all__ = ["write_onnx", "OnnxExportError", "OnnxNode", "OPSET"]

OPSET = 17


class _Builder:
    def __init__(self, tr: Trace) -> None:
        import onnx
        from onnx import helper, numpy_helper

        self.onnx, self.helper, self.nph = onnx, helper, numpy_helper
        self.tr = tr
        self.nodes: list = []
        self.inits: list = []
        self.names: dict[str, str] = {}
        self.produced: set[str] = set()
        self.dtypes: dict[str, np.dtype] = {}  # ONNX value name -> numpy dtype, for constant operands
        self.count = 0
        self.inputs = [self._source(name, t, name, initializer=False) for name, t in tr.inputs]
        for value, p in tr.params.items():
            self._source(value, p, p.name)
        for value, t in tr.consts.items():
            self._source(value, t, value)

    def _source(self, value: str, t, name: str, initializer: bool = True):
        """Name a graph input, weight or constant; weights and constants become initializers."""
        arr = np.ascontiguousarray(t.asnumpy())
        self.names[value] = name
        self.dtypes[name] = arr.dtype
        if initializer:
            self.inits.append(self.nph.from_array(arr, name))
            return None
        return self.helper.make_tensor_value_info(name, self.helper.np_dtype_to_tensor_dtype(arr.dtype),
                                                  list(arr.shape))

    # ------------------------------------------------------------------- helpers
    def name(self, value: str) -> str:
        return self.names.get(value, value)

    def fresh(self, stem: str) -> str:
        self.count += 1
        return f"{stem}_{self.count}"

    def const(self, arr: Any, stem: str = "const") -> str:
        name = self.fresh(stem)
        self.inits.append(self.nph.from_array(np.asarray(arr), name))
        return name

    def node(self, op: str, inputs: list[str], outputs: list[str] | None = None, **attrs: Any) -> list[str]:
        outputs = outputs or [self.fresh(op)]
        self.nodes.append(self.helper.make_node(op, inputs, outputs, name=self.fresh(f"{op}_node"), **attrs))
        self.produced.update(outputs)
        return outputs

    def one(self, op: str, inputs: list[str], out: str | None = None, **attrs: Any) -> str:
        return self.node(op, inputs, [out] if out else None, **attrs)[0]

    def onnx_type(self, dtype) -> int:
        return self.helper.np_dtype_to_tensor_dtype(np.dtype(dtype.np))

    # ---------------------------------------------------------------------- graph
    def build(self, producer_version: str):
        tr = self.tr
        for s in tr.steps:
            if not isinstance(s, OpStep):
                raise OnnxExportError("ONNX export: the traced run communicates between ranks; export MINDIR per rank")
            self.op(s)
        outputs = []
        for i, (value, t) in enumerate(tr.outputs):
            name = self.name(value)
            if name not in self.produced or name in [o.name for o in outputs]:
                name = self.one("Identity", [name], f"output_{i}")
            arr = t.asnumpy()
            outputs.append(self.helper.make_tensor_value_info(name, self.helper.np_dtype_to_tensor_dtype(arr.dtype),
                                                              list(arr.shape)))
        graph = self.helper.make_graph(self.nodes, "distinfer_graph", self.inputs, outputs, self.inits)
        model = self.helper.make_model(graph, opset_imports=[self.helper.make_opsetid("", OPSET)],
                                       producer_name="distinfer", producer_version=producer_version)
        model.ir_version = 8
        return model

    def op(self, s: OpStep) -> None:
        prim = s.prim
        where = f"ONNX export: op {prim.name} (inputs of shapes {s.in_shapes})"
        if prim.onnx_refusal is not None:
            raise OnnxExportError(f"{where} has no ONNX form: {prim.onnx_refusal}")
        node = OnnxNode(self, s)
        if prim.onnx_op is not None:
            node.one(prim.onnx_op, node.operands(), node.outputs[0])
        elif prim.to_onnx is not None:
            prim.to_onnx(node)
        else:
            raise OnnxExportError(f"{where} has no ONNX mapping")
        for v, dt in zip(s.outputs, s.out_dtypes):
            self.names[v] = v
            self.dtypes[v] = np.dtype(dt.np)


class OnnxNode:
    """The ONNX writer's view of one traced primitive call, handed to ``Primitive.to_onnx``.

    ``inputs`` are the ONNX names of the call's tensor arguments (of numpy dtypes ``in_dtypes``) and
    ``outputs`` the names its results must be given; ``consts`` (call position -> value),
    ``in_shapes``, ``out_shapes`` and ``out_dtypes`` are the traced call's. :meth:`one` and
    :meth:`node` add ONNX nodes, :meth:`const` an initializer. A converter raises
    :class:`~distinfer.errors.OnnxExportError` for a call ONNX cannot express.

    >>> import numpy as np, distinfer as ms
    >>> from distinfer import nn
    >>> from distinfer.exporter.trace import trace_network
    >>> tr = trace_network(nn.Dense(3, 2), [ms.Tensor(np.ones((1, 3), np.float32))])
    >>> node = OnnxNode(_Builder(tr), tr.steps[0])  # the MatMul
    >>> node.inputs, node.in_dtypes, node.outputs, node.in_shapes
    (['x', 'weight'], [dtype('float32'), dtype('float32')], ['MatMul-op_1'], [(1, 3), (2, 3)])
    """

    def __init__(self, graph: "_Builder", step: OpStep) -> None:
        self._g = graph
        self.inputs = [graph.name(v) for v in step.inputs]
        self.in_dtypes = [graph.dtypes[v] for v in self.inputs]  # numpy dtypes
        self.outputs = list(step.outputs)
        self.consts = step.consts
        self.in_shapes, self.out_shapes, self.out_dtypes = step.in_shapes, step.out_shapes, step.out_dtypes

    def operands(self) -> list[str]:
        """Every argument in call order; a constant becomes an initializer of the tensor arguments' dtype
        (ONNX's elementwise operators take operands of one type)."""
        dtype = self.in_dtypes[0] if self.inputs else np.dtype(self.out_dtypes[0].np)
        it = iter(self.inputs)
        return [self._constant(self.consts[pos], dtype) if pos in self.consts else next(it)
                for pos in range(len(self.inputs) + len(self.consts))]

    def _constant(self, value: Any, dtype: np.dtype) -> str:
        arr = value.asnumpy() if hasattr(value, "asnumpy") else np.asarray(value, dtype=dtype)
        return self.const(arr, "scalar")

    def const(self, arr: Any, stem: str = "const") -> str:
        """The name of a new initializer holding ``arr``."""
        return self._g.const(arr, stem)

    def fresh(self, stem: str) -> str:
        """A new value name, for an output of a node that no other node reads."""
        return self._g.fresh(stem)

    def node(self, op: str, inputs: list[str], outputs: list[str] | None = None, **attrs: Any) -> list[str]:
        """Add an ONNX ``op`` node; returns its output names (fresh ones unless ``outputs`` is given)."""
        return self._g.node(op, inputs, outputs, **attrs)

    def one(self, op: str, inputs: list[str], out: str | None = None, **attrs: Any) -> str:
        """Add a single-output ONNX ``op`` node; returns its output name."""
        return self._g.one(op, inputs, out, **attrs)

    def onnx_dtype(self, dtype) -> int:
        """ONNX's TensorProto data type of a distinfer dtype."""
        return self._g.onnx_type(dtype)


def check_exportable(tr: Trace) -> None:
    """Raise :class:`OnnxExportError` for a traced run that spans several devices."""
    if tr.sharded and tr.device_num > 1:
        raise OnnxExportError(f"ONNX export: the network runs on {tr.device_num} devices with communication "
                              f"(parallel_mode semi_auto_parallel); ONNX holds one stand-alone graph. Export "
                              f"file_format='MINDIR' on every rank instead (one file per rank)")


def write_onnx(path: str, tr: Trace, options: dict | None = None) -> str:
    """Write the trace as an ONNX model at ``path`` (atomically) after ``onnx.checker.check_model``.

    >>> import os, tempfile, numpy as np, onnx, distinfer as ms
    >>> from distinfer import nn
    >>> from distinfer.exporter.trace import trace_network
    >>> tr = trace_network(nn.Dense(3, 2), [ms.Tensor(np.ones((1, 3), np.float32))])
    >>> m = onnx.load(write_onnx(os.path.join(tempfile.mkdtemp(), "net.onnx"), tr))
    >>> [node.op_type for node in m.graph.node], [i.name for i in m.graph.input], [w.name for w in m.graph.initializer]
    (['Gemm', 'Add'], ['x'], ['weight', 'bias'])
    """
    check_exportable(tr)
    model = _Builder(tr).build(__version__)
    import onnx

    onnx.checker.check_model(model)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with atomic_output(path) as fh:
        fh.write(model.SerializeToString())
    log.info("export: wrote %s (%d ONNX nodes)", path, len(model.graph.node))
    return path
