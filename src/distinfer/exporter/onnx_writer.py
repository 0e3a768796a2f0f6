"""ONNX writer (opset 17) for stand-alone networks, from a :class:`~distinfer.exporter.trace.Trace`.

Weights become initializers named like the parameters, inputs keep ``construct``'s argument
names. MatMul is ``Gemm`` (no bias) as MindSpore exports it; GeLU (tanh form) is written with
elementary ops; LayerNorm is ``LayerNormalization`` (its variance output is derived from
``InvStdDev``). A traced run with more than one device cannot be expressed in ONNX: export
MINDIR per rank instead.
"""
from __future__ import annotations

import logging
import math
from typing import Any, Callable

import numpy as np

from ..errors import DistinferError
from ..io._atomic import atomic_output
from .trace import OpStep, Trace

log = logging.getLogger(__name__)

__all__ = ["write_onnx", "OnnxExportError", "OPSET"]

OPSET = 17


class OnnxExportError(DistinferError, ValueError):
    """The network cannot be written as ONNX (distributed, or an op without an ONNX form).

    The example writes a trace recorded on 2 devices, as each rank of a 2-rank job records one:

    >>> import os, tempfile
    >>> from distinfer.exporter.trace import Trace
    >>> try:
    ...     write_onnx(os.path.join(tempfile.mkdtemp(), "net.onnx"), Trace(sharded=True, device_num=2))
    ... except OnnxExportError as e:
    ...     print(isinstance(e, ValueError), str(e).split(";")[0])
    True ONNX export: the network runs on 2 devices with communication (parallel_mode semi_auto_parallel)
    """


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
        self.count = 0

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
        inputs = []
        for name, t in tr.inputs:
            self.names[name] = name
            arr = t.asnumpy()
            inputs.append(self.helper.make_tensor_value_info(name, self.helper.np_dtype_to_tensor_dtype(arr.dtype),
                                                             list(arr.shape)))
        for value, p in tr.params.items():
            self.names[value] = p.name
            self.inits.append(self.nph.from_array(np.ascontiguousarray(p.asnumpy()), p.name))
        for value, t in tr.consts.items():
            self.names[value] = value
            self.inits.append(self.nph.from_array(np.ascontiguousarray(t.asnumpy()), value))
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
        graph = self.helper.make_graph(self.nodes, "distinfer_graph", inputs, outputs, self.inits)
        model = self.helper.make_model(graph, opset_imports=[self.helper.make_opsetid("", OPSET)],
                                       producer_name="distinfer", producer_version=producer_version)
        model.ir_version = 8
        return model

    def op(self, s: OpStep) -> None:
        kind = s.prim.name
        fn = _OPS.get(kind)
        if fn is None:
            raise OnnxExportError(f"ONNX export: op {kind} (inputs of shapes {s.in_shapes}) has no ONNX mapping")
        args, it = [], iter(s.inputs)
        for pos in range(len(s.inputs) + len(s.consts)):
            args.append(("const", s.consts[pos]) if pos in s.consts else ("tensor", self.name(next(it))))
        for v in s.outputs:
            self.names[v] = v
        fn(self, s, args, list(s.outputs))


# ------------------------------------------------------------------------ op mappings
def _operand(b: _Builder, s: OpStep, arg) -> str:
    kind, v = arg
    if kind == "tensor":
        return v
    arr = v.asnumpy() if hasattr(v, "asnumpy") else np.asarray(v, dtype=s.out_dtypes[0].np)
    return b.const(arr, "scalar")


def _binary(op: str) -> Callable:
    def emit(b, s, args, outs):
        b.one(op, [_operand(b, s, a) for a in args], outs[0])
    return emit


def _unary(op: str) -> Callable:
    def emit(b, s, args, outs):
        b.one(op, [args[0][1]], outs[0])
    return emit


def _matmul(b, s, args, outs):
    x, w = args[0][1], args[1][1]
    p = s.prim
    if len(s.in_shapes[0]) == 2 and len(s.in_shapes[1]) == 2:
        b.one("Gemm", [x, w], outs[0], transA=int(p.transpose_a), transB=int(p.transpose_b))
        return

    def t(v, ndim, flag):
        if not flag:
            return v
        perm = list(range(ndim))
        perm[-2], perm[-1] = perm[-1], perm[-2]
        return b.one("Transpose", [v], perm=perm)
    b.one("MatMul", [t(x, len(s.in_shapes[0]), p.transpose_a), t(w, len(s.in_shapes[1]), p.transpose_b)], outs[0])


def _bias_add(b, s, args, outs):
    x, bias = args[0][1], args[1][1]
    ndim = len(s.in_shapes[0])
    if s.prim.data_format != "NHWC" and ndim > 2:
        bias = b.one("Reshape", [bias, b.const(np.array([-1] + [1] * (ndim - 2), np.int64), "shape")])
    b.one("Add", [x, bias], outs[0])


def _gelu(b, s, args, outs):
    x = args[0][1]
    dt = s.out_dtypes[0].np
    c = lambda v: b.const(np.array(v, dt))  # noqa: E731
    x3 = b.one("Mul", [b.one("Mul", [x, x]), x])
    inner = b.one("Mul", [b.one("Add", [x, b.one("Mul", [x3, c(0.044715)])]), c(math.sqrt(2.0 / math.pi))])
    b.one("Mul", [b.one("Mul", [x, c(0.5)]), b.one("Add", [b.one("Tanh", [inner]), c(1.0)])], outs[0])


def _single_axis(s: OpStep) -> int:
    axes = s.prim._axes(len(s.in_shapes[0]))
    if len(axes) != 1:
        raise OnnxExportError(f"ONNX export: {s.prim.name} over several axes {axes} has no ONNX form")
    return int(axes[0])


def _softmax(op: str) -> Callable:
    def emit(b, s, args, outs):
        b.one(op, [args[0][1]], outs[0], axis=_single_axis(s))
    return emit


def _layernorm(b, s, args, outs):
    p = s.prim
    na, pa = p._axes(len(s.in_shapes[0]))
    if na != pa:
        raise OnnxExportError(f"ONNX export: LayerNorm with begin_norm_axis {na} != begin_params_axis {pa}")
    inv = b.fresh("inv_std")
    b.node("LayerNormalization", [a[1] for a in args], [outs[0], outs[1], inv], axis=int(na), epsilon=float(p.epsilon))
    dt = s.out_dtypes[0].np
    var = b.one("Reciprocal", [b.one("Mul", [inv, inv])])
    b.one("Sub", [var, b.const(np.array(p.epsilon, dt))], outs[2])


def _reshape(b, s, args, outs):
    b.one("Reshape", [args[0][1], b.const(np.array(s.out_shapes[0], np.int64), "shape")], outs[0])


def _flatten(b, s, args, outs):
    b.one("Flatten", [args[0][1]], outs[0], axis=1)


def _transpose(b, s, args, outs):
    b.one("Transpose", [args[0][1]], outs[0], perm=[int(v) for v in s.consts[1]])


def _expand_dims(b, s, args, outs):
    axis = int(s.consts[1]) % (len(s.in_shapes[0]) + 1)
    b.one("Unsqueeze", [args[0][1], b.const(np.array([axis], np.int64), "axes")], outs[0])


def _squeeze(b, s, args, outs):
    axes = s.prim._axes(s.in_shapes[0])
    b.one("Squeeze", [args[0][1], b.const(np.array(axes, np.int64), "axes")], outs[0])


def _concat(b, s, args, outs):
    b.one("Concat", [a[1] for a in args], outs[0], axis=int(s.prim.axis))


def _split(b, s, args, outs):
    p = s.prim
    size = s.out_shapes[0][p.axis % len(s.in_shapes[0])]
    b.node("Split", [args[0][1], b.const(np.array([size] * p.output_num, np.int64), "split")], outs, axis=int(p.axis))


def _gather(b, s, args, outs):
    b.one("Gather", [args[0][1], args[1][1]], outs[0], axis=int(s.consts[2]))


def _cast(b, s, args, outs):
    b.one("Cast", [args[0][1]], outs[0], to=b.onnx_type(s.out_dtypes[0]))


def _reduce(op: str, axes_input: bool) -> Callable:
    def emit(b, s, args, outs):
        from ..ops._reduce import _axes

        axes = list(_axes(s.consts[1], len(s.in_shapes[0])))
        keep = int(bool(s.prim.keep_dims))
        if axes_input:
            b.one(op, [args[0][1], b.const(np.array(axes, np.int64), "axes")], outs[0], keepdims=keep)
        else:
            b.one(op, [args[0][1]], outs[0], axes=axes, keepdims=keep)
    return emit


def _rsqrt(b, s, args, outs):
    b.one("Reciprocal", [b.one("Sqrt", [args[0][1]])], outs[0])


def _square(b, s, args, outs):
    b.one("Mul", [args[0][1], args[0][1]], outs[0])


def _silu(b, s, args, outs):
    b.one("Mul", [args[0][1], b.one("Sigmoid", [args[0][1]])], outs[0])


def _onehot(b, s, args, outs):
    dt = s.out_dtypes[0].np
    on, off = (np.asarray(v.asnumpy() if hasattr(v, "asnumpy") else v, dt) for v in (s.consts[2], s.consts[3]))
    b.one("OneHot", [args[0][1], b.const(np.array(int(s.consts[1]), np.int64), "depth"),
                     b.const(np.stack([off, on]).reshape(2), "values")], outs[0], axis=-1)


def _getitem(b, s, args, outs):
    """Basic indexing: one ``Slice`` over the indexed dims, then ``Reshape`` drops int-indexed dims
    and adds new axes."""
    shape = s.in_shapes[0]
    starts, ends, axes, steps = [], [], [], []
    d = 0
    for e in s.consts[1]:
        if e[0] == "n":
            continue
        if e[0] == "i":
            k = e[1] % shape[d]
            start, stop, step = k, k + 1, 1
        else:
            start, stop, step = slice(e[1], e[2], e[3]).indices(shape[d])
            if step < 0 and stop < 0:
                stop = -(2 ** 63)  # ONNX: before the first element when walking backwards
        starts.append(start), ends.append(stop), axes.append(d), steps.append(step)
        d += 1
    sliced = b.node("Slice", [args[0][1], b.const(np.array(starts, np.int64), "starts"),
                              b.const(np.array(ends, np.int64), "ends"), b.const(np.array(axes, np.int64), "axes"),
                              b.const(np.array(steps, np.int64), "steps")])[0]
    b.one("Reshape", [sliced, b.const(np.array(s.out_shapes[0], np.int64), "shape")], outs[0])


_OPS: dict[str, Callable] = {
    "MatMul": _matmul, "BatchMatMul": _matmul, "Add": _binary("Add"), "Sub": _binary("Sub"), "Mul": _binary("Mul"),
    "RealDiv": _binary("Div"), "Div": _binary("Div"), "Maximum": _binary("Max"), "Minimum": _binary("Min"),
    "Pow": _binary("Pow"), "Less": _binary("Less"), "Greater": _binary("Greater"), "Equal": _binary("Equal"),
    "LessEqual": _binary("LessOrEqual"), "GreaterEqual": _binary("GreaterOrEqual"), "BiasAdd": _bias_add,
    "ReLU": _unary("Relu"), "Sigmoid": _unary("Sigmoid"), "Tanh": _unary("Tanh"), "Exp": _unary("Exp"),
    "Log": _unary("Log"), "Sqrt": _unary("Sqrt"), "Neg": _unary("Neg"), "Abs": _unary("Abs"), "Erf": _unary("Erf"),
    "Identity": _unary("Identity"), "Rsqrt": _rsqrt, "Square": _square, "SiLU": _silu, "GeLU": _gelu,
    "Softmax": _softmax("Softmax"), "LogSoftmax": _softmax("LogSoftmax"), "LayerNorm": _layernorm,
    "Reshape": _reshape, "Flatten": _flatten, "Transpose": _transpose, "ExpandDims": _expand_dims,
    "Squeeze": _squeeze, "Concat": _concat, "Split": _split, "Gather": _gather, "Cast": _cast,
    "ReduceSum": _reduce("ReduceSum", True), "ReduceMean": _reduce("ReduceMean", False),
    "ReduceMax": _reduce("ReduceMax", False), "ReduceMin": _reduce("ReduceMin", False), "OneHot": _onehot,
    "TensorGetItem": _getitem,
}


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
    import os

    from .. import __version__

    check_exportable(tr)
    model = _Builder(tr).build(__version__)
    import onnx

    onnx.checker.check_model(model)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with atomic_output(path) as fh:
        fh.write(model.SerializeToString())
    log.info("export: wrote %s (%d ONNX nodes)", path, len(model.graph.node))
    return path
