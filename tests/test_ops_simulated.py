"""Every op family's layout rule, kernel and gradient on 1, 2, 4 and 8 simulated ranks, against numpy.

The world is simulated in one process (``simworld``): inputs are sliced per rank by the rule's
layouts, each rank's kernel runs on its blocks, partial results are reduced within their groups
and the outputs assembled with the planner. Gradients are checked the same way against the
op's unsharded gradient. Communication itself is covered by the mpirun tests.
"""
from __future__ import annotations

import math

import numpy as np
import pytest

import distinfer as ms
from distinfer import ops
from distinfer.errors import StrategyError
from distinfer.layout import Layout, replicated
from simworld import backward, forward

RANKS = (1, 2, 4, 8)


def _rand(*shape, positive: bool = False, seed: int = 0) -> np.ndarray:
    rs = np.random.RandomState(sum(shape) + len(shape) + seed)
    arr = rs.standard_normal(shape).astype(np.float32)
    return np.abs(arr) + 0.5 if positive else arr


def _ab(n: int) -> tuple[int, int]:
    """(a, b): a two-way (or whole) split and the rest of the devices, ``a * b == n``."""
    a = min(2, n)
    return a, n // a


def _close(got: np.ndarray, want: np.ndarray, rtol: float = 1e-5, what: str = "") -> None:
    got, want = np.asarray(got), np.asarray(want)
    assert got.shape == want.shape, f"{what}: shape {got.shape} != {want.shape}"
    if want.dtype.kind not in "fc":
        assert np.array_equal(got, want), f"{what}: values differ"
        return
    scale = float(np.abs(want).max()) if want.size else 0.0
    err = float(np.abs(got.astype(np.float64) - want).max()) / (scale or 1.0) if want.size else 0.0
    assert err <= rtol, f"{what}: max relative error {err:.3e} > {rtol:g}"


def _np_softmax(x, axis=-1):
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def _np_gelu(x):
    return 0.5 * x * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x ** 3)))


def _np_erf(x):
    return np.frompyfunc(math.erf, 1, 1)(x).astype(np.float64)


def _split(shape, dims: tuple[int, int], n: int) -> Layout:
    """A layout of ``shape`` with dim ``dims[0]`` split a ways and ``dims[1]`` split b ways."""
    a, b = _ab(n)
    tm = [-1] * len(shape)
    tm[dims[0]], tm[dims[1]] = 1, 0
    return Layout((a, b), tuple(tm), shape)


# Each case: n -> list of (prim, args, strategy, expected outputs (float64 for float32 ops), grad inputs).
# ``grad`` lists the tensor inputs whose gradient is checked against the unsharded op's.
def _matmul(ta, tb):
    def case(n):
        a, b = _ab(n)
        x = _rand(32, 16) if ta else _rand(16, 32)
        w = _rand(24, 32) if tb else _rand(32, 24)
        sx, sw = ((b, a) if ta else (a, b)), ((1, b) if tb else (b, 1))
        want = (x.T if ta else x).astype(np.float64) @ (w.T if tb else w)
        return [(ops.MatMul(ta, tb), [x, w], (sx, sw), [want])]
    return case


def _bmm(ta, tb):
    def case(n):
        a, b = _ab(n)
        x = _rand(4, 16, 8) if ta else _rand(4, 8, 16)
        w = _rand(4, 8, 16) if tb else _rand(4, 16, 8)
        sx, sw = ((a, b, 1) if ta else (a, 1, b)), ((a, 1, b) if tb else (a, b, 1))
        xm, wm = (np.swapaxes(x, -1, -2) if ta else x), (np.swapaxes(w, -1, -2) if tb else w)
        return [(ops.BatchMatMul(ta, tb), [x, w], (sx, sw), [np.matmul(xm.astype(np.float64), wm)])]
    return case


def _binary(prim_cls, fn, y_shape, y_strategy):
    def case(n):
        a, b = _ab(n)
        x, y = _rand(8, 16), _rand(*y_shape, positive=True)
        s = ((a, b), tuple({"a": a, "b": b, "1": 1}[c] for c in y_strategy))
        return [(prim_cls(), [x, y], s, [fn(x.astype(np.float64), y)])]
    return case


def _unary(make, fn, shape=(8, 16), strategy="ab"):
    def case(n):
        a, b = _ab(n)
        x = _rand(*shape)
        s = (tuple({"a": a, "b": b, "1": 1}[c] for c in strategy),)
        return [(make(), [x], s, [fn(x.astype(np.float64))])]
    return case


def _mul_scalar(n):
    a, b = _ab(n)
    x = _rand(4, 8, 16)
    return [(ops.Mul(), [x, 0.25], ((a, b, 1), ()), [x.astype(np.float64) * 0.25])]


def _bias_add(n):
    a, b = _ab(n)
    x, bias = _rand(8, 16, 4), _rand(16)
    return [(ops.BiasAdd(), [x, bias], ((a, b, 1), (b,)), [x.astype(np.float64) + bias[None, :, None]])]


def _follow_cases(n):
    """Shape ops keep the layout their input arrives in: their strategy is that Layout."""
    x, y = _rand(8, 4, 8), _rand(8, 16)
    z, s = _rand(8, 16, 4), _rand(8, 1, 16)
    return [
        (ops.Flatten(), [x], _split(x.shape, (0, 1), n), [x.reshape(8, 32)]),
        (ops.Reshape(), [y, (8, 4, 4)], _split(y.shape, (0, 1), n), [y.reshape(8, 4, 4)]),
        (ops.Reshape(), [y, (128,)], _split(y.shape, (0, 1), n), [y.reshape(128)]),
        (ops.Transpose(), [z, (1, 2, 0)], _split(z.shape, (0, 1), n), [z.transpose(1, 2, 0)]),
        (ops.ExpandDims(), [y, 1], _split(y.shape, (0, 1), n), [y[:, None, :]]),
        (ops.Squeeze(1), [s], _split(s.shape, (0, 2), n), [s[:, 0, :]]),
    ]


def _transpose(n):
    a, b = _ab(n)
    x = _rand(8, 16, 4)
    return [(ops.Transpose(), [x, (2, 0, 1)], ((a, b, 1),), [x.transpose(2, 0, 1)])]


def _gather(n):
    a, b = _ab(n)
    table = _rand(32, 8)
    ids = np.random.RandomState(2).randint(0, 32, size=(8, 4)).astype(np.int32)
    return [(ops.Gather(), [table, ids, 0], ((b, 1), (a, 1)), [table[ids]]),
            (ops.Gather(), [table, ids, 0], ((1, b), (a, 1)), [table[ids]])]


def _layer_norm(n):
    a, b = _ab(n)
    x, g, beta = _rand(8, 4, 16), _rand(16) + 1, _rand(16, seed=1)
    x64 = x.astype(np.float64)
    mu, v = x64.mean(-1, keepdims=True), x64.var(-1, keepdims=True)
    return [(ops.LayerNorm(-1, -1, 1e-5), [x, g, beta], ((a, b, 1), (1,), (1,)),
             [(x64 - mu) / np.sqrt(v + 1e-5) * g + beta, mu, v])]


def _reduce(prim_cls, fn):
    def case(n):
        a, b = _ab(n)
        x = _rand(8, 16)
        x64 = x.astype(np.float64)
        return [(prim_cls(False), [x, 1], ((a, b),), [fn(x64, axis=1)]),
                (prim_cls(True), [x, 1], ((a, b),), [fn(x64, axis=1, keepdims=True)]),
                (prim_cls(False), [x, ()], ((a, b),), [fn(x64)])]
    return case


def _cast(n):
    a, b = _ab(n)
    x = _rand(8, 16) * 10
    return [(ops.Cast(), [x, ms.float16], ((a, b),), [x.astype(np.float16)]),
            (ops.Cast(), [x, ms.int32], ((a, b),), [x.astype(np.int32)])]


def _concat(n):
    a, b = _ab(n)
    x, y, u, v = _rand(8, 4), _rand(8, 12), _rand(4, 16), _rand(12, 16)

    return [(ops.Concat(1), [x, y], ((a, 1), (a, 1)), [np.concatenate([x, y], 1).astype(np.float64)]),
            (ops.Concat(0), [u, v], ((1, b), (1, b)), [np.concatenate([u, v], 0).astype(np.float64)])]


def _split_op(n):
    a, b = _ab(n)
    x = _rand(8, 4, 12)
    return [(ops.Split(2, 3), [x], ((a, b, 1),), [p.astype(np.float64) for p in np.split(x, 3, axis=2)])]


def _one_hot(n):
    a, b = _ab(n)
    ids = np.random.RandomState(4).randint(0, 16, size=(8,)).astype(np.int32)
    on, off = ms.Tensor(np.float32(2.0)), ms.Tensor(np.float32(-1.0))
    prim = ops.OneHot().shard(((a, b), (), ()))
    want = np.where(ids[:, None] == np.arange(16), 2.0, -1.0).astype(np.float32)
    return [(prim, [ids, 16, on, off], ((a,),), [want])]


def _argmax(n):
    a, b = _ab(n)
    x = _rand(8, 16, 4)
    return [(ops.ArgMaxWithValue(1), [x], ((a, 1, b),), [np.argmax(x, 1).astype(np.int32), x.max(1)])]


def _getitem(n):
    """Indexing keeps untouched dims split and makes cut dims whole."""
    from distinfer.ops._shape import encode_index

    x = _rand(8, 16, 4)
    lay = _split(x.shape, (0, 1), n)
    return [(ops.TensorGetItem(), [x, encode_index(index, 3)], lay, [x[index]])
            for index in ((slice(None), 3), (slice(2, 6), None, Ellipsis, 1), (-1,))]


def _sparse_ce(n):
    a, _ = _ab(n)
    logits = _rand(8, 10)
    labels = np.random.RandomState(5).randint(0, 10, size=8).astype(np.int32)
    x = logits.astype(np.float64)
    logp = x - x.max(1, keepdims=True)
    logp -= np.log(np.exp(logp).sum(1, keepdims=True))
    return [(ops.SparseSoftmaxCrossEntropyWithLogits(), [logits, labels], ((a, 1), (a,)),
             [np.asarray(-logp[np.arange(8), labels].mean())])]


CASES = {
    "MatMul": _matmul(False, False), "MatMul_transpose_a": _matmul(True, False),
    "MatMul_transpose_b": _matmul(False, True), "MatMul_transpose_ab": _matmul(True, True),
    "BatchMatMul": _bmm(False, False), "BatchMatMul_transpose_a": _bmm(True, False),
    "BatchMatMul_transpose_b": _bmm(False, True), "BatchMatMul_transpose_ab": _bmm(True, True),
    "Add": _binary(ops.Add, np.add, (16,), "b"), "Sub": _binary(ops.Sub, np.subtract, (8, 16), "ab"),
    "Mul": _binary(ops.Mul, np.multiply, (8, 1), "a1"), "Mul_scalar": _mul_scalar,
    "RealDiv": _binary(ops.RealDiv, np.divide, (1, 16), "1b"), "BiasAdd": _bias_add,
    "Maximum": _binary(ops.Maximum, np.maximum, (8, 16), "ab"),
    "ReLU": _unary(ops.ReLU, lambda x: np.maximum(x, 0)), "GeLU": _unary(ops.GeLU, _np_gelu),
    "Erf": _unary(ops.Erf, _np_erf), "Tanh": _unary(ops.Tanh, np.tanh), "Exp": _unary(ops.Exp, np.exp),
    "Sigmoid": _unary(ops.Sigmoid, lambda x: 1 / (1 + np.exp(-x))),
    "Softmax": _unary(ops.Softmax, _np_softmax, (8, 4, 16), "ab1"),
    "LogSoftmax": _unary(ops.LogSoftmax, lambda x: np.log(_np_softmax(x)), (8, 4, 16), "ab1"),
    "Softmax_axis1": _unary(lambda: ops.Softmax(1), lambda x: _np_softmax(x, 1), (8, 16, 4), "a1b"),
    "follow_input": _follow_cases, "Transpose": _transpose, "Gather": _gather, "LayerNorm": _layer_norm,
    "ReduceSum": _reduce(ops.ReduceSum, np.sum), "ReduceMean": _reduce(ops.ReduceMean, np.mean),
    "ReduceMax": _reduce(ops.ReduceMax, np.max), "ReduceMin": _reduce(ops.ReduceMin, np.min), "Cast": _cast,
    "Concat": _concat, "Split": _split_op, "OneHot": _one_hot, "ArgMaxWithValue": _argmax, "TensorGetItem": _getitem,
    "SparseSoftmaxCrossEntropyWithLogits": _sparse_ce,
}


@pytest.mark.parametrize("n", RANKS)
@pytest.mark.parametrize("name", sorted(CASES))
def test_op_matches_numpy(name: str, n: int) -> None:
    for i, (prim, args, strategy, wants) in enumerate(CASES[name](n)):
        run = forward(prim, args, strategy, n)
        assert len(run.outputs) == len(wants)
        for j, (got, want) in enumerate(zip(run.outputs, wants)):
            want = np.asarray(want)
            # float64 references are numpy's exact answer for a float32 op; others are the op's dtype.
            want_dtype = np.float32 if want.dtype == np.float64 else want.dtype
            assert got.dtype == want_dtype, f"{name} case {i} output {j}: dtype {got.dtype} != {want_dtype}"
            _close(got, want, 1e-3 if got.dtype == np.float16 else 1e-5, f"{name} case {i} output {j} on {n} ranks")


_NO_GRAD = {"Cast", "OneHot", "ArgMaxWithValue", "Maximum", "ReduceMax", "ReduceMin"}


@pytest.mark.parametrize("n", (2, 4, 8))
@pytest.mark.parametrize("name", sorted(set(CASES) - _NO_GRAD))
def test_op_gradient_matches_the_unsharded_gradient(name: str, n: int) -> None:
    """The sharded local gradients, reduced as autograd reduces them, equal the one-rank gradient."""
    for i, (prim, args, strategy, wants) in enumerate(CASES[name](n)):
        douts = [_rand(*np.shape(w), seed=7 + j).astype(np.asarray(w).dtype if np.asarray(w).dtype != np.float64
                                                          else np.float32) for j, w in enumerate(wants)]
        sharded = forward(prim, args, strategy, n)
        whole = forward(prim, args, None if not isinstance(strategy, Layout) else replicated(strategy.shape, 1), 1)
        got = backward(prim, sharded, douts)
        want = backward(prim, whole, douts)
        for k, (g, w) in enumerate(zip(got, want)):
            assert (g is None) == (w is None), f"{name} case {i} input {k}: gradient presence differs"
            if g is not None:
                _close(g, w.astype(np.float64), 1e-5, f"{name} case {i} input {k} gradient on {n} ranks")


def test_bad_strategies_are_refused_by_the_rule() -> None:
    x, w = _rand(8, 6), _rand(6, 4)
    with pytest.raises(StrategyError, match="contraction dim is split 2 ways in input 0 but 1 ways"):
        forward(ops.MatMul(), [x, w], ((1, 2), (1, 1)), 2)
    with pytest.raises(StrategyError, match="not divisible by 4"):
        forward(ops.Add(), [x, x], ((1, 4), (1, 4)), 4)


def test_the_simulator_catches_a_wrong_rule() -> None:
    """A rule that claims the wrong output layout gives replicas that disagree (the check can fail)."""
    class WrongMatMul(ops.MatMul):
        def rule(self, strategy, shapes, out_shapes, n, consts):
            import dataclasses
            lay = super().rule(strategy, shapes, out_shapes, n, consts)
            return dataclasses.replace(lay, partial=((),))  # forgets the pending sum of a split k

    with pytest.raises(AssertionError):
        forward(WrongMatMul(), [_rand(4, 8), _rand(8, 4)], ((1, 2), (2, 1)), 2)
