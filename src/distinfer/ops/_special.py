"""Special functions for the kernels, vectorised in the array's own precision.

Kernels compute float32 blocks in float32 (float16 and bfloat16 blocks in float32, float64 in
float64): a float64 round trip doubles the memory traffic of an elementwise op and its
transcendental functions run several times slower than numpy's SIMD float32 ones.

``erf`` has no numpy ufunc. Here it is two polynomials, made once per dtype by interpolating the
C library's ``math.erf``/``math.erfc`` at Chebyshev nodes and cut where the dropped terms fall
below that dtype's precision:

* ``|x| <= 1``: ``erf(x) = x * A(x*x)``, ``A`` smooth on ``[0, 1]``;
* ``|x| > 1``: ``erf(x) = sign(x) * (1 - exp(-x*x) * B(w))`` with ``w = 1 / (1 + |x| / 2)``: ``B``
  (erfc times ``exp(x*x)``) is nearly linear in ``w``, so 8 terms give float32 precision. Beyond
  ``|x| = 6`` erf is +-1 even in float64.

Long arrays are evaluated in blocks that stay in the CPU cache (one pass per arithmetic step).

>>> import numpy as np
>>> from distinfer.ops._special import erf
>>> y = erf(np.array([-1.0, 0.0, 0.5, 3.0], np.float32))
>>> y.dtype, y.astype(float).round(7).tolist()
(dtype('float32'), [-0.8427008, 0.0, 0.5204999, 0.9999779])
"""
from __future__ import annotations

import functools
import math

import numpy as np

__all__ = ["work_dtype", "erf", "erf_grad", "gelu_tanh", "gelu_tanh_grad"]

_TOP = 6.0  # |x| beyond which erf is +-1 in float64
_GELU_C = math.sqrt(2.0 / math.pi)
_GELU_K = 0.044715
_BLOCK = 1 << 16  # elements per cache-sized block (256 KiB of float32)


def work_dtype(dtype: np.dtype) -> np.dtype:
    """The precision a kernel computes a block of ``dtype`` in: float64 stays, the rest is float32.

    >>> from distinfer.ops._special import work_dtype
    >>> [work_dtype(np.dtype(t)).name for t in ("float16", "float32", "float64")]
    ['float32', 'float32', 'float64']
    """
    return np.dtype(np.float64) if np.dtype(dtype) == np.float64 else np.dtype(np.float32)


class _Series:
    """``f`` on ``[lo, hi]`` as a polynomial in ``t = (v - mid) / half`` (Horner in ``dtype``)."""

    def __init__(self, f, lo: float, hi: float, dtype: np.dtype, degree: int = 40) -> None:
        cheb = np.polynomial.chebyshev
        nodes = np.cos(np.pi * (np.arange(degree + 1) + 0.5) / (degree + 1))
        coef = cheb.chebfit(nodes, [f(lo + (t + 1) * (hi - lo) / 2) for t in nodes], degree)
        # Cut where the dropped terms add up to a quarter ulp of dtype (float64 interpolation
        # leaves noise near 1e-16, which float64 keeps clear of).
        tol = max(np.finfo(dtype).eps / 4, 1e-15) * abs(coef[0])
        tail = np.cumsum(np.abs(coef[::-1]))[::-1]
        coef = coef[:max(int(np.argmax(tail < tol)), 1)]
        # On [-1, 1] with these fast-falling coefficients the power basis is well conditioned.
        self.power = cheb.cheb2poly(coef).astype(dtype)
        self.scale, self.shift = dtype.type(2 / (hi - lo)), dtype.type(-(hi + lo) / (hi - lo))

    def __call__(self, v: np.ndarray, out: np.ndarray) -> np.ndarray:
        t = v * self.scale
        t += self.shift
        out.fill(self.power[-1])
        for c in self.power[-2::-1]:
            out *= t
            out += c
        return out


@functools.lru_cache(maxsize=None)
def _erf_series(dtype: np.dtype) -> tuple[_Series, _Series]:
    inner = _Series(lambda s: math.erf(math.sqrt(s)) / math.sqrt(s) if s else 2 / math.sqrt(math.pi),
                    0.0, 1.0, dtype)
    outer = _Series(lambda w: math.erfc(2 / w - 2) * math.exp((2 / w - 2) ** 2),
                    1 / (1 + _TOP / 2), 1 / 1.5, dtype)
    return inner, outer


def _erf_block(x: np.ndarray, out: np.ndarray, inner: _Series, outer: _Series) -> None:
    a = np.abs(x)
    np.minimum(a, x.dtype.type(_TOP), out=a)  # far out erf is +-1: keep w inside B's interval
    sq = a * a
    near = inner(sq, np.empty_like(x))
    near *= x
    a *= x.dtype.type(0.5)
    a += 1
    np.reciprocal(a, out=a)
    far = outer(a, np.empty_like(x))
    np.negative(sq, out=sq)
    far *= np.exp(sq, out=sq)
    np.subtract(1, far, out=far)
    np.copysign(far, x, out=far)
    np.copyto(out, np.where(np.abs(x) <= 1, near, far))  # NaN compares False: far keeps it


def erf(x: np.ndarray) -> np.ndarray:
    """The Gauss error function elementwise, in :func:`work_dtype` precision (within a few ulp;
    subnormal inputs lose precision with the multiplications they go through)."""
    x = np.asarray(x)
    dtype = work_dtype(x.dtype)
    flat = np.ascontiguousarray(x, dtype=dtype).reshape(-1)
    out = np.empty_like(flat)
    inner, outer = _erf_series(dtype)
    for lo in range(0, flat.size, _BLOCK):
        _erf_block(flat[lo:lo + _BLOCK], out[lo:lo + _BLOCK], inner, outer)
    return out.reshape(x.shape)


def erf_grad(x: np.ndarray, g: np.ndarray) -> np.ndarray:
    """``g * d erf / dx = g * 2 / sqrt(pi) * exp(-x*x)``, in :func:`work_dtype` precision."""
    x = np.asarray(x)
    dtype = work_dtype(x.dtype)
    d = np.square(x, dtype=dtype)
    np.negative(d, out=d)
    np.exp(d, out=d)
    d *= dtype.type(2 / math.sqrt(math.pi))
    d *= g
    return d


def gelu_tanh(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """GeLU's tanh form ``0.5 x (1 + tanh(u))``, ``u = c (x + k x^3)``, and ``exp(-2u)``.

    Written as ``x * sigmoid(2u) = x / (1 + exp(-2u))`` (the same function): ``1 + tanh(u)``
    loses every digit for x below about -3 in float32, the sigmoid keeps the tail's relative
    precision. The gradient reuses ``exp(-2u)`` (inf for x below about -9, where y is 0).
    """
    x = np.asarray(x)
    dtype = work_dtype(x.dtype)
    xw = x.astype(dtype, copy=False)
    e = np.square(xw)  # -2u = x * (-2c - 2ck x^2)
    e *= dtype.type(-2 * _GELU_C * _GELU_K)
    e += dtype.type(-2 * _GELU_C)
    e *= xw
    with np.errstate(over="ignore"):
        np.exp(e, out=e)
    y = np.add(e, 1)
    np.divide(xw, y, out=y)
    return y, e


def gelu_tanh_grad(x: np.ndarray, y: np.ndarray, e: np.ndarray, g: np.ndarray) -> np.ndarray:
    """``g * dy/dx`` for ``y = x s``, ``s = 1 / (1 + e)``, ``e = exp(-2u)``:
    ``dy/dx = s + 2 y (1 - s) u'``, ``u' = c (1 + 3k x^2)``, with ``1 - s = 1 / (1 + 1/e)``
    computed from ``e`` (as ``1 - s`` it would keep only the digits ``s`` has below 1)."""
    dtype = e.dtype
    with np.errstate(divide="ignore"):  # e = 0 far right: 1 - s is 0
        rest = np.reciprocal(e)
    rest += 1
    np.reciprocal(rest, out=rest)  # 1 - s
    d = np.square(x, dtype=dtype)  # 2 u'
    d *= dtype.type(6 * _GELU_C * _GELU_K)
    d += dtype.type(2 * _GELU_C)
    d *= y
    d *= rest
    s = np.add(e, 1, out=rest)
    np.reciprocal(s, out=s)
    d += s
    d *= g
    return d
