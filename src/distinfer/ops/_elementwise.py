"""Elementwise ops (with numpy broadcasting), activations, softmax and BiasAdd.

Layout rule (MindSpore's ArithmeticBase): inputs are right-aligned; the device matrix is the
per-dim strategy of the broadcast output; a dim of size 1 cannot be split; dims that exist in
several inputs with the same size must be split the same way. The default strategy splits
dim 0 of every input whose broadcast-expanded dim 0 is not 1.

ONNX: most ops are one ONNX operator over their arguments (``onnx_op``); the others write a few
elementary operators (``to_onnx``).
"""
from __future__ import annotations

import math

import numpy as np

from .. import dtype as mstype
from .._cpu import flushing
from ..errors import OnnxExportError, StrategyError
from . import _special
from .mindspore_form import FORMATS, Input, MsOp, axes, from_type_id, one_axis, type_id
from .primitive import Primitive, batch_split, build

__all__ = ["Add", "Sub", "Mul", "RealDiv", "Div", "Maximum", "Minimum", "Pow", "Less", "Greater", "LessEqual",
           "GreaterEqual", "Equal", "ReLU", "GeLU", "Sigmoid", "Tanh", "Exp", "Log", "Sqrt", "Rsqrt", "Neg",
           "Square", "Abs", "Cast", "Softmax", "LogSoftmax", "BiasAdd", "Identity", "FastGeLU", "SiLU", "Erf"]


def _result_dtype(dtypes, consts):
    arrays = [np.empty(0, dtype=mstype.get_dtype(d).np) for d in dtypes]
    return mstype.from_numpy(np.result_type(*arrays, *[c for c in consts.values() if isinstance(c, (int, float))]))


class _Elementwise(Primitive):
    """n-ary broadcasting op; ``fn`` computes on local blocks (and Python scalars in place)."""

    output_bool = False
    mindir = MsOp(2)

    def infer(self, shapes, dtypes, consts):
        try:
            out = tuple(np.broadcast_shapes(*shapes))
        except ValueError:
            raise ValueError(f"{self.name}: input shapes {[tuple(s) for s in shapes]} cannot be broadcast together") from None
        dt = mstype.bool_ if self.output_bool else _result_dtype(dtypes, consts)
        return [(out, dt)]

    def default_strategy(self, shapes, n, consts):
        out = np.broadcast_shapes(*shapes)
        split = batch_split(out[0], n) if out else 1
        return tuple(tuple([split if len(s) == len(out) and s[0] == out[0] and s[0] != 1 else 1]
                           + [1] * (len(s) - 1)) if s else () for s in shapes)

    def check_extra(self, strategy, shapes, consts) -> None:
        """Op-specific constraints (e.g. softmax axis unsplit)."""

    def rule(self, strategy, shapes, out_shapes, n, consts):
        out = out_shapes[0]
        k = len(out)
        out_strat = [1] * k
        for i, (s, shape) in enumerate(zip(strategy, shapes)):
            for t, v in enumerate(s):
                d = k - len(shape) + t
                if shape[t] == 1 and v != 1:
                    raise StrategyError(f"{self.name}: dim {t} of input {i} (shape {tuple(shape)}) has size 1 and is "
                                        f"broadcast, so it cannot be split {v} ways (strategy {strategy}, {n} devices)")
                out_strat[d] = max(out_strat[d], v)
        for i, (s, shape) in enumerate(zip(strategy, shapes)):
            for t, v in enumerate(s):
                d = k - len(shape) + t
                if shape[t] != 1 and v != out_strat[d]:
                    raise StrategyError(
                        f"{self.name}: output dim {d} is split {out_strat[d]} ways by one input but input {i} "
                        f"(shape {tuple(shape)}) splits it {v} ways; inputs must split shared dims equally "
                        f"(strategy {strategy}, shapes {[tuple(x) for x in shapes]}, {n} devices)")
        self.check_extra(strategy, shapes, consts)
        in_dims = [[k - len(shape) + t if v > 1 else -1 for t, v in enumerate(s)]
                   for s, shape in zip(strategy, shapes)]
        out_dims = [d if out_strat[d] > 1 else -1 for d in range(k)]
        return build(n, out_strat or [1], in_dims, shapes, [out_dims], out_shapes, op=self.name)

    def fn(self, *args):
        raise NotImplementedError(self.name)

    def kernel(self, ctx, *xs):
        args = _merge(ctx, xs)
        return np.asarray(self.fn(*args)).astype(ctx.out_dtypes[0].np, copy=False)


def _merge(ctx, xs):
    """Tensor blocks and constant scalars back in call order."""
    args, it = [], iter(xs)
    for i in range(len(xs) + len(ctx.consts)):
        args.append(ctx.consts[i] if i in ctx.consts else next(it))
    return args


def _unbroadcast(grad: np.ndarray, shape) -> np.ndarray:
    """Sum ``grad`` down to ``shape`` (the local shape of a broadcast input)."""
    if grad.shape == tuple(shape):
        return grad
    extra = grad.ndim - len(shape)
    g = grad.sum(axis=tuple(range(extra))) if extra else grad
    axes = tuple(i for i, s in enumerate(shape) if s == 1 and g.shape[i] != 1)
    return g.sum(axis=axes, keepdims=True) if axes else g


def _onnx_scalar(g, value: float) -> str:
    """An ONNX initializer holding ``value`` in the op's output dtype."""
    return g.const(np.array(value, g.out_dtypes[0].np))


class Add(_Elementwise):
    onnx_op = "Add"

    def fn(self, a, b):
        return np.add(a, b)

    def bprop(self, ctx, xs, out, douts):
        g = douts[0]
        return [_unbroadcast(g, x.shape) for x in xs]


class Sub(_Elementwise):
    onnx_op = "Sub"

    def fn(self, a, b):
        return np.subtract(a, b)

    def bprop(self, ctx, xs, out, douts):
        g = douts[0]
        signs = [1.0, -1.0]
        tensor_pos = [i for i in range(len(xs) + len(ctx.consts)) if i not in ctx.consts]
        return [_unbroadcast(g * signs[p], x.shape) for p, x in zip(tensor_pos, xs)]


class Mul(_Elementwise):
    onnx_op = "Mul"

    def fn(self, a, b):
        return np.multiply(a, b)

    def bprop(self, ctx, xs, out, douts):
        a, b = _merge(ctx, xs)
        g = douts[0]
        tensor_pos = [i for i in range(2) if i not in ctx.consts]
        grads = {0: g * b, 1: g * a}
        return [_unbroadcast(np.asarray(grads[p]), x.shape) for p, x in zip(tensor_pos, xs)]


class RealDiv(_Elementwise):
    onnx_op = "Div"

    def fn(self, a, b):
        return np.divide(a, b)

    def bprop(self, ctx, xs, out, douts):
        a, b = _merge(ctx, xs)
        g = douts[0]
        tensor_pos = [i for i in range(2) if i not in ctx.consts]
        grads = {0: g / b, 1: -g * a / (np.asarray(b) * b)}
        return [_unbroadcast(np.asarray(grads[p]), x.shape) for p, x in zip(tensor_pos, xs)]


class Div(RealDiv):
    pass


class Maximum(_Elementwise):
    onnx_op = "Max"

    def fn(self, a, b):
        return np.maximum(a, b)


class Minimum(_Elementwise):
    onnx_op = "Min"

    def fn(self, a, b):
        return np.minimum(a, b)


class Pow(_Elementwise):
    onnx_op = "Pow"

    def fn(self, a, b):
        return np.power(a, b)

    def bprop(self, ctx, xs, out, douts):
        a, b = _merge(ctx, xs)
        g = douts[0]
        tensor_pos = [i for i in range(2) if i not in ctx.consts]
        grads = {0: g * b * np.power(a, np.asarray(b) - 1), 1: g * out * np.log(a)}
        return [_unbroadcast(np.asarray(grads[p]), x.shape) for p, x in zip(tensor_pos, xs)]


class _Compare(_Elementwise):
    output_bool = True

    def bprop(self, ctx, xs, out, douts):
        return [None for _ in xs]


class Less(_Compare):
    onnx_op = "Less"

    def fn(self, a, b):
        return np.less(a, b)


class Greater(_Compare):
    onnx_op = "Greater"

    def fn(self, a, b):
        return np.greater(a, b)


class LessEqual(_Compare):
    onnx_op = "LessOrEqual"

    def fn(self, a, b):
        return np.less_equal(a, b)


class GreaterEqual(_Compare):
    onnx_op = "GreaterOrEqual"

    def fn(self, a, b):
        return np.greater_equal(a, b)


class Equal(_Compare):
    onnx_op = "Equal"

    def fn(self, a, b):
        return np.equal(a, b)


# ------------------------------------------------------------------------------ unary
class _Unary(_Elementwise):
    tensor_args = (0,)
    mindir = MsOp(1)

    def grad(self, x, y, g):
        raise NotImplementedError(f"{self.name} has no gradient")

    def bprop(self, ctx, xs, out, douts):
        return [self.grad(xs[0], out, douts[0])]


class Identity(_Unary):
    onnx_op = "Identity"

    def fn(self, x):
        return x.copy()

    def grad(self, x, y, g):
        return g


class ReLU(_Unary):
    amp = "white"
    onnx_op = "Relu"

    def fn(self, x):
        return np.maximum(x, np.zeros((), x.dtype))

    def grad(self, x, y, g):
        return g * (x > 0)


class GeLU(_Unary):
    """GeLU with the tanh approximation, as MindSpore's ``ops.GeLU``; computed as ``x * sigmoid(2u)``
    in float32 (see :func:`distinfer.ops._special.gelu_tanh`)."""

    def kernel(self, ctx, x):
        y, ctx.saved["exp_m2u"] = _special.gelu_tanh(x)
        return y.astype(ctx.out_dtypes[0].np, copy=False)

    def bprop(self, ctx, xs, out, douts):
        x, g, e = xs[0], douts[0], ctx.saved["exp_m2u"]
        y = out.astype(e.dtype, copy=False)
        return [_special.gelu_tanh_grad(x, y, e, g).astype(x.dtype, copy=False)]

    def to_onnx(self, g):
        (x,), c = g.inputs, lambda v: _onnx_scalar(g, v)  # noqa: E731
        x3 = g.one("Mul", [g.one("Mul", [x, x]), x])
        inner = g.one("Mul", [g.one("Add", [x, g.one("Mul", [x3, c(0.044715)])]), c(math.sqrt(2.0 / math.pi))])
        g.one("Mul", [g.one("Mul", [x, c(0.5)]), g.one("Add", [g.one("Tanh", [inner]), c(1.0)])], g.outputs[0])


class Erf(_Unary):
    """``Erf()(x)``: the Gauss error function elementwise, as MindSpore's ``ops.Erf``.

    >>> import numpy as np, distinfer as ms
    >>> ms.ops.Erf()(ms.Tensor(np.array([0.0, 0.5, 2.0]))).asnumpy().round(7).tolist()
    [0.0, 0.5204999, 0.9953223]
    """

    onnx_op = "Erf"

    def fn(self, x):
        return _special.erf(x)

    def grad(self, x, y, g):
        return _special.erf_grad(x, g).astype(x.dtype, copy=False)


class FastGeLU(_Unary):
    """``x / (1 + exp(-1.702 |x|)) * exp(0.851 (x - |x|))``, as MindSpore's ``ops.FastGeLU``, in float32
    for float32 blocks."""

    def fn(self, x):
        xw = x.astype(_special.work_dtype(x.dtype), copy=False)
        a = np.abs(xw)
        den = np.exp(a * xw.dtype.type(-1.702))
        den += 1
        num = np.subtract(xw, a, out=a)
        num *= xw.dtype.type(0.851)
        np.exp(num, out=num)
        num *= xw
        num /= den
        return num

    def to_onnx(self, g):
        (x,), c = g.inputs, lambda v: _onnx_scalar(g, v)  # noqa: E731
        a = g.one("Abs", [x])
        den = g.one("Add", [c(1.0), g.one("Exp", [g.one("Mul", [a, c(-1.702)])])])
        num = g.one("Mul", [x, g.one("Exp", [g.one("Mul", [g.one("Sub", [x, a]), c(0.851)])])])
        g.one("Div", [num, den], g.outputs[0])


class Sigmoid(_Unary):
    onnx_op = "Sigmoid"

    def fn(self, x):
        return (1.0 / (1.0 + np.exp(-x))).astype(x.dtype)

    def grad(self, x, y, g):
        return g * y * (1 - y)


class SiLU(_Unary):
    def fn(self, x):
        return (x / (1.0 + np.exp(-x))).astype(x.dtype)

    def to_onnx(self, g):
        g.one("Mul", [g.inputs[0], g.one("Sigmoid", g.inputs)], g.outputs[0])


class Tanh(_Unary):
    onnx_op = "Tanh"

    def fn(self, x):
        return np.tanh(x)

    def grad(self, x, y, g):
        return g * (1 - y * y)


class Exp(_Unary):
    onnx_op = "Exp"

    @flushing  # results below float32's normal range are zero, as in MindSpore's kernel
    def fn(self, x):
        return np.exp(x)

    def grad(self, x, y, g):
        return g * y


class Log(_Unary):
    mindir = MsOp(1, attrs=(("base", -1.0), ("scale", 1.0), ("shift", 0.0), ("cust_aicpu", "Log")))
    onnx_op = "Log"

    def fn(self, x):
        return np.log(x)

    def grad(self, x, y, g):
        return g / x


class Sqrt(_Unary):
    onnx_op = "Sqrt"

    def fn(self, x):
        return np.sqrt(x)

    def grad(self, x, y, g):
        return g * 0.5 / y


class Rsqrt(_Unary):
    def fn(self, x):
        return (1.0 / np.sqrt(x)).astype(x.dtype)

    def grad(self, x, y, g):
        return g * -0.5 * y ** 3

    def to_onnx(self, g):
        g.one("Reciprocal", [g.one("Sqrt", g.inputs)], g.outputs[0])


class Neg(_Unary):
    onnx_op = "Neg"

    def fn(self, x):
        return np.negative(x)

    def grad(self, x, y, g):
        return -g


class Square(_Unary):
    def fn(self, x):
        return np.square(x)

    def grad(self, x, y, g):
        return g * 2 * x

    def to_onnx(self, g):
        g.one("Mul", g.inputs * 2, g.outputs[0])


class Abs(_Unary):
    onnx_op = "Abs"

    def fn(self, x):
        return np.abs(x)

    def grad(self, x, y, g):
        return g * np.sign(x)


class Cast(_Unary):
    """``Cast()(x, dtype)``."""

    mindir = MsOp(1, (Input("dtype", arg=1, encode=type_id, decode=from_type_id),))

    def infer(self, shapes, dtypes, consts):
        return [(tuple(shapes[0]), mstype.get_dtype(consts[1]))]

    def fn(self, x, dtype):
        return x.astype(mstype.get_dtype(dtype).np)

    def bprop(self, ctx, xs, out, douts):
        return [douts[0].astype(xs[0].dtype)]

    def to_onnx(self, g):
        g.one("Cast", g.inputs, g.outputs[0], to=g.onnx_dtype(g.out_dtypes[0]))


class _AxisUnsplit(_Unary):
    """Elementwise in layout, but the op's axis must stay whole on every rank."""

    def __init__(self, axis=-1) -> None:
        super().__init__()
        self.axis = axis if isinstance(axis, int) else tuple(axis)
        self.attrs["axis"] = self.axis

    def _axes(self, ndim):
        axes = (self.axis,) if isinstance(self.axis, int) else self.axis
        return tuple(a % ndim for a in axes)

    def check_extra(self, strategy, shapes, consts):
        for a in self._axes(len(shapes[0])):
            if strategy[0][a] != 1:
                raise StrategyError(f"{self.name}: axis {a} is the {self.name} axis and cannot be split, but the "
                                    f"strategy {strategy} splits it {strategy[0][a]} ways (shape {tuple(shapes[0])})")

    def default_strategy(self, shapes, n, consts):
        s = list(super().default_strategy(shapes, n, consts)[0])
        for a in self._axes(len(shapes[0])):
            s[a] = 1
        return (tuple(s),)

    def to_onnx(self, g):
        axes = self._axes(len(g.in_shapes[0]))
        if len(axes) != 1:
            raise OnnxExportError(f"ONNX export: {self.name} over several axes {axes} has no ONNX form")
        g.one(self._onnx_name, g.inputs, g.outputs[0], axis=int(axes[0]))


class Softmax(_AxisUnsplit):
    mindir = MsOp(1, (Input("axis", attr="axis", encode=axes),))

    _onnx_name = "Softmax"

    @flushing  # probabilities that underflow are zero, as in MindSpore's kernel
    def fn(self, x):
        axes = self._axes(x.ndim)
        e = np.subtract(x, x.max(axis=axes, keepdims=True), dtype=_special.work_dtype(x.dtype))
        np.exp(e, out=e)
        e /= e.sum(axis=axes, keepdims=True)
        return e

    @flushing
    def grad(self, x, y, g):
        axes = self._axes(x.ndim)
        gy = g * y
        dx = np.subtract(g, gy.sum(axis=axes, keepdims=True), out=gy)
        dx *= y
        return dx


class LogSoftmax(_AxisUnsplit):
    mindir = MsOp(1, (Input("axis", attr="axis", encode=one_axis),))

    _onnx_name = "LogSoftmax"

    @flushing
    def fn(self, x):
        axes = self._axes(x.ndim)
        shifted = np.subtract(x, x.max(axis=axes, keepdims=True), dtype=_special.work_dtype(x.dtype))
        lse = np.log(np.exp(shifted).sum(axis=axes, keepdims=True))
        shifted -= lse
        return shifted

    @flushing
    def grad(self, x, y, g):
        axes = self._axes(x.ndim)
        dx = np.exp(y)
        dx *= g.sum(axis=axes, keepdims=True)
        np.subtract(g, dx, out=dx)
        return dx


class BiasAdd(Primitive):
    """``BiasAdd(data_format="NCHW")(x, bias)``: bias added along dim 1 (the channel)."""

    mindir = MsOp(2, (Input("data_format", attr="data_format", encode=lambda v, call: FORMATS.index(v),
                            decode=lambda v: FORMATS[v]),))

    def __init__(self, data_format: str = "NCHW") -> None:
        super().__init__()
        self.data_format = data_format
        self.attrs["data_format"] = data_format

    def _channel(self, ndim):
        return ndim - 1 if self.data_format == "NHWC" else 1

    def infer(self, shapes, dtypes, consts):
        x, b = shapes
        c = self._channel(len(x))
        if len(b) != 1 or len(x) < 2 or x[c] != b[0]:
            raise ValueError(f"BiasAdd: bias of shape {tuple(b)} does not match channel dim {c} of input {tuple(x)}")
        return [(tuple(x), dtypes[0])]

    def default_strategy(self, shapes, n, consts):
        x = shapes[0]
        return (tuple([batch_split(x[0], n)] + [1] * (len(x) - 1)), (1,))

    def rule(self, strategy, shapes, out_shapes, n, consts):
        sx, sb = strategy
        c = self._channel(len(shapes[0]))
        if sb[0] != sx[c]:
            raise StrategyError(f"BiasAdd: the bias is split {sb[0]} ways but channel dim {c} of the input is split "
                                f"{sx[c]} ways (strategy {strategy}, shapes {[tuple(s) for s in shapes]}, {n} devices)")
        x_dims = [d if v > 1 else -1 for d, v in enumerate(sx)]
        return build(n, sx, [x_dims, [x_dims[c]]], shapes, [x_dims], out_shapes, op=self.name)

    def kernel(self, ctx, x, b):
        shape = [1] * x.ndim
        shape[self._channel(x.ndim)] = -1
        return x + b.reshape(shape)

    def bprop(self, ctx, xs, out, douts):
        g = douts[0]
        c = self._channel(g.ndim)
        return [g, g.sum(axis=tuple(a for a in range(g.ndim) if a != c))]

    def to_onnx(self, g):
        x, bias = g.inputs
        ndim = len(g.in_shapes[0])
        if self.data_format != "NHWC" and ndim > 2:  # the channel is dim 1: shape the bias (C, 1, ..., 1)
            bias = g.one("Reshape", [bias, g.const(np.array([-1] + [1] * (ndim - 2), np.int64), "shape")])
        g.one("Add", [x, bias], g.outputs[0])
