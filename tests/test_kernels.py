"""Float32 kernels against float64 references, and subnormal numbers flushed as MindSpore flushes them.

The float32 kernels compute in float32; the float64 path of the same kernels is checked against
finite differences in test_autograd.py. Here every float32 forward and gradient is compared with
float64 (error relative to the reference's largest value, <= 1e-6), and the functions whose
relative precision can survive float32 (erf everywhere, GeLU where it is not vanishing) are
checked element by element too.
"""
from __future__ import annotations

import math
import subprocess
import textwrap

import numpy as np
import pytest

import distinfer as ms
from distinfer import nn, ops
from distinfer._cpu import flush_subnormals
from distinfer.ops import _special

RNG = np.random.RandomState(11)
TINY = np.finfo(np.float32).tiny  # smallest normal float32


def _layer_norm(x):
    gamma, beta = (np.linspace(0.5, 1.5, x.shape[-1]), np.linspace(-0.2, 0.2, x.shape[-1]))
    dt = x.dtype
    return ops.LayerNorm(-1, -1, 1e-5)(x, ms.Tensor(gamma.astype(dt.np)), ms.Tensor(beta.astype(dt.np)))[0]


def _sparse_ce(x):
    labels = ms.Tensor(np.arange(x.shape[0], dtype=np.int32) * 7 % x.shape[1])
    return ops.SparseSoftmaxCrossEntropyWithLogits()(x, labels)


def _dense_ce(x):
    labels = np.zeros(x.shape)
    labels[np.arange(x.shape[0]), np.arange(x.shape[0]) * 5 % x.shape[1]] = 1.0
    return ops.SoftmaxCrossEntropyWithLogits()(x, ms.Tensor(labels.astype(x.dtype.np)))[0]


# name: (function of one Tensor, input shape, input scale, input shift)
KERNELS = {
    "gelu_tanh": (lambda x: ops.GeLU()(x), (64, 768), 2.5, 0.0),
    "gelu_exact": (lambda x: ops.gelu(x), (64, 768), 2.5, 0.0),
    "erf": (lambda x: ops.Erf()(x), (64, 768), 2.0, 0.0),
    "fast_gelu": (lambda x: ops.FastGeLU()(x), (64, 768), 2.5, 0.0),
    "softmax": (lambda x: ops.Softmax()(x), (4, 12, 64, 64), 3.0, 0.0),
    "log_softmax": (lambda x: ops.LogSoftmax()(x), (64, 1024), 3.0, 0.0),
    "layer_norm": (_layer_norm, (256, 768), 3.0, 1.0),
    "sparse_cross_entropy": (_sparse_ce, (128, 4096), 4.0, 0.0),
    "cross_entropy": (_dense_ce, (128, 4096), 4.0, 0.0),
}
NO_GRADIENT = {"fast_gelu"}


def _run(name, dtype, x, cotangent):
    """Forward output and the gradient of ``sum(output * cotangent)`` in ``dtype``."""
    f = KERNELS[name][0]
    p = ms.Parameter(ms.Tensor(x.astype(dtype)), name="x")
    out = f(p).asnumpy()
    if name in NO_GRADIENT:
        return out, None
    w = ms.Tensor(cotangent.reshape(-1)[:out.size].reshape(out.shape).astype(dtype))
    _, (grad,) = ms.value_and_grad(lambda: ops.ReduceSum()(ops.Mul()(f(p), w), ()), None, [p])()
    return out, grad.asnumpy()


def _normwise(got, want):
    return float(np.abs(got.astype(np.float64) - want).max() / np.abs(want).max())


@pytest.mark.parametrize("name", sorted(KERNELS))
def test_float32_kernel_matches_float64(name):
    _, shape, scale, shift = KERNELS[name]
    x = RNG.randn(*shape) * scale + shift
    cotangent = RNG.randn(*shape)
    out32, grad32 = _run(name, np.float32, x, cotangent)
    out64, grad64 = _run(name, np.float64, x, cotangent)
    assert out32.dtype == np.float32
    assert _normwise(out32, out64) <= 1e-6, (name, "forward", _normwise(out32, out64))
    if grad32 is not None:
        assert grad32.dtype == np.float32
        assert _normwise(grad32, grad64) <= 1e-6, (name, "gradient", _normwise(grad32, grad64))


def test_erf_is_float32_accurate_element_by_element():
    x = np.concatenate([np.linspace(-7, 7, 100_001), RNG.randn(50_000) * 2, [0.0, -0.0, 1e-30, 1.0, -1.0, 6.0]])
    x = x.astype(np.float32)
    want = np.array([math.erf(v) for v in x.astype(np.float64)])
    got = _special.erf(x)
    assert got.dtype == np.float32
    rel = np.abs(got - want) / np.maximum(np.abs(want), 1e-300)
    assert rel.max() <= 1e-6, (rel.max(), x[rel.argmax()])
    got64 = _special.erf(x.astype(np.float64))
    assert (np.abs(got64 - want) / np.maximum(np.abs(want), 1e-300)).max() <= 1e-13
    assert _special.erf(np.array([np.inf, -np.inf, 50.0], np.float32)).tolist() == [1.0, -1.0, 1.0]
    assert np.isnan(_special.erf(np.array([np.nan], np.float32))).all()


def test_gelu_tanh_keeps_relative_precision_in_its_tail():
    """``x * sigmoid(2u)`` is the tanh form without its cancellation: element by element within
    1e-6 down to x = -3 (below, float32 rounding of u itself is amplified by |2u|), and no
    catastrophic loss below that (0.5 x (1 + tanh u) would give 0 or 100% error there)."""
    x = np.concatenate([np.linspace(-10, 10, 200_001), RNG.randn(50_000)]).astype(np.float32)
    x64 = x.astype(np.float64)
    u = math.sqrt(2 / math.pi) * (x64 + 0.044715 * x64 ** 3)
    want = x64 / (1 + np.exp(-2 * u))
    got, _ = _special.gelu_tanh(x)
    rel = np.abs(got - want) / np.maximum(np.abs(want), 1e-300)
    assert rel[x >= -3].max() <= 1e-6
    assert rel[(x < -3) & (np.abs(want) > 1e-30)].max() <= 3e-5


def test_kernels_compute_low_precision_blocks_in_float32():
    x = ms.Tensor((RNG.randn(8, 16) * 2).astype(np.float16))
    for f in (ops.GeLU(), ops.Softmax(), ops.Erf()):
        y = f(x)
        assert y.dtype == ms.float16
        want = f(ms.Tensor(x.asnumpy().astype(np.float32))).asnumpy().astype(np.float16)
        np.testing.assert_array_equal(y.asnumpy(), want)


# --------------------------------------------------------------------------- subnormals
def _underflowing_logits(rows=64, classes=8192):
    """Logits spread so widely that most softmax probabilities are below float32's normal range."""
    return (RNG.randn(rows, classes) * 30).astype(np.float32)


def test_cross_entropy_gradient_has_no_subnormals():
    logits = ms.Parameter(ms.Tensor(_underflowing_logits()), name="logits")
    labels = ms.Tensor(np.arange(64, dtype=np.int32))
    _, (grad,) = ms.value_and_grad(lambda: nn.CrossEntropyLoss()(logits, labels), None, [logits])()
    g = grad.asnumpy()
    subnormal = (g != 0) & (np.abs(g) < TINY)
    assert not subnormal.any(), int(subnormal.sum())
    # The float64 gradient has ~half of its entries below TINY / 64: flushed, nothing else changed.
    x = logits.asnumpy().astype(np.float64)
    p = np.exp(x - x.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    p[np.arange(64), np.arange(64)] -= 1
    want = p / 64
    assert (np.abs(want) < TINY).mean() > 0.3
    np.testing.assert_allclose(g, np.where(np.abs(want) < TINY, 0, want), rtol=1e-5, atol=0)


@pytest.mark.parametrize("threads", [1, 2])
def test_matmul_flushes_subnormal_operands_in_every_blas_thread(threads):
    """A gradient full of subnormals times a weight gives what MindSpore's MatMul gives: the
    subnormals count as zero (denormals-are-zero), in the rows every BLAS thread computes, so the
    matmul runs on the fast path; numpy without the flush mode computes them."""
    from threadpoolctl import threadpool_limits

    grad = np.full((256, 512), 3e-39, np.float32)
    grad[::2] = 1e-3  # normal rows in between
    weight = RNG.randn(512, 384).astype(np.float32)
    want = np.where(np.abs(grad) < TINY, 0, grad) @ weight
    with threadpool_limits(threads):
        got = ops.MatMul()(ms.Tensor(grad), ms.Tensor(weight)).asnumpy()
        got_t = ops.MatMul(transpose_a=True)(ms.Tensor(np.ascontiguousarray(grad.T)), ms.Tensor(weight)).asnumpy()
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(got_t, want)
    assert np.count_nonzero((grad @ weight)[1::2]) > 0  # plain numpy (no flush mode) keeps them


def test_exp_and_softmax_flush_underflowing_results_as_mindspore_does():
    """MindSpore 2.10 on CPU: Exp(-100) is 0 (not 3.8e-44), Softmax([0, -100]) is [1, 0]."""
    assert ops.Exp()(ms.Tensor(np.array([-100.0, -80.0], np.float32))).asnumpy()[0] == 0.0
    assert ops.Softmax()(ms.Tensor(np.array([[0.0, -100.0]], np.float32))).asnumpy().tolist() == [[1.0, 0.0]]
    assert np.exp(np.float32(-100.0)) != 0  # numpy alone gives a subnormal


def test_elementwise_ops_keep_subnormals_as_mindspore_does():
    x = np.full(4, 1e-39, np.float32)
    assert ops.Add()(ms.Tensor(x), ms.Tensor(x)).asnumpy().tolist() == (x + x).tolist()
    with flush_subnormals():
        assert (x + x).tolist() == [0.0] * 4
    assert (x + x).tolist() != [0.0] * 4  # the mode ends with the block


def test_matmul_of_a_subnormal_gradient_equals_mindspore(mindspore_python, tmp_path):
    grad = np.where(RNG.rand(64, 256) < 0.5, 2e-39, RNG.randn(64, 256) * 1e-3).astype(np.float32)
    grad[:16] = 2e-39  # rows made only of subnormals: zero in MindSpore's product
    weight = RNG.randn(256, 96).astype(np.float32)
    np.save(tmp_path / "grad.npy", grad)
    np.save(tmp_path / "weight.npy", weight)
    script = textwrap.dedent(f"""
        import numpy as np, mindspore as ms
        ms.set_context(mode=ms.GRAPH_MODE, device_target="CPU")
        g, w = np.load("{tmp_path}/grad.npy"), np.load("{tmp_path}/weight.npy")
        np.save("{tmp_path}/ms.npy", ms.ops.MatMul()(ms.Tensor(g), ms.Tensor(w)).asnumpy())
    """)
    subprocess.run([mindspore_python, "-c", script], check=True, capture_output=True, timeout=300)
    theirs = np.load(tmp_path / "ms.npy")
    ours = ops.MatMul()(ms.Tensor(grad), ms.Tensor(weight)).asnumpy()
    np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-9)
    flushed_rows = np.abs(grad).max(axis=1) < TINY
    assert not ours[flushed_rows].any() and not theirs[flushed_rows].any()
