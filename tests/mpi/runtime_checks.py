"""Core-runtime checks run under ``mpirun -n 1, 2, 4, 8`` (the same bodies at every rank count).

Covers the seed network (layouts, and predict against a numpy forward, full_batch and data_parallel), the
GPT block against its numpy reference, the messages/bytes/allreduces of redistributions, and
every op family with a non-trivial strategy against numpy. ``tests/test_mpi_runtime.py``
launches it and asserts on the ``PASS`` lines; :func:`check_names` lists what it runs for ``n``.
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT / "examples"), str(Path(__file__).resolve().parent)]

import distinfer as ms  # noqa: E402
from distinfer import ops  # noqa: E402
from distinfer.communication import _backend  # noqa: E402
from distinfer.layout import Layout  # noqa: E402
from distinfer.parallel import _executor as ex  # noqa: E402
from distinfer.plan import make_plan  # noqa: E402

from _harness import Checks, assert_close, full, rank, reset, size  # noqa: E402

GPT_CONFIGS = ((1, 1), (1, 4), (2, 2), (2, 4))
GPT_CFG = dict(vocab=64, hidden=32, heads=4, seq=8, ffn=64)
SEED = 11

# §4.3 (8 devices), the same strategies on 4 devices, and seed_strategies' on 2 and 1:
# name -> (dev_matrix, tensor_map, slice_shape).
SEED_LAYOUTS = {
    1: {"layer1.weight": ([1], [-1, -1], [784, 512]), "layer1.bias": ([1], [-1], [512]),
        "layer2.weight": ([1], [-1, -1], [512, 512]), "layer2.bias": ([1], [-1], [512]),
        "layer3.weight": ([1], [-1, -1], [512, 10]), "layer3.bias": ([1], [-1], [10])},
    2: {"layer1.weight": ([2], [-1, 0], [784, 256]), "layer1.bias": ([2], [-1], [512]),
        "layer2.weight": ([2], [-1, -1], [512, 512]), "layer2.bias": ([2], [-1], [512]),
        "layer3.weight": ([2], [0, -1], [256, 10]), "layer3.bias": ([2], [-1], [10])},
    8: {"layer1.weight": ([2, 2, 2], [-1, 1], [784, 256]), "layer1.bias": ([8], [-1], [512]),
        "layer2.weight": ([8], [-1, -1], [512, 512]), "layer2.bias": ([8], [-1], [512]),
        "layer3.weight": ([2, 2, 2], [1, -1], [256, 10]), "layer3.bias": ([8], [-1], [10])},
    4: {"layer1.weight": ([2, 2], [-1, 0], [784, 256]), "layer1.bias": ([4], [-1], [512]),
        "layer2.weight": ([4], [-1, -1], [512, 512]), "layer2.bias": ([4], [-1], [512]),
        "layer3.weight": ([2, 2], [0, -1], [256, 10]), "layer3.bias": ([4], [-1], [10])},
}


def gpt_configs(n: int) -> list[tuple[int, int]]:
    return [(dp, mp) for dp, mp in GPT_CONFIGS if dp * mp <= n]


def op_case_names() -> list[str]:
    return [name for name, _ in OP_CASES]


def check_names(n: int) -> list[str]:
    """Names of the checks this script runs on ``n`` ranks (for the pytest side)."""
    names = ["seed_layouts", "seed_predict_full_batch", "seed_predict_data_parallel", "seed_weights_are_slices",
             "seed_predict_float16", "seed_predict_bfloat16"]
    names += ["seed_shard_with_layouts"] if n in (4, 8) else []
    names += [f"gpt_{dp}x{mp}" for dp, mp in gpt_configs(n)]
    names += ["gpt_data_parallel", "comm_col_to_row", "comm_replicated_to_split", "comm_partial_sum",
              "comm_reduce_scatter", "comm_seed_predict", "comm_gpt_allreduces"]
    return names + [f"op_{name}" for name in op_case_names()]


CHECKS = Checks()


# ---------------------------------------------------------------------------- seed net
def seed_strategies(n: int) -> tuple[tuple, tuple]:
    """layer1/layer3 strategies: the tutorials' at 4 and 8 ranks, the largest that fit below."""
    if n >= 4:
        return ((2, 1), (1, 2)), ((2, 2), (2, 1))
    if n == 2:
        return ((1, 1), (1, 2)), ((1, 2), (2, 1))
    return ((1, 1), (1, 1)), ((1, 1), (1, 1))


def seed_net(sharded: bool):
    from seed_net import Network

    ms.set_seed(SEED)
    net = Network()
    if sharded:
        s1, s3 = seed_strategies(size())
        net.layer1.matmul.shard(s1)
        net.layer3.matmul.shard(s3)
    return net


def seed_input(batch: int) -> np.ndarray:
    return np.random.RandomState(3).standard_normal((batch, 1, 28, 28)).astype(np.float32)


def seed_full_weights() -> dict[str, np.ndarray]:
    """The seed network's full initial weights (the same on every rank count: seeded, lazy, unsliced)."""
    reset()
    return {k: p.init_data().asnumpy() for k, p in seed_net(False).parameters_and_names()}


def seed_reference(x: np.ndarray) -> np.ndarray:
    """Flatten -> Dense+ReLU -> Dense+ReLU -> Dense in float64 numpy (not distinfer's own predict)."""
    w = {k: v.astype(np.float64) for k, v in seed_full_weights().items()}
    h = x.reshape(len(x), -1).astype(np.float64)
    for i in (1, 2, 3):
        h = h @ w[f"layer{i}.weight"] + w[f"layer{i}.bias"]
        h = np.maximum(h, 0) if i < 3 else h
    return h


@CHECKS("seed_layouts")
def _seed_layouts() -> None:
    reset(parallel_mode="semi_auto_parallel", full_batch=True)
    layouts = ms.Model(seed_net(True)).infer_predict_layout(ms.Tensor(seed_input(16)))
    expected = SEED_LAYOUTS[size()]
    got = {k: (v[0], v[1], v[2]) for k, v in layouts.items()}
    assert got == expected, f"infer_predict_layout gave {got}, expected {expected}"


@CHECKS("seed_predict_full_batch")
def _seed_full_batch() -> None:
    x = seed_input(16)
    want = seed_reference(x)
    reset(parallel_mode="semi_auto_parallel", full_batch=True)
    got = ms.Model(seed_net(True)).predict(ms.Tensor(x)).asnumpy()
    assert_close(got, want, what="seed predict (full_batch)")


@CHECKS("seed_predict_data_parallel")
def _seed_data_parallel() -> None:
    n, local = size(), 2
    x = seed_input(local * size())
    want = seed_reference(x)
    reset(parallel_mode="semi_auto_parallel", full_batch=False)
    mine = x[rank() * local:(rank() + 1) * local]
    got = ms.Model(seed_net(True)).predict(ms.Tensor(mine)).asnumpy()
    assert_close(got, want[rank() * local:(rank() + 1) * local], what=f"seed predict (data_parallel, {n} ranks)")


def _seed_low_precision(name: str, rtol: float) -> None:
    """``to_float(name)``: the sharded network predicts like one process running it in ``name``."""
    dtype = getattr(ms, name)
    x = seed_input(16)
    reset()
    want = ms.Model(seed_net(False).to_float(dtype)).predict(ms.Tensor(x)).asnumpy()
    reset(parallel_mode="semi_auto_parallel", full_batch=True)
    want_layouts = ms.Model(seed_net(True)).infer_predict_layout(ms.Tensor(x))
    reset(parallel_mode="semi_auto_parallel", full_batch=True)
    model = ms.Model(seed_net(True).to_float(dtype))
    # the casts run where their consumers want the parameters: the same layouts as in float32
    assert model.infer_predict_layout(ms.Tensor(x)) == want_layouts
    got = model.predict(ms.Tensor(x)).asnumpy()
    assert got.dtype == dtype.np, got.dtype
    # Sharded, each matmul rounds its partial sums before they meet (in float32): a rounding apart.
    assert_close(got.astype(np.float64), want.astype(np.float64), rtol=rtol, what=f"seed predict ({name})")


CHECKS.add("seed_predict_float16", lambda: _seed_low_precision("float16", 2e-3))
CHECKS.add("seed_predict_bfloat16", lambda: _seed_low_precision("bfloat16", 1.6e-2))


def _seed_shard_with_layouts() -> None:
    """The tutorials' strategies written as ``ms.Layout``s give the same layouts and predictions as the
    split tuples; a Layout placing blocks differently from the op's rule lays the weight out its way
    and still predicts the same."""
    from seed_net import Network

    n = size()
    names = ("dp", "mp", "rep") if n == 8 else ("dp", "mp")  # the repeated-calculation axis is the rightmost
    layout = ms.Layout((2,) * len(names), names)
    x = seed_input(16)
    reset(parallel_mode="semi_auto_parallel", full_batch=True)
    want_model = ms.Model(seed_net(True))
    want_layouts, want = want_model.infer_predict_layout(ms.Tensor(x)), want_model.predict(ms.Tensor(x)).asnumpy()
    reset(parallel_mode="semi_auto_parallel", full_batch=True)
    ms.set_seed(SEED)
    net = Network()
    net.layer1.matmul.shard((layout("dp", "None"), layout("None", "mp")))
    net.layer3.matmul.shard((layout("dp", "mp"), layout("mp", "None")))
    model = ms.Model(net)
    assert model.infer_predict_layout(ms.Tensor(x)) == want_layouts
    np.testing.assert_array_equal(model.predict(ms.Tensor(x)).asnumpy(), want)
    # Same splits on other device axes: the weight is laid out as its Layout says (what the strategy
    # file records) and redistributed to the MatMul rule's layout when it runs.
    reset(parallel_mode="semi_auto_parallel", full_batch=True)
    ms.set_seed(SEED)
    net = Network()
    net.layer1.matmul.shard((layout("mp", "None"), layout("None", "dp")))
    model = ms.Model(net)
    got_layouts = model.infer_predict_layout(ms.Tensor(x))
    user = layout("None", "dp").to_layout((784, 512)).normalized()
    assert got_layouts["layer1.weight"][:2] == [list(user.dev_matrix), list(user.tensor_map)], got_layouts
    assert want_layouts["layer1.weight"][:2] != got_layouts["layer1.weight"][:2]
    assert_close(model.predict(ms.Tensor(x)).asnumpy(), want, rtol=1e-5, what="seed predict, Layouts on other axes")
    # out_strategy as Layouts: the output is moved to the Layout given, values unchanged.
    reset(parallel_mode="semi_auto_parallel", full_batch=True)
    a, w = np.random.RandomState(3).standard_normal((2, 16, 8)).astype(np.float32)
    mm = ops.MatMul().shard((layout("dp", "mp"), layout("mp", "None")), out_strategy=(layout("mp", "dp"),))
    out = mm(ms.Tensor(a), ms.Tensor(w[:8]))
    assert out.layout.same_blocks(layout("mp", "dp").to_layout((16, 8))), out.layout
    assert_close(full(out), a.astype(np.float64) @ w[:8], rtol=1e-5, what="MatMul out_strategy Layout")


if size() in (4, 8):  # the tutorials' strategies
    CHECKS.add("seed_shard_with_layouts", _seed_shard_with_layouts)


@CHECKS("seed_weights_are_slices")
def _seed_weights() -> None:
    ref = seed_full_weights()
    reset(parallel_mode="semi_auto_parallel", full_batch=True)
    net = seed_net(True)
    ms.Model(net).infer_predict_layout(ms.Tensor(seed_input(16)))
    for name, p in net.parameters_and_names():
        block = p.layout.block(ex.stage_rank())
        assert np.array_equal(p.asnumpy(), ref[name][block]), f"{name}: rank block != slice of the full tensor"


# ----------------------------------------------------------------------------- GPT block
def gpt_ids(batch: int) -> np.ndarray:
    return np.random.RandomState(5).randint(0, GPT_CFG["vocab"], size=(batch, GPT_CFG["seq"])).astype(np.int32)


def gpt_reference_logits(ids: np.ndarray) -> np.ndarray:
    from gpt_block import GPTBlock, full_params, gpt_reference

    reset()
    ms.set_seed(SEED)
    return gpt_reference(full_params(GPTBlock(**GPT_CFG)), ids, heads=GPT_CFG["heads"])


def gpt_predict(dp: int, mp: int, ids: np.ndarray, **ctx) -> np.ndarray:
    from gpt_block import GPTBlock, shard_gpt

    reset(parallel_mode="semi_auto_parallel", **ctx)
    ms.set_seed(SEED)
    return ms.Model(shard_gpt(GPTBlock(**GPT_CFG), dp, mp)).predict(ms.Tensor(ids)).asnumpy()


def _gpt_check(dp: int, mp: int):
    def body() -> None:
        ids = gpt_ids(8)
        want = gpt_reference_logits(ids)
        assert_close(gpt_predict(dp, mp, ids, full_batch=True), want, what=f"GPT dp={dp} mp={mp}")
    return body


for _dp, _mp in GPT_CONFIGS:
    if _dp * _mp <= size():
        CHECKS.add(f"gpt_{_dp}x{_mp}", _gpt_check(_dp, _mp))


@CHECKS("gpt_data_parallel")
def _gpt_data_parallel() -> None:
    n = size()
    dp, mp = (2, n // 2) if n >= 2 else (1, 1)
    local = 2
    ids = gpt_ids(local * n)
    want = gpt_reference_logits(ids)
    mine = ids[rank() * local:(rank() + 1) * local]
    got = gpt_predict(dp, mp, mine, full_batch=False)
    assert_close(got, want[rank() * local:(rank() + 1) * local], what=f"GPT data_parallel dp={dp} mp={mp}")


# ------------------------------------------------------------------------ communication
def _stats():
    return _backend.world().stats


def _delta(fn):
    """Run ``fn``; return its result and (messages, bytes_sent, allreduces) this rank issued."""
    st = _stats()
    before = (st.messages, st.bytes_sent, st.allreduces)
    out = fn()
    return out, (st.messages - before[0], st.bytes_sent - before[1], st.allreduces - before[2])


def _laid_out(arr: np.ndarray, layout: Layout) -> ms.Tensor:
    return ms.Tensor._make(np.ascontiguousarray(layout.slice(arr, ex.stage_rank())), arr.shape, layout)


@CHECKS("comm_col_to_row")
def _comm_col_to_row() -> None:
    reset(parallel_mode="semi_auto_parallel")
    n, me = size(), rank()
    arr = np.arange(16 * 24, dtype=np.float32).reshape(16, 24)
    src, dst = Layout((n,), (-1, 0), arr.shape), Layout((n,), (0, -1), arr.shape)
    out, (msgs, nbytes, ars) = _delta(lambda: ex.to_layout(_laid_out(arr, src), dst))
    plan = make_plan(src, dst)
    mine = [p for p in plan.pieces_from(me) if p.dst != me]
    totals = _backend.world().allgather_object(nbytes)
    assert np.array_equal(out.asnumpy(), dst.slice(arr, me)), "redistributed block is wrong"
    assert nbytes == sum(p.size for p in mine) * 4, (nbytes, mine)
    assert msgs == len({p.dst for p in mine}) == n - 1, (msgs, n)
    # Every rank keeps its own 1/n of its destination block and receives the rest: the minimum.
    assert sum(totals) == plan.moved_elements() * 4 == arr.nbytes * (n - 1) // n, (sum(totals), plan)
    assert ars == 0


@CHECKS("comm_replicated_to_split")
def _comm_replicated_to_split() -> None:
    reset(parallel_mode="semi_auto_parallel")
    n = size()
    arr = np.arange(16 * 8, dtype=np.float32).reshape(16, 8)
    dev = (2, n // 2) if n > 1 else (1,)
    dst = Layout(dev, (len(dev) - 1, -1), arr.shape)
    out, (msgs, nbytes, ars) = _delta(lambda: ex.to_layout(ms.Tensor(arr), dst))
    assert np.array_equal(out.asnumpy(), dst.slice(arr, rank()))
    assert (msgs, nbytes, ars) == (0, 0, 0), (msgs, nbytes, ars)


@CHECKS("comm_partial_sum")
def _comm_partial_sum() -> None:
    reset(parallel_mode="semi_auto_parallel")
    n = size()
    rs = np.random.RandomState(1)
    x, w = rs.standard_normal((8, 16)).astype(np.float32), rs.standard_normal((16, 8)).astype(np.float32)
    mm = ops.MatMul().shard(((1, n), (n, 1)))
    (out, (msgs, _, ars)) = _delta(lambda: full(mm(ms.Tensor(x), ms.Tensor(w))))
    assert_close(out, x.astype(np.float64) @ w, what="MatMul with a split contraction")
    assert (msgs, ars) == (0, 1 if n > 1 else 0), (msgs, ars)


@CHECKS("comm_reduce_scatter")
def _comm_reduce_scatter() -> None:
    """A partial sum going into a layout split over the partial axis is one ReduceScatter, no AllReduce."""
    reset(parallel_mode="semi_auto_parallel")
    n = size()
    rs = np.random.RandomState(2)
    x, w = rs.standard_normal((8, 16)).astype(np.float32), rs.standard_normal((16, 8)).astype(np.float32)
    mm = ops.MatMul().shard(((1, n), (n, 1)), out_strategy=((n, 1),))
    st = _stats()
    before = st.reduce_scatters
    (out, (msgs, _, ars)) = _delta(lambda: mm(ms.Tensor(x), ms.Tensor(w)))
    scatters = st.reduce_scatters - before
    assert out.layout.splits == (n, 1), out.layout
    assert_close(full(out), x.astype(np.float64) @ w, what="MatMul reduce-scattered over rows")
    assert (msgs, ars, scatters) == (0, 0, 1 if n > 1 else 0), (msgs, ars, scatters)


@CHECKS("comm_seed_predict")
def _comm_seed_predict() -> None:
    reset(parallel_mode="semi_auto_parallel", full_batch=True)
    net = seed_net(True)
    _, (_, _, ars) = _delta(lambda: ms.Model(net).predict(ms.Tensor(seed_input(16))))
    k3 = seed_strategies(size())[1][0][1]
    assert ars == (1 if k3 > 1 else 0), f"{ars} allreduces, expected one for layer3's split contraction"


@CHECKS("comm_gpt_allreduces")
def _comm_gpt_allreduces() -> None:
    from gpt_block import GPTBlock, shard_gpt

    n = size()
    mp = min(n, 4)
    reset(parallel_mode="semi_auto_parallel", full_batch=True)
    net = shard_gpt(GPTBlock(**GPT_CFG), n // mp, mp)
    _, (_, _, ars) = _delta(lambda: ms.Model(net).predict(ms.Tensor(gpt_ids(8))))
    # Embedding (vocab rows), attention output projection and MLP output projection.
    assert ars == (3 if mp > 1 else 0), f"{ars} allreduces with mp={mp}, expected 3"


# ---------------------------------------------------------------------------- op cases
def _splits() -> tuple[int, int]:
    """(a, b): a two-way (or whole) split and the rest of the devices, ``a * b == n``."""
    n = size()
    a = min(2, n)
    return a, n // a


def _rand(*shape, positive: bool = False) -> np.ndarray:
    rs = np.random.RandomState(sum(shape) + len(shape))
    arr = rs.standard_normal(shape).astype(np.float32)
    return np.abs(arr) + 0.5 if positive else arr


def _feed(arr: np.ndarray) -> ms.Tensor:
    """Feed ``arr`` split along its last dim when possible, so the op must redistribute it."""
    n = size()
    if arr.ndim == 0 or arr.shape[-1] % n or n == 1:
        return ms.Tensor(arr)
    lay = Layout((n,), (-1,) * (arr.ndim - 1) + (0,), arr.shape)
    return _laid_out(arr, lay)


def _matmul(ta: bool, tb: bool):
    def case():
        a, b = _splits()
        x = _rand(32, 16) if ta else _rand(16, 32)
        w = _rand(24, 32) if tb else _rand(32, 24)
        sx = (b, a) if ta else (a, b)
        sw = (1, b) if tb else (b, 1)
        got = ops.MatMul(ta, tb).shard((sx, sw))(_feed(x), _feed(w))
        want = (x.T if ta else x).astype(np.float64) @ (w.T if tb else w)
        return [(got, want)]
    return case


def _bmm(ta: bool, tb: bool):
    def case():
        a, b = _splits()
        x = _rand(4, 16, 8) if ta else _rand(4, 8, 16)
        w = _rand(4, 8, 16) if tb else _rand(4, 16, 8)
        sx = (a, b, 1) if ta else (a, 1, b)
        sw = (a, 1, b) if tb else (a, b, 1)
        got = ops.BatchMatMul(ta, tb).shard((sx, sw))(_feed(x), _feed(w))
        xm = np.swapaxes(x, -1, -2) if ta else x
        wm = np.swapaxes(w, -1, -2) if tb else w
        return [(got, np.matmul(xm.astype(np.float64), wm))]
    return case






def _bias_add():
    a, b = _splits()
    x, bias = _rand(8, 16, 4), _rand(16)
    return [(ops.BiasAdd().shard(((a, b, 1), (b,)))(_feed(x), _feed(bias)), x + bias[None, :, None])]


def _unary(prim, fn, shape=(8, 16), strategy="ab"):
    def case():
        a, b = _splits()
        x = _rand(*shape)
        s = tuple({"a": a, "b": b, "1": 1}[c] for c in strategy)
        return [(prim().shard((s,))(_feed(x)), fn(x.astype(np.float64)))]
    return case


def _np_softmax(x, axis=-1):
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)




def _split_input(arr: np.ndarray, dims: tuple[int, ...]) -> ms.Tensor:
    """``arr`` laid out with dim ``dims[0]`` split a ways and ``dims[1]`` split b ways."""
    a, b = _splits()
    tm = [-1] * arr.ndim
    tm[dims[0]] = 1
    tm[dims[1]] = 0
    return _laid_out(arr, Layout((a, b), tuple(tm), arr.shape))




def _reshape():
    x = _rand(8, 16)
    keep = ops.Reshape()(_split_input(x, (0, 1)), (8, 4, 4))
    gather = ops.Reshape()(_split_input(x, (0, 1)), (128,))
    return [(keep, x.reshape(8, 4, 4)), (gather, x.reshape(128))]


def _transpose():
    a, b = _splits()
    x = _rand(8, 16, 4)
    with_strategy = ops.Transpose().shard(((a, b, 1),))(_feed(x), (2, 0, 1))
    follow = ops.Transpose()(_split_input(x, (0, 1)), (1, 2, 0))
    return [(with_strategy, x.transpose(2, 0, 1)), (follow, x.transpose(1, 2, 0))]




def _gather():
    a, b = _splits()
    table = _rand(32, 8)
    ids = np.random.RandomState(2).randint(0, 32, size=(8, 4)).astype(np.int32)
    rows = ops.Gather().shard(((b, 1), (a, 1)))(_feed(table), ms.Tensor(ids), 0)
    cols = ops.Gather().shard(((1, b), (a, 1)))(_feed(table), ms.Tensor(ids), 0)
    return [(rows, table[ids]), (cols, table[ids])]


def _layer_norm():
    a, b = _splits()
    x, g, beta = _rand(8, 4, 16), _rand(16) + 1, _rand(16)
    y, mean, var = ops.LayerNorm(-1, -1, 1e-5).shard(((a, b, 1), (1,), (1,)))(_feed(x), ms.Tensor(g), ms.Tensor(beta))
    x64 = x.astype(np.float64)
    mu, v = x64.mean(-1, keepdims=True), x64.var(-1, keepdims=True)
    return [(y, (x64 - mu) / np.sqrt(v + 1e-5) * g + beta), (mean, mu), (var, v)]


def _reduce(prim_cls, fn):
    def case():
        a, b = _splits()
        x = _rand(8, 16)
        x64 = x.astype(np.float64)
        one = prim_cls(False).shard(((a, b),))(_feed(x), 1)
        keep = prim_cls(True).shard(((a, b),))(_feed(x), 1)
        every = prim_cls(False).shard(((a, b),))(_feed(x), ())
        return [(one, fn(x64, axis=1)), (keep, fn(x64, axis=1, keepdims=True)), (every, fn(x64))]
    return case




def _concat():
    a, b = _splits()
    x, y = _rand(8, 4), _rand(8, 12)
    along1 = ops.Concat(1).shard(((a, 1), (a, 1)))((_feed(x), _feed(y)))
    u, v = _rand(4, 16), _rand(12, 16)
    along0 = ops.Concat(0).shard(((1, b), (1, b)))((_feed(u), _feed(v)))
    return [(along1, np.concatenate([x, y], 1)), (along0, np.concatenate([u, v], 0))]




def _one_hot():
    a, b = _splits()
    ids = np.random.RandomState(4).randint(0, 16, size=(8,)).astype(np.int32)
    on, off = ms.Tensor(np.float32(2.0)), ms.Tensor(np.float32(-1.0))
    got = ops.OneHot().shard(((a, b), (), ()))(ms.Tensor(ids), 16, on, off)
    return [(got, np.where(ids[:, None] == np.arange(16), 2.0, -1.0).astype(np.float32))]


def _getitem():
    """Indexing keeps untouched dims split and makes cut dims whole; argmax sees the whole axis."""
    x = _rand(8, 16, 4)
    t = _split_input(x, (0, 1))
    idx = np.argmax(x, axis=1).astype(np.int32)
    return [(t[:, 3], x[:, 3]), (t[2:6, None, ..., 1], x[2:6, None, ..., 1]), (t[-1], x[-1]),
            (t.argmax(1), idx)]


# Every op family's rule and kernel is checked on simulated ranks (tests/test_ops_simulated.py);
# these run under mpirun because their inputs arrive in other layouts (so the executor really
# redistributes them) or their kernels read their block's place in the global tensor.
OP_CASES = [
    ("MatMul_transpose_ab", _matmul(True, True)), ("BatchMatMul", _bmm(False, False)),
    ("BiasAdd", _bias_add), ("Softmax_axis1", _unary(lambda: ops.Softmax(1), lambda x: _np_softmax(x, 1), (8, 16, 4), "a1b")),
    ("Reshape", _reshape), ("Transpose", _transpose), ("Gather", _gather), ("LayerNorm", _layer_norm),
    ("ReduceMean", _reduce(ops.ReduceMean, np.mean)), ("ReduceMax", _reduce(ops.ReduceMax, np.max)),
    ("Concat", _concat), ("OneHot", _one_hot), ("GetItem_ArgMax", _getitem),
]


def _op_check(name: str, case):
    def body() -> None:
        reset(parallel_mode="semi_auto_parallel")
        pairs = case()
        fulls = [(full(t), want) for t, want in pairs]  # every rank runs every collective first
        for i, ((got, want), (t, _)) in enumerate(zip(fulls, pairs)):
            assert t.shape == want.shape, f"{name} output {i}: shape {t.shape} != {want.shape}"
            # float64 references are numpy's exact answer for a float32 op; any other reference dtype
            # (float16 and int32 casts, float32 data movement, argmax indices) is the op's own.
            want_dtype = np.float32 if np.asarray(want).dtype == np.float64 else np.asarray(want).dtype
            assert got.dtype == want_dtype and t.dtype.np == want_dtype, \
                f"{name} output {i}: dtype {got.dtype} (tensor {t.dtype}) != {np.dtype(want_dtype)}"
            rtol = 1e-3 if got.dtype == np.float16 else 1e-5
            assert_close(got, np.asarray(want), rtol=rtol, what=f"{name} output {i}")
    return body


for _name, _case in OP_CASES:
    CHECKS.add(f"op_{_name}", _op_check(_name, _case))


if __name__ == "__main__":
    CHECKS.run()
