"""Sharding propagation, shard regions, arranged ops and interleaved layouts under ``mpirun -n 1, 2, 4, 8``:
predictions and training against numpy or one process, and the redistributions counted.
``tests/test_mpi_propagation.py`` launches it; :func:`check_names` lists what runs on ``n`` ranks.
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT / "examples"), str(Path(__file__).resolve().parent)]

import distinfer as ms  # noqa: E402
from distinfer import Parameter, Tensor, nn, ops  # noqa: E402
from distinfer.layout import replicated  # noqa: E402
from distinfer.parallel import _executor as ex  # noqa: E402
from distinfer.parallel import propagation  # noqa: E402

from propagation_nets import FFN, ShardFunctionNet, gpt_key_ops_only  # noqa: E402

from _harness import Checks, assert_close, full, rank, reset, size  # noqa: E402

CHECKS = Checks()


def check_names(n: int) -> list[str]:
    names = ["gpt_key_ops_predict", "ffn_predict_full_batch", "ffn_predict_data_parallel", "ffn_train_matches_one_process",
             "chain_moves_nothing_between_propagated_ops", "shard_region_predict", "semi_auto_function_regions",
             "shared_parameter_conflict_everywhere"]
    if n >= 4:
        names += ["arranged_ops_predict", "interleaved_predict"]
    return names


def _auto(**kw) -> None:
    reset(parallel_mode="auto_parallel", search_mode="sharding_propagation", **kw)


def _matmul_strategy(n: int) -> tuple:
    """dense1's strategy: the tutorial's ((2, 1), (1, 4)) on 8 ranks, scaled down below."""
    return {8: ((2, 1), (1, 4)), 4: ((2, 1), (1, 2)), 2: ((1, 1), (1, 2)), 1: ((1, 1), (1, 1))}[n]


def _ffn(sharded: bool):
    ms.set_seed(1)
    net = FFN()
    if sharded:
        net.dense1.matmul.shard(_matmul_strategy(size()))
    return net


def _weights(net) -> dict[str, np.ndarray]:
    """Whole parameter values on every rank (a sliced Parameter's ``shape`` is its local one)."""
    def whole(p):
        return p.asnumpy() if p.layout is None else \
            ex.to_layout(p, replicated(p.global_shape, ex.stage_devices())).asnumpy()
    return {name: whole(p).astype(np.float64) for name, p in net.parameters_and_names()}


def _ffn_reference(weights: dict, x: np.ndarray) -> np.ndarray:
    h = x.reshape(len(x), -1).astype(np.float64) @ weights["dense1.weight"] + weights["dense1.bias"]
    return np.maximum(h, 0) @ weights["dense2.weight"] + weights["dense2.bias"]


def _images(batch: int, seed: int = 3) -> np.ndarray:
    return np.random.RandomState(seed).standard_normal((batch, 1, 28, 28)).astype(np.float32)


def _initial_weights() -> dict:
    reset()
    net = _ffn(False)
    return {k: p.init_data().asnumpy().astype(np.float64) for k, p in net.parameters_and_names()}


@CHECKS("gpt_key_ops_predict")
def _gpt_key_ops() -> None:
    """The GPT block with strategies on its 9 key ops only predicts as numpy does (data_parallel inputs)."""
    from gpt_block import GPTBlock, full_params, gpt_reference

    cfg = dict(vocab=64, hidden=32, heads=4, seq=8, ffn=64)
    n, local = size(), 2
    dp, mp = {1: (1, 1), 2: (1, 2), 4: (2, 2), 8: (2, 4)}[n]
    ids = np.random.RandomState(5).randint(0, cfg["vocab"], size=(local * n, cfg["seq"])).astype(np.int32)
    reset()
    ms.set_seed(11)
    want = gpt_reference(full_params(GPTBlock(**cfg)), ids, heads=cfg["heads"])
    _auto()
    ms.set_seed(11)
    got = ms.Model(gpt_key_ops_only(GPTBlock(**cfg), dp, mp)).predict(Tensor(ids[rank() * local:(rank() + 1) * local]))
    assert_close(got.asnumpy(), want[rank() * local:(rank() + 1) * local], what=f"GPT key ops only, dp={dp} mp={mp}")


@CHECKS("ffn_predict_full_batch")
def _ffn_full_batch() -> None:
    x = _images(16)
    want = _ffn_reference(_initial_weights(), x)
    _auto(full_batch=True)
    got = ms.Model(_ffn(True)).predict(Tensor(x)).asnumpy()
    assert_close(got, want, what="FFN predict (auto_parallel, full_batch)")


@CHECKS("ffn_predict_data_parallel")
def _ffn_data_parallel() -> None:
    local = 4
    x = _images(local * size())
    want = _ffn_reference(_initial_weights(), x)
    _auto()
    net = _ffn(True)
    got = ms.Model(net).predict(Tensor(x[rank() * local:(rank() + 1) * local])).asnumpy()
    assert_close(got, want[rank() * local:(rank() + 1) * local], what="FFN predict (auto_parallel, data_parallel)")
    if size() == 8:  # MindSpore's tutorial: what the unconfigured ops become
        decided = [(op, s) for op, s, conf in propagation.last_plan(net).decisions if not conf]
        assert decided[:3] == [("Add", ((2, 4), (4,))), ("ReLU", ((2, 4),)), ("MatMul", ((2, 4), (4, 1)))], decided


def _train(parallel: bool, steps: int = 3) -> tuple[list[float], dict]:
    """The tutorial's training loop (value_and_grad + Momentum) on the same batches on every rank."""
    if parallel:
        _auto(full_batch=True)
    else:
        reset()
    net = _ffn(parallel)
    optimizer = nn.Momentum(net.trainable_params(), 1e-2, 0.9)
    loss_fn = nn.CrossEntropyLoss()

    def forward_fn(data, target):
        logits = net(data)
        return loss_fn(logits, target), logits

    grad_fn = ms.value_and_grad(forward_fn, None, net.trainable_params(), has_aux=True)
    rs = np.random.RandomState(7)
    losses = []
    for _ in range(steps):
        x = rs.standard_normal((16, 1, 28, 28)).astype(np.float32)
        y = rs.randint(0, 10, size=16).astype(np.int32)
        (loss, _), grads = grad_fn(Tensor(x), Tensor(y))
        optimizer(grads)
        losses.append(float(loss.asnumpy()))
    return losses, _weights(net)


@CHECKS("ffn_train_matches_one_process")
def _ffn_train() -> None:
    want_losses, want_weights = _train(False)
    losses, weights = _train(True)
    assert_close(np.array(losses), np.array(want_losses), rtol=1e-5, what="losses")
    for name, w in want_weights.items():
        assert_close(weights[name], w, rtol=1e-5, what=f"trained {name}")


class _Events:
    """An executor observer listing ops and communications in the order they happen."""

    def __init__(self) -> None:
        self.events: list[tuple[str, str]] = []

    def op(self, prim, *args) -> None:
        self.events.append(("op", prim.name))

    def comm(self, kind: str, **info) -> None:
        self.events.append(("comm", kind))


class _Chain(nn.Cell):
    """One configured MatMul, then four elementwise ops nobody configured."""

    def __init__(self, n: int) -> None:
        super().__init__()
        ms.set_seed(2)
        self.w = Parameter(Tensor(np.random.RandomState(4).standard_normal((32, 16)).astype(np.float32)), name="w")
        self.mm = ops.MatMul().shard({8: ((2, 2), (2, 2)), 4: ((1, 2), (2, 2)), 2: ((1, 2), (2, 1)),
                                      1: ((1, 1), (1, 1))}[n])

    def construct(self, x):
        return ops.sigmoid(ops.mul(ops.relu(ops.add(self.mm(x, self.w), 0.5)), 2.0))


def _chain_events(mode: str) -> tuple[np.ndarray, list]:
    x = np.random.RandomState(5).standard_normal((8, 32)).astype(np.float32)
    if mode == "auto":
        _auto(full_batch=True)
    else:
        reset(parallel_mode="semi_auto_parallel", full_batch=True)
    net = _Chain(size())
    events = _Events()
    with ex.observing(events):
        out = net(Tensor(x))
    between = events.events[events.events.index(("op", "MatMul")):events.events.index(("op", "Sigmoid"))]
    return full(out), between


@CHECKS("chain_moves_nothing_between_propagated_ops")
def _chain() -> None:
    x = np.random.RandomState(5).standard_normal((8, 32)).astype(np.float64)
    w = np.random.RandomState(4).standard_normal((32, 16))
    want = 1 / (1 + np.exp(-2 * np.maximum(x @ w + 0.5, 0)))
    got, between = _chain_events("auto")
    assert_close(got, want, what="chain (auto_parallel)")
    moves = [e for e in between if e == ("comm", "redistribute")]
    reductions = [e for e in between if e[0] == "comm" and e[1] != "redistribute"]
    assert not moves and len(reductions) <= 1, between  # the MatMul's partial sum reduced once, nothing moved
    got_semi, between_semi = _chain_events("semi")  # batch-parallel defaults instead: the blocks move
    assert_close(got_semi, want, what="chain (semi_auto_parallel)")
    if size() >= 4:
        assert ("comm", "redistribute") in between_semi, between_semi


def _shard_function_net():
    ms.set_seed(1)
    return ShardFunctionNet()


@CHECKS("shard_region_predict")
def _shard_region() -> None:
    """The shard function sample's network (block1 sharded with Cell.shard and a parameter_plan) predicts
    as one process does, in auto_parallel (propagated everywhere) and semi_auto_parallel (inside the region)."""
    x = _images(8)
    reset()
    want = _shard_function_net()(Tensor(x)).asnumpy()
    for mode in ("auto_parallel", "semi_auto_parallel"):
        reset(parallel_mode=mode, search_mode="sharding_propagation", full_batch=True)
        net = _shard_function_net()
        got = ms.Model(net).predict(Tensor(x)).asnumpy()
        assert_close(got, want, rtol=1e-5, what=f"shard function sample ({mode})")
        weight = net.block1.dense2.weight
        if size() > 1:
            assert weight.layout.splits == (size(), 1), weight.layout
        ms.reset_auto_parallel_context()


@CHECKS("semi_auto_function_regions")
def _function_regions() -> None:
    """The mint operator-parallel sample's form: ms.shard on functions in semi_auto_parallel."""
    n = size()
    a = 2 if n >= 2 else 1
    rs = np.random.RandomState(6)
    x, w1, w2 = (rs.standard_normal(s).astype(np.float32) for s in ((8, 32), (32, 16), (16, 8)))
    reset(parallel_mode="semi_auto_parallel", full_batch=True)
    matmul1 = ms.shard(ops.matmul, in_strategy=((a, n // a), (n // a, 1)))
    relu1 = ms.shard(ops.relu, in_strategy=((n, 1),))
    matmul2 = ms.shard(ops.matmul, in_strategy=((1, n), (n, 1)))
    out = ops.matmul(matmul2(relu1(matmul1(Tensor(x), Tensor(w1))), Tensor(w2)), Tensor(np.eye(8, dtype=np.float32)))
    want = np.maximum(x.astype(np.float64) @ w1, 0) @ w2
    assert_close(full(out), want, what="ms.shard function regions")
    if n > 1:
        decided = propagation.last_plan(matmul1).decisions
        assert ("MatMul", ((a, n // a), (n // a, 1)), False) in decided, decided


@CHECKS("shared_parameter_conflict_everywhere")
def _conflict() -> None:
    n = size()
    reset(parallel_mode="semi_auto_parallel", full_batch=True)

    class Net(nn.Cell):
        def __init__(self):
            super().__init__()
            self.mul1 = ops.Mul().shard(((n, 1), (n, 1)))
            self.mul2 = ops.Mul().shard(((1, n), (1, n)))
            self.w = Parameter(Tensor(np.ones((8, 8), np.float32)), name="w1")

        def construct(self, x):
            return self.mul2(self.mul1(x, self.w), self.w)

    try:
        ms.Model(Net()).predict(Tensor(np.ones((8, 8), np.float32)))
        raised = ""
    except RuntimeError as exc:
        raised = str(exc)
    if n == 1:
        assert not raised, raised
    else:
        assert "The parameter: w1 has multiple users, but the TensorInfo are different" in raised, raised


class _LayoutNet(nn.Cell):
    def __init__(self, make) -> None:
        super().__init__()
        self.region = make()

    def construct(self, x, y):
        return self.region(x, y)


@CHECKS("arranged_ops_predict")
def _arranged() -> None:
    """Ops propagated into a neighbour's device arrangement (MindSpore's layout test cases) compute as numpy does."""
    n = size()
    dev = (2, 2, n // 4, 1) if n == 8 else (2, 2, 1, 1)
    ly = ms.Layout(dev, ("a0", "a1", "a2", "a3"))
    rs = np.random.RandomState(8)
    x, y = rs.standard_normal((16, 12)).astype(np.float32), rs.standard_normal((12, 12)).astype(np.float32)
    cases = [
        (lambda: ms.shard(ops.matmul, in_strategy=(ly("a3", "a1"), ly("a1", "a0"))), x, y, x.astype(np.float64) @ y),
        (lambda: ms.shard(lambda p, q: ops.relu(ops.add(p, q)), in_strategy=(ly("a1", "a0"), ly("a1", "a0"))),
         x[:12], y, np.maximum(x[:12].astype(np.float64) + y, 0)),
    ]
    for make, p, q, want in cases:
        _auto(full_batch=True)
        got = ms.Model(_LayoutNet(make)).predict(Tensor(p), Tensor(q)).asnumpy()
        assert_close(got, want, what="arranged op")


@CHECKS("interleaved_predict")
def _interleaved() -> None:
    n = size()
    names = ("dp", "mp", "interleaved_parallel")
    layout = ms.Layout((2, n // 2, 2), names)
    rs = np.random.RandomState(9)
    x, w = rs.standard_normal((16, 8)).astype(np.float32), rs.standard_normal((8, 12)).astype(np.float32)
    reset(parallel_mode="semi_auto_parallel", full_batch=True)
    mm = ops.MatMul().shard((layout(("dp", "interleaved_parallel"), "None"), layout("None", "mp")))

    class Net(nn.Cell):
        def __init__(self):
            super().__init__()
            self.w = Parameter(Tensor(w), name="w")
            self.mm = mm

        def construct(self, a):
            return self.mm(a, self.w)

    net = Net()
    got = ms.Model(net).predict(Tensor(x)).asnumpy()
    assert_close(got, x.astype(np.float64) @ w, what="MatMul with interleaved_parallel Layouts")
    assert net.w.layout.splits == (1, n // 2), net.w.layout


if __name__ == "__main__":
    wanted = set(check_names(size()))
    CHECKS.items = [(name, fn) for name, fn in CHECKS.items if name in wanted]
    CHECKS.run()
