"""One small network per op of the MindIR exporter's table (exporter/mindspore_ops.py), with inputs.

Shared by tests/test_export.py (distinfer round trips) and tests/test_mindspore_interop.py
(MindSpore runs them).
"""
from __future__ import annotations

import numpy as np

import distinfer as ms
from distinfer import nn, ops


class _OneOp(nn.Cell):
    """``construct(*xs) = fn(*xs)``: a network of one primitive call."""

    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def construct(self, *xs):
        return self.fn(*xs)


def _rand(*shape, low=-1.0, seed=0):
    return np.random.default_rng(seed + len(shape)).uniform(low, 1.0, shape).astype(np.float32)


def op_cases() -> dict[str, tuple]:
    """``{name: (cell, inputs)}`` covering every op of the exporter's table (every op with a ``mindir`` form)."""
    x, y, pos = _rand(2, 3, 4), _rand(4, seed=1), _rand(2, 3, 4, low=0.1, seed=2)
    ids = np.array([[1, 0, 3], [2, 2, 0]], np.int32)
    cases = {}
    for name in ("Add", "Sub", "Mul", "RealDiv", "Div", "Maximum", "Minimum", "Less", "Greater", "LessEqual",
                 "GreaterEqual", "Equal"):
        cases[name] = (getattr(ops, name)(), [x, y])
    cases["Pow"] = (ops.Pow(), [pos, y])
    for name in ("ReLU", "GeLU", "FastGeLU", "Sigmoid", "SiLU", "Tanh", "Exp", "Neg", "Square", "Abs", "Erf",
                 "Identity"):
        cases[name] = (getattr(ops, name)(), [x])
    for name in ("Log", "Sqrt", "Rsqrt"):
        cases[name] = (getattr(ops, name)(), [pos])
    mul, sub, add, power = ops.Mul(), ops.Sub(), ops.Add(), ops.Pow()
    cases["Mul_scalar"] = (lambda a: mul(a, 0.5), [x])
    cases["Sub_scalar_first"] = (lambda a: sub(1.0, a), [x])
    cases["Add_int_scalar"] = (lambda a: add(a, 2), [x])
    cases["Pow_scalar"] = (lambda a: power(a, 2.0), [pos])
    cast = ops.Cast()
    cases["Cast_float16"] = (lambda a: cast(a, ms.float16), [x])
    cases["Cast_int32"] = (lambda a: cast(a * 10, ms.int32), [x])
    cases["Softmax"] = (ops.Softmax(-1), [x])
    cases["Softmax_axes"] = (ops.Softmax((1,)), [x])
    cases["LogSoftmax"] = (ops.LogSoftmax(1), [x])
    cases["BiasAdd"] = (ops.BiasAdd(), [_rand(2, 3, 4), _rand(3, seed=3)])
    cases["MatMul"] = (ops.MatMul(transpose_b=True), [_rand(2, 4), _rand(3, 4, seed=4)])
    cases["BatchMatMul"] = (ops.BatchMatMul(transpose_a=True), [_rand(2, 4, 3), _rand(2, 4, 5, seed=5)])
    rsum, rmean, rmax, rmin = ops.ReduceSum(True), ops.ReduceMean(), ops.ReduceMax(), ops.ReduceMin(True)
    cases["ReduceSum"] = (lambda a: rsum(a, (1,)), [x])
    cases["ReduceMean"] = (lambda a: rmean(a, 2), [x])
    cases["ReduceMax"] = (lambda a: rmax(a, ()), [x])
    cases["ReduceMin"] = (lambda a: rmin(a, -1), [x])
    cases["ArgMaxWithValue"] = (ops.ArgMaxWithValue(axis=1), [x])
    reshape, transpose, expand = ops.Reshape(), ops.Transpose(), ops.ExpandDims()
    cases["Reshape"] = (lambda a: reshape(a, (4, -1)), [x])
    cases["Flatten"] = (ops.Flatten(), [x])
    cases["Transpose"] = (lambda a: transpose(a, (2, 0, 1)), [x])
    cases["ExpandDims"] = (lambda a: expand(a, 1), [x])
    cases["Squeeze"] = (ops.Squeeze(1), [_rand(2, 1, 4)])
    concat = ops.Concat(1)
    cases["Concat"] = (lambda a, b: concat((a, b)), [x, _rand(2, 2, 4, seed=6)])
    cases["Split"] = (ops.Split(2, 2), [x])
    cases["GetItem_column"] = (lambda a: a[:, 1], [x])
    cases["GetItem_new_axis"] = (lambda a: a[::-1, None, 2, 1:3], [x])
    cases["GetItem_negative"] = (lambda a: a[-1, ::-2, 0], [x])
    gather = ops.Gather()
    cases["Gather"] = (lambda t, i: gather(t, i, 0), [_rand(5, 4), ids])
    onehot = ops.OneHot()
    cases["OneHot"] = (lambda i: onehot(i, 5, 1.0, 0.0), [ids])
    cases["LayerNorm"] = (ops.LayerNorm(-1, -1, 1e-5), [x, _rand(4, seed=7), _rand(4, seed=8)])
    cases["Dropout"] = (ops.Dropout(keep_prob=1.0), [x])
    cases["SparseSoftmaxCrossEntropyWithLogits"] = (ops.SparseSoftmaxCrossEntropyWithLogits(),
                                                    [_rand(3, 5), np.array([1, 0, 4], np.int32)])
    labels = np.eye(5, dtype=np.float32)[[1, 0, 4]]
    cases["SoftmaxCrossEntropyWithLogits"] = (ops.SoftmaxCrossEntropyWithLogits(), [_rand(3, 5), labels])
    return {k: (_OneOp(fn), inputs) for k, (fn, inputs) in cases.items()}


def outputs(out) -> list[np.ndarray]:
    """A network's output(s) as a list of arrays."""
    return [o.asnumpy() for o in (out if isinstance(out, tuple) else (out,))]
