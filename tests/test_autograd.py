"""Local gradients (``Primitive.bprop``) against central finite differences, in float64.

The distributed backward only redistributes what these local rules produce, so checking them in
one process, together with the MPI parity tests, covers the gradient of every sharded op.
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

import distinfer as ms
from distinfer import nn, ops

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))

RNG = np.random.RandomState(3)


def _param(shape, name, positive=False):
    a = RNG.rand(*shape) + 0.5 if positive else RNG.randn(*shape)
    return ms.Parameter(ms.Tensor(a.astype(np.float64)), name=name)


def _numeric(f, p, eps=1e-6):
    arr = p.asnumpy()
    out = np.zeros_like(arr)
    for i in np.ndindex(arr.shape):
        old = arr[i]
        arr[i] = old + eps
        hi = float(f().asnumpy())
        arr[i] = old - eps
        lo = float(f().asnumpy())
        arr[i] = old
        out[i] = (hi - lo) / (2 * eps)
    return out


def _check(f, params):
    _, grads = ms.value_and_grad(lambda: f(), None, params)()
    for p, g in zip(params, grads):
        np.testing.assert_allclose(g.asnumpy(), _numeric(f, p), rtol=1e-5, atol=1e-7, err_msg=p.name)


def _sum(x):
    return ops.ReduceSum()(ops.Mul()(x, x), ())


CASES = {
    "matmul_tb": lambda a, b: ops.MatMul(False, True)(a, b),
    "matmul_ta": lambda a, b: ops.MatMul(True, False)(ops.Reshape()(b, (2, 4)), ops.Reshape()(a, (2, 6))),
    "batchmatmul_tb": lambda a, b: ops.BatchMatMul(transpose_b=True)(ops.Reshape()(a, (1, 3, 4)), ops.Reshape()(b, (1, 2, 4))),
    "add_sub_mul_div": lambda a, b: ops.RealDiv()(ops.Mul()(ops.Sub()(a, 1.0), ops.Add()(a, a)), ops.Add()(a, 3.0)),
    "softmax_logsoftmax": lambda a, b: ops.Add()(ops.Softmax()(a), ops.LogSoftmax(0)(a)),
    "gelu_relu_tanh_sigmoid": lambda a, b: ops.Add()(ops.GeLU()(a), ops.Mul()(ops.ReLU()(a), ops.Sigmoid()(ops.Tanh()(a)))),
    "erf_gelu_exact": lambda a, b: ops.Add()(ops.gelu(a), ops.Erf()(ops.Mul()(a, 0.7))),
    "transpose_reshape_expand_squeeze": lambda a, b: ops.Squeeze(0)(ops.ExpandDims()(ops.Reshape()(ops.Transpose()(a, (1, 0)), (2, 6)), 0)),
    "getitem": lambda a, b: ops.Add()(a[1:, None, 2], a[0]),
    "concat_split": lambda a, b: ops.Split(1, 2)(ops.Concat(1)((a, a)))[1],
    "reduce_mean_max": lambda a, b: ops.Add()(ops.ReduceMean(True)(a, 1), ops.ReduceSum(True)(a, 0)),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_op_gradients(case):
    a, b = _param((3, 4), "a"), _param((2, 4), "b")
    fn = CASES[case]
    _check(lambda: _sum(fn(a, b)), [a, b] if case.startswith(("matmul", "batch")) else [a])


def test_layernorm_gather_bias_gradients():
    x, g, be = _param((4, 5), "x"), _param((5,), "g", positive=True), _param((5,), "be")
    table, bias = _param((6, 5), "table"), _param((5,), "bias")
    ids = ms.Tensor(np.array([[0, 3], [5, 3]], np.int32))

    def f():
        y, _, _ = ops.LayerNorm(1, 1, 1e-5)(x, g, be)
        e = ops.Reshape()(ops.Gather()(table, ids, 0), (4, 5))
        return _sum(ops.BiasAdd()(ops.Mul()(y, e), bias))

    _check(f, [x, g, be, table, bias])


def test_sparse_cross_entropy_gradient():
    logits = _param((4, 3), "logits")
    labels = ms.Tensor(np.array([0, 2, 1, 2], np.int32))
    _check(lambda: nn.CrossEntropyLoss()(logits, labels), [logits])
    dense = ms.Tensor(np.eye(3)[[0, 2, 1, 2]])
    _check(lambda: nn.SoftmaxCrossEntropyWithLogits(reduction="mean")(logits, dense), [logits])


def _gpt_grads(float64: bool):
    from gpt_block import GPTBlock

    ms.set_seed(5)
    net = GPTBlock(vocab=16, hidden=8, heads=2, seq=4)
    if float64:  # before first use: the lazy initial values are made in float64
        for p in net.get_parameters():
            p.set_dtype(ms.float64)
    rng = np.random.RandomState(3)
    ids = ms.Tensor(rng.randint(0, 16, (2, 4)).astype(np.int32))
    labels = ms.Tensor(rng.randint(0, 16, (8,)).astype(np.int32))
    loss_fn = nn.CrossEntropyLoss()

    def f():
        return loss_fn(ops.Reshape()(net(ids), (8, 16)), labels)

    params = net.trainable_params()
    _, grads = ms.value_and_grad(lambda: f(), None, params)()
    return f, params, [g.asnumpy() for g in grads]


def test_gpt_block_gradient_spot_check():
    """Sampled entries of every GPT-block parameter's gradient against central finite differences in
    float64 (in float32 the LayerNorm gradients, all below 2e-3, sat inside the old absolute tolerance),
    and the float32 gradients against the float64 ones."""
    f, params, grads = _gpt_grads(float64=True)
    for p, g in zip(params, grads):
        assert g.dtype == np.float64, p.name
        arr = p.asnumpy()
        for k in RNG.choice(arr.size, min(6, arr.size), replace=False):
            i = np.unravel_index(k, arr.shape)
            old = arr[i]
            arr[i] = old + 1e-6
            hi = float(f().asnumpy())
            arr[i] = old - 1e-6
            lo = float(f().asnumpy())
            arr[i] = old
            assert abs((hi - lo) / 2e-6 - g[i]) <= 1e-8 + 1e-5 * abs(g[i]), (p.name, i, (hi - lo) / 2e-6, g[i])
    _, params32, grads32 = _gpt_grads(float64=False)
    for p, g32, g64 in zip(params32, grads32, grads):
        assert g32.dtype == np.float32, p.name
        np.testing.assert_allclose(g32, g64, rtol=0, atol=1e-5 * np.abs(g64).max(), err_msg=p.name)


def test_value_and_grad_signatures():
    w = ms.Parameter(ms.Tensor(np.ones((2, 2))), name="w")
    x = ms.Tensor(np.full((1, 2), 2.0))

    def f(x):
        return ops.ReduceSum()(ops.MatMul()(x, w), ())

    value, gx = ms.value_and_grad(f)(x)
    assert float(value.asnumpy()) == 8.0 and gx.asnumpy().tolist() == [[2.0, 2.0]]
    gw = ms.grad(f, None, w)(x)
    assert gw[0].asnumpy().tolist() == [[2.0, 2.0], [2.0, 2.0]]
    grad_all = ops.GradOperation(get_all=True, get_by_list=True)(f, [w])(x)
    assert grad_all[0][0].asnumpy().tolist() == [[2.0, 2.0]]
    with pytest.raises(ValueError, match="grad_position and weights cannot both be None"):
        ms.value_and_grad(f, None, None)
