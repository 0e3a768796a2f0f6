"""Neural-network ops: Gather (embedding), OneHot, LayerNorm, Dropout and the fused losses.

Gather with its table split along the gathered axis (vocabulary rows) has each rank look up
only the ids in its own row range and write zeros elsewhere; the output is then a partial sum
over that device axis. The device matrix is the indices' strategy followed by the table's, so
Megatron-style ``((mp, 1), (dp, 1))`` lines up with ``[dp, mp]`` layouts of the other ops.
"""
from __future__ import annotations

import math

import numpy as np

from .. import dtype as mstype
from .._cpu import flushing
from .._random import flat_indices, next_seed, uniform01
from ..errors import OnnxExportError, StrategyError
from ._special import work_dtype
from .mindspore_form import PRIMITIVE, Input, MsOp, as_tensor, integer, local_depth, scalar_tensor
from .primitive import Primitive, batch_split, build

__all__ = ["Gather", "OneHot", "LayerNorm", "Dropout", "SparseSoftmaxCrossEntropyWithLogits",
           "SoftmaxCrossEntropyWithLogits"]


class Gather(Primitive):
    """``Gather(batch_dims=0)(input_params, input_indices, axis)``."""

    mindir = MsOp(2, (Input("axis", arg=2, encode=lambda v, call: int(v)), integer("batch_dims")))

    tensor_args = (0, 1)

    def __init__(self, batch_dims: int = 0) -> None:
        super().__init__()
        if batch_dims:
            raise ValueError("Gather: batch_dims other than 0 is not supported")
        self.batch_dims = batch_dims

    def _axis(self, consts, ndim):
        return int(consts[2]) % ndim

    def infer(self, shapes, dtypes, consts):
        p, i = shapes
        a = self._axis(consts, len(p))
        if dtypes[1] not in (mstype.int32, mstype.int64):
            raise TypeError(f"Gather: indices must be Int32 or Int64, got {dtypes[1]}")
        return [(tuple(p[:a]) + tuple(i) + tuple(p[a + 1:]), dtypes[0])]

    def default_strategy(self, shapes, n, consts):
        p, i = shapes
        return (tuple([1] * len(p)), tuple([batch_split(i[0], n)] + [1] * (len(i) - 1)) if i else ())

    def rule(self, strategy, shapes, out_shapes, n, consts):
        sp, si = strategy
        a = self._axis(consts, len(shapes[0]))
        ni = len(si)
        i_dims = [t if v > 1 else -1 for t, v in enumerate(si)]
        p_dims = [ni + t if v > 1 else -1 for t, v in enumerate(sp)]
        out_dims = p_dims[:a] + i_dims + p_dims[a + 1:]
        partial = [p_dims[a]] if sp[a] > 1 else []
        return build(n, list(si) + list(sp), [p_dims, i_dims], shapes, [out_dims], out_shapes,
                     partial=[partial], op=self.name)

    def kernel(self, ctx, params, indices):
        a = self._axis(ctx.consts, params.ndim)
        lo, hi = ctx.in_boxes[0][a]
        if (lo, hi) == (0, ctx.in_shapes[0][a]):
            return np.take(params, indices, axis=a)
        local = indices.astype(np.int64) - lo
        inside = (local >= 0) & (local < hi - lo)
        out = np.take(params, np.where(inside, local, 0), axis=a)
        mask_shape = (1,) * a + inside.shape + (1,) * (params.ndim - a - 1)
        return out * inside.reshape(mask_shape).astype(out.dtype)

    def bprop(self, ctx, xs, out, douts):
        params, indices = xs
        a = self._axis(ctx.consts, params.ndim)
        lo, hi = ctx.in_boxes[0][a]
        local = indices.astype(np.int64).reshape(-1) - lo
        inside = (local >= 0) & (local < hi - lo)
        g = np.moveaxis(douts[0], list(range(a, a + indices.ndim)), list(range(indices.ndim)))
        g = g.reshape((-1,) + g.shape[indices.ndim:])
        grad = np.zeros(np.moveaxis(params, a, 0).shape, dtype=params.dtype)
        ids, rows = local[inside], g[inside]
        # Rows of the same id summed in their original order, as np.add.at would (~10x faster here).
        order = np.argsort(ids, kind="stable")
        ids = ids[order]
        starts = np.flatnonzero(np.concatenate(([True], ids[1:] != ids[:-1]))) if ids.size else ids
        if ids.size:
            grad[ids[starts]] = np.add.reduceat(rows[order], starts, axis=0)
        return [np.moveaxis(grad, 0, a), None]

    def to_onnx(self, g):
        g.one("Gather", g.inputs, g.outputs[0], axis=int(g.consts[2]))


class OneHot(Primitive):
    """``OneHot(axis=-1)(indices, depth, on_value, off_value)``; strategy is for the output."""

    mindir = MsOp(1, (Input("depth", arg=1, encode=local_depth),
                      Input("on_value", arg=2, encode=scalar_tensor, decode=as_tensor),
                      Input("off_value", arg=3, encode=scalar_tensor, decode=as_tensor), integer("axis")))

    tensor_args = (0,)
    repeat_left = True
    depth_split = 1  # from the last entry of the output strategy given to shard()

    def __init__(self, axis: int = -1) -> None:
        super().__init__()
        if axis != -1:
            raise ValueError("OneHot: only axis=-1 is supported")
        self.axis = axis

    def infer(self, shapes, dtypes, consts):
        on = consts[2]
        dt = on.dtype if hasattr(on, "dtype") and isinstance(on.dtype, mstype.Type) else mstype.float32
        return [(tuple(shapes[0]) + (int(consts[1]),), dt)]

    def default_strategy(self, shapes, n, consts):
        i = shapes[0]
        return (tuple([batch_split(i[0], n)] + [1] * (len(i) - 1)),) if i else ((),)

    def rule(self, strategy, shapes, out_shapes, n, consts):
        so = tuple(strategy[0]) + (self.depth_split,)
        depth = out_shapes[0][-1]
        if depth % self.depth_split or self.depth_split * math.prod(strategy[0]) > n:
            raise StrategyError(f"OneHot: the output strategy {so} does not fit output shape {tuple(out_shapes[0])} "
                                f"(depth {depth} split {self.depth_split} ways) on {n} devices")
        out_dims = [d if v > 1 else -1 for d, v in enumerate(so)]
        return build(n, so, [out_dims[:-1]], shapes, [out_dims], out_shapes, repeat_left=True, op=self.name)

    def shard(self, in_strategy=None, out_strategy=None, **kw):
        # MindSpore gives ((dims of the output), (), ()): the output's last entry splits the depth
        # and the others are the indices' strategy, which is what the executor checks.
        if in_strategy is not None:
            out_dims = tuple(in_strategy[0])
            if not out_dims:
                raise StrategyError(f"OneHot.shard: the strategy {in_strategy} must start with the output's "
                                    f"(indices dims..., depth) splits")
            self.depth_split = int(out_dims[-1])
            in_strategy = (out_dims[:-1],)
        return super().shard(in_strategy, out_strategy)

    def kernel(self, ctx, indices):
        lo, hi = ctx.out_boxes[0][-1]
        on = np.asarray(ctx.consts[2].asnumpy() if hasattr(ctx.consts[2], "asnumpy") else ctx.consts[2])
        off = np.asarray(ctx.consts[3].asnumpy() if hasattr(ctx.consts[3], "asnumpy") else ctx.consts[3])
        hot = indices[..., None] == np.arange(lo, hi)
        return np.where(hot, on, off).astype(ctx.out_dtypes[0].np)

    def bprop(self, ctx, xs, out, douts):
        return [None]

    def to_onnx(self, g):
        dt = g.out_dtypes[0].np
        on, off = (np.asarray(v.asnumpy() if hasattr(v, "asnumpy") else v, dt) for v in (g.consts[2], g.consts[3]))
        # depth in the indices' dtype: onnxruntime implements OneHot for those type pairs
        g.one("OneHot", [g.inputs[0], g.const(np.array(int(g.consts[1]), g.in_dtypes[0]), "depth"),
                         g.const(np.stack([off, on]).reshape(2), "values")], g.outputs[0], axis=-1)


class LayerNorm(Primitive):
    """``LayerNorm(begin_norm_axis=1, begin_params_axis=1, epsilon=1e-7)(x, gamma, beta)``
    -> ``(y, mean, variance)``; the normalised dims must not be split."""

    mindir = MsOp(3, (integer("begin_norm_axis"), integer("begin_params_axis"),
                      Input("epsilon", attr="epsilon", encode=lambda v, call: float(v))), tuple_output=True)

    def __init__(self, begin_norm_axis: int = 1, begin_params_axis: int = 1, epsilon: float = 1e-7) -> None:
        super().__init__()
        self.begin_norm_axis, self.begin_params_axis, self.epsilon = begin_norm_axis, begin_params_axis, epsilon

    def _axes(self, ndim):
        return self.begin_norm_axis % ndim, self.begin_params_axis % ndim

    def infer(self, shapes, dtypes, consts):
        x, g, b = shapes
        na, pa = self._axes(len(x))
        if tuple(g) != tuple(x[pa:]) or tuple(b) != tuple(x[pa:]):
            raise ValueError(f"LayerNorm: gamma {tuple(g)} and beta {tuple(b)} must have shape {tuple(x[pa:])}")
        stat = tuple(x[:na]) + (1,) * (len(x) - na)
        return [(tuple(x), dtypes[0]), (stat, dtypes[0]), (stat, dtypes[0])]

    def default_strategy(self, shapes, n, consts):
        x, g, b = shapes
        return (tuple([batch_split(x[0], n)] + [1] * (len(x) - 1)), (1,) * len(g), (1,) * len(b))

    def rule(self, strategy, shapes, out_shapes, n, consts):
        sx, sg, sb = strategy
        na, pa = self._axes(len(sx))
        if any(v != 1 for v in sx[na:]):
            raise StrategyError(f"LayerNorm: dims from begin_norm_axis={na} on cannot be split, got strategy "
                                f"{strategy} (shape {tuple(shapes[0])}, {n} devices)")
        if tuple(sg) != tuple(sx[pa:]) or tuple(sb) != tuple(sx[pa:]):
            raise StrategyError(f"LayerNorm: gamma/beta strategies {sg}, {sb} must equal the input's {tuple(sx[pa:])} "
                                f"(strategy {strategy}, {n} devices)")
        x_dims = [d if v > 1 else -1 for d, v in enumerate(sx)]
        stat_dims = x_dims[:na] + [-1] * (len(sx) - na)
        return build(n, sx, [x_dims, x_dims[pa:], x_dims[pa:]], shapes, [x_dims, stat_dims, stat_dims],
                     out_shapes, op=self.name)

    def kernel(self, ctx, x, gamma, beta):
        na, pa = self._axes(x.ndim)
        axes = tuple(range(na, x.ndim))
        dtype = work_dtype(x.dtype)
        mean = x.mean(axis=axes, keepdims=True, dtype=dtype)
        xhat = np.subtract(x, mean, dtype=dtype)
        var = np.square(xhat).mean(axis=axes, keepdims=True)  # two passes: no cancellation
        rstd = np.sqrt(var + dtype.type(self.epsilon))
        np.reciprocal(rstd, out=rstd)
        xhat *= rstd
        y = xhat * gamma
        y += beta
        ctx.saved["xhat"], ctx.saved["rstd"] = xhat, rstd
        return y.astype(x.dtype, copy=False), mean.astype(x.dtype, copy=False), var.astype(x.dtype, copy=False)

    def bprop(self, ctx, xs, out, douts):
        x, gamma, _ = xs
        na, pa = self._axes(x.ndim)
        axes = tuple(range(na, x.ndim))
        xhat, rstd = ctx.saved["xhat"], ctx.saved["rstd"]
        g = douts[0].astype(xhat.dtype, copy=False)
        param_axes = tuple(range(pa))
        dgamma = (g * xhat).sum(axis=param_axes)
        dbeta = g.sum(axis=param_axes)
        gx = g * gamma  # dx = rstd * (gx - mean(gx) - xhat * mean(gx * xhat)) over the normalised dims
        proj = (gx * xhat).mean(axis=axes, keepdims=True)
        dx = gx - gx.mean(axis=axes, keepdims=True)
        proj = xhat * proj
        dx -= proj
        dx *= rstd
        return [dx.astype(x.dtype, copy=False), dgamma.astype(gamma.dtype, copy=False),
                dbeta.astype(gamma.dtype, copy=False)]

    def to_onnx(self, g):
        """``LayerNormalization``; its ``InvStdDev`` output gives the variance as ``1 / inv_std**2 - epsilon``."""
        na, pa = self._axes(len(g.in_shapes[0]))
        if na != pa:
            raise OnnxExportError(f"ONNX export: LayerNorm with begin_norm_axis {na} != begin_params_axis {pa}")
        y, mean, var = g.outputs
        inv = g.node("LayerNormalization", g.inputs, [y, mean, g.fresh("inv_std")], axis=int(na),
                     epsilon=float(self.epsilon))[2]
        g.one("Sub", [g.one("Reciprocal", [g.one("Mul", [inv, inv])]),
                      g.const(np.array(self.epsilon, g.out_dtypes[0].np))], var)


class Dropout(Primitive):
    """``Dropout(keep_prob=0.5, Seed0=0, Seed1=0)(x)`` -> ``(output, mask)``.

    The mask of each element is a function of the seed and its *global* position, so it does not
    depend on how the tensor is laid out across ranks.
    """

    mindir = MsOp(1, (Input("keep_prob", attr="keep_prob", encode=lambda v, call: float(v)),
                      Input("Seed0", attr="Seed0", get=lambda p: p.seed >> 32),
                      Input("Seed1", attr="Seed1", get=lambda p: p.seed & 0xFFFFFFFF)),
                  attrs=(("side_effect_hidden", True),), tuple_output=True)

    tensor_args = (0,)
    onnx_refusal = ("its mask comes from distinfer's seeded generator, which ONNX's Dropout (random or identity) "
                    "cannot reproduce; export in inference mode (net.set_train(False)), where nn.Dropout skips it")

    def __init__(self, keep_prob: float = 0.5, Seed0: int = 0, Seed1: int = 0) -> None:
        super().__init__()
        if not 0 < keep_prob <= 1:
            raise ValueError(f"Dropout: keep_prob must be in (0, 1], got {keep_prob}")
        self.keep_prob = keep_prob
        self.seed = (Seed0 << 32) + Seed1
        self.calls = 0

    def infer(self, shapes, dtypes, consts):
        return [(tuple(shapes[0]), dtypes[0]), (tuple(shapes[0]), mstype.float32)]

    def rule(self, strategy, shapes, out_shapes, n, consts):
        dims = [d if v > 1 else -1 for d, v in enumerate(strategy[0])]
        return build(n, strategy[0] or [1], [dims], shapes, [dims, dims], out_shapes, op=self.name)

    def kernel(self, ctx, x):
        key = ctx.saved.setdefault("key", next_seed() ^ self.seed)
        u = uniform01(key, flat_indices(ctx.in_shapes[0], ctx.in_boxes[0]), 0)
        mask = (u < self.keep_prob).astype(np.float32)
        return (x * (mask / self.keep_prob)).astype(x.dtype), mask

    def bprop(self, ctx, xs, out, douts):
        return [douts[0] * (out[1] / self.keep_prob).astype(douts[0].dtype)]


class SparseSoftmaxCrossEntropyWithLogits(Primitive):
    """``SparseSoftmaxCrossEntropyWithLogits(is_grad=False)(logits, labels)``: mean loss over the batch.

    The class dim must be whole; a split batch gives a partial sum of per-rank losses over the
    global batch size.
    """

    mindir = MsOp(2, prim_type=PRIMITIVE, attrs=(("sens", 1.0),), prim_attrs=("is_grad",))

    def __init__(self, is_grad: bool = False) -> None:
        super().__init__()
        self.is_grad = is_grad

    def infer(self, shapes, dtypes, consts):
        logits, labels = shapes
        if len(logits) != 2 or tuple(labels) != tuple(logits[:1]):
            raise ValueError(f"SparseSoftmaxCrossEntropyWithLogits: logits {tuple(logits)} must be [N, C] and labels "
                             f"{tuple(labels)} must be [N]")
        if dtypes[1] not in (mstype.int32, mstype.int64):
            raise TypeError(f"SparseSoftmaxCrossEntropyWithLogits: labels must be Int32 or Int64, got {dtypes[1]}")
        return [((), dtypes[0])]

    def default_strategy(self, shapes, n, consts):
        s = batch_split(shapes[0][0], n)
        return ((s, 1), (s,))

    def rule(self, strategy, shapes, out_shapes, n, consts):
        (b, c), (b2,) = strategy
        if c != 1 or b != b2:
            raise StrategyError(f"SparseSoftmaxCrossEntropyWithLogits: strategy must be ((b, 1), (b,)), got "
                                f"{strategy} (shapes {[tuple(s) for s in shapes]}, {n} devices)")
        bd = 0 if b > 1 else -1
        return build(n, [b, 1], [[bd, -1], [bd]], shapes, [[]], out_shapes, partial=[[0] if b > 1 else []],
                     op=self.name)

    @flushing  # probabilities that underflow are zero, as in MindSpore's kernel
    def kernel(self, ctx, logits, labels):
        rows, picked = np.arange(len(labels)), labels.astype(np.int64)
        p = np.subtract(logits, logits.max(axis=1, keepdims=True), dtype=work_dtype(logits.dtype))
        target = p[rows, picked]  # shifted logit of each row's label
        np.exp(p, out=p)
        total = p.sum(axis=1)
        p /= total[:, None]
        ctx.saved["softmax"] = p
        nll = np.log(total.astype(np.float64)) - target  # summed in float64: one value per row
        return np.asarray(nll.sum() / ctx.in_shapes[0][0], dtype=logits.dtype)

    @flushing
    def bprop(self, ctx, xs, out, douts):
        logits, labels = xs
        grad = ctx.saved["softmax"].copy()
        grad[np.arange(len(labels)), labels.astype(np.int64)] -= 1
        grad *= grad.dtype.type(float(douts[0]) / ctx.in_shapes[0][0])
        return [grad.astype(logits.dtype, copy=False), None]

    def to_onnx(self, g):
        g.one("SoftmaxCrossEntropyLoss", g.inputs, g.outputs[0], reduction="mean")


class SoftmaxCrossEntropyWithLogits(Primitive):
    """``SoftmaxCrossEntropyWithLogits()(logits, labels)`` -> ``(loss [N], dlogits [N, C])``."""

    mindir = MsOp(2, prim_type=PRIMITIVE, tuple_output=True)

    def infer(self, shapes, dtypes, consts):
        if tuple(shapes[0]) != tuple(shapes[1]) or len(shapes[0]) != 2:
            raise ValueError(f"SoftmaxCrossEntropyWithLogits: logits {tuple(shapes[0])} and labels "
                             f"{tuple(shapes[1])} must both be [N, C]")
        return [((shapes[0][0],), dtypes[0]), (tuple(shapes[0]), dtypes[0])]

    def default_strategy(self, shapes, n, consts):
        s = batch_split(shapes[0][0], n)
        return ((s, 1), (s, 1))

    def rule(self, strategy, shapes, out_shapes, n, consts):
        if strategy[0] != strategy[1] or strategy[0][1] != 1:
            raise StrategyError(f"SoftmaxCrossEntropyWithLogits: strategy must be ((b, 1), (b, 1)), got {strategy}")
        bd = 0 if strategy[0][0] > 1 else -1
        return build(n, [strategy[0][0], 1], [[bd, -1], [bd, -1]], shapes, [[bd], [bd, -1]], out_shapes, op=self.name)

    @flushing  # probabilities that underflow are zero, as in MindSpore's kernel
    def kernel(self, ctx, logits, labels):
        dtype = work_dtype(logits.dtype)
        logp = np.subtract(logits, logits.max(axis=1, keepdims=True), dtype=dtype)
        logp -= np.log(np.exp(logp).sum(axis=1, keepdims=True))
        ctx.saved["logp"] = logp
        loss = (labels * logp).sum(axis=1)  # pairwise along the classes
        np.negative(loss, out=loss)
        dlogits = np.exp(logp)
        dlogits -= labels
        return loss.astype(logits.dtype, copy=False), dlogits.astype(logits.dtype, copy=False)

    @flushing
    def bprop(self, ctx, xs, out, douts):
        logits, labels = xs
        g = douts[0]
        if g is None:
            return [None, None]
        logp = ctx.saved["logp"]
        g = g.astype(logp.dtype, copy=False)[:, None]
        dlogits = np.exp(logp)
        dlogits *= labels.sum(axis=1, keepdims=True, dtype=logp.dtype)
        dlogits -= labels
        dlogits *= g
        dlabels = logp * -g
        return [dlogits.astype(logits.dtype, copy=False), dlabels.astype(labels.dtype, copy=False)]

    def to_onnx(self, g):
        """``loss = -sum(labels * log_softmax(logits), 1)`` and ``dlogits = softmax(logits) - labels``."""
        logits, labels = g.inputs
        logp = g.one("LogSoftmax", [logits], axis=1)
        total = g.one("ReduceSum", [g.one("Mul", [labels, logp]), g.const(np.array([1], np.int64), "axes")],
                      keepdims=0)
        g.one("Neg", [total], g.outputs[0])
        g.one("Sub", [g.one("Exp", [logp]), labels], g.outputs[1])
