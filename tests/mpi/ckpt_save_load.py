"""Sharded save/load round trip, run under mpirun by tests/test_serialization.py.

    python -m distinfer.launch -n 4 tests/mpi/ckpt_save_load.py OUT_DIR

Each rank builds a small two-layer network with sharded MatMuls, predicts once, saves with
``integrated_save=True`` (full tensors) and ``False`` (its blocks) to ``OUT_DIR/rank_<r>/``,
checks both files, reloads them into fresh sharded networks and predicts again. Each rank prints
``PASS ckpt_save_load rank <r>/<n>`` when every check holds.
"""
from __future__ import annotations

import os
import sys

import numpy as np

import distinfer as ms
from distinfer import nn, ops
from distinfer.common.initializer import initializer

SEED = 7
IN, HID, OUT, BATCH = 16, 8, 4, 8


def strategies(n: int) -> tuple[tuple, tuple]:
    """layer1 splits the weight's columns (and the batch at 4 devices); layer2 its rows (partial sums)."""
    if n == 4:
        return ((2, 1), (1, 2)), ((2, 2), (2, 1))
    if n == 2:
        return ((1, 1), (1, 2)), ((1, 2), (2, 1))
    return ((1, 1), (1, 1)), ((1, 1), (1, 1))


class Net(nn.Cell):
    """x -> relu(x @ w1 + b1) @ w2 (+ b2), weights [in, out] like the tutorials' Dense."""

    def __init__(self, n: int) -> None:
        super().__init__()
        s1, s2 = strategies(n)
        self.w1 = ms.Parameter(initializer("normal", [IN, HID], ms.float32), name="w1")
        self.b1 = ms.Parameter(initializer("normal", [HID], ms.float32), name="b1")
        self.w2 = ms.Parameter(initializer("normal", [HID, OUT], ms.float32), name="w2")
        self.b2 = ms.Parameter(initializer("normal", [OUT], ms.float32), name="b2")
        self.matmul1 = ops.MatMul().shard(s1)
        self.add1 = ops.Add()
        self.relu = ops.ReLU()
        self.matmul2 = ops.MatMul().shard(s2)
        self.add2 = ops.Add()

    def construct(self, x):
        h = self.relu(self.add1(self.matmul1(x, self.w1), self.b1))
        return self.add2(self.matmul2(h, self.w2), self.b2)


def build(n: int, seed: int = SEED) -> Net:
    """The network with deterministic, rank-count-independent initial values."""
    ms.set_seed(seed)
    return Net(n)


def data() -> np.ndarray:
    return np.random.default_rng(3).standard_normal((BATCH, IN)).astype(np.float32)


def forward(params: dict, x: np.ndarray) -> np.ndarray:
    h = np.maximum(x @ params["w1"] + params["b1"], 0)
    return h @ params["w2"] + params["b2"]


def check(cond: bool, what: str) -> None:
    if not cond:
        raise AssertionError(what)


def main(out_dir: str) -> None:
    ms.set_auto_parallel_context(parallel_mode="semi_auto_parallel", full_batch=True)
    ms.communication.init()
    rank, n = ms.communication.get_rank(), ms.communication.get_group_size()
    x = ms.Tensor(data())
    net = build(n)
    y = ms.Model(net).predict(x).asnumpy()
    sliced = [name for name, p in net.parameters_and_names() if p.layout is not None and not p.layout.is_replicated]
    check(bool(sliced) or n == 1, f"no parameter was sliced on {n} ranks")

    d = os.path.join(out_dir, f"rank_{rank}")
    os.makedirs(d, exist_ok=True)
    full_path, block_path = os.path.join(d, "full.ckpt"), os.path.join(d, "block.ckpt")
    ms.save_checkpoint(net, full_path, integrated_save=True)
    ms.save_checkpoint(net, block_path, integrated_save=False, append_dict={"rank": rank})

    full = {k: v.asnumpy() for k, v in ms.load_checkpoint(full_path).items()}
    blocks = ms.load_checkpoint(block_path)
    for name, p in net.parameters_and_names():
        check(full[name].shape == p.global_shape, f"{name}: full file holds {full[name].shape}, "
                                                  f"expected {p.global_shape}")
        check(np.array_equal(blocks[name].asnumpy(), p.asnumpy()), f"{name}: block file != local block")
        if p.layout is not None:
            check(np.array_equal(full[name][p.layout.block(rank)], p.asnumpy()),
                  f"{name}: full tensor sliced to rank {rank}'s block != local block")
    check(int(blocks["rank"].asnumpy()) == rank, "append_dict value")
    np.testing.assert_allclose(y, forward(full, data()), rtol=1e-5, atol=1e-5)

    # 1) a fresh (lazy, unsliced) net takes the full tensors; slicing happens at its first op.
    net1 = build(n, seed=SEED + 1)
    not_loaded, _ = ms.load_param_into_net(net1, ms.load_checkpoint(full_path))
    check(not not_loaded, f"not loaded: {not_loaded}")
    np.testing.assert_array_equal(ms.Model(net1).predict(x).asnumpy(), y)

    # 2) a compiled (sliced) net takes this rank's blocks ...
    net2 = build(n, seed=SEED + 2)
    y2 = ms.Model(net2).predict(x).asnumpy()
    check(not np.allclose(y2, y), "a differently seeded net predicted the same output")
    ms.load_checkpoint(block_path, net=net2)
    np.testing.assert_array_equal(ms.Model(net2).predict(x).asnumpy(), y)

    # 3) ... or the full tensors, sliced by set_data.
    net3 = build(n, seed=SEED + 3)
    ms.Model(net3).predict(x)
    ms.load_checkpoint(full_path, net=net3)
    np.testing.assert_array_equal(ms.Model(net3).predict(x).asnumpy(), y)

    # 4) asynchronous integrated save: the gather is collective, the write is in the background.
    async_path = os.path.join(d, "async.ckpt")
    ms.save_checkpoint(net, async_path, integrated_save=True, async_save=True)
    again = ms.load_checkpoint(async_path)  # waits for the writer
    for name in full:
        check(np.array_equal(again[name].asnumpy(), full[name]), f"{name}: async save differs")
    print(f"PASS ckpt_save_load rank {rank}/{n} sliced={','.join(sliced)}", flush=True)


if __name__ == "__main__":
    main(sys.argv[1])
