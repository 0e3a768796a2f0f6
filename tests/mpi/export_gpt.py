"""MPI body of tests/test_export.py: Megatron-style GPT block, a MatMul with out_strategy, and an
input laid out by a named-axes Layout that splits its rows over the inner device axis first
(its redistribution is written as Send/Receive: no group of ranks holds consecutive rows).

    python -m distinfer.launch -n 4 tests/mpi/export_gpt.py OUT_DIR

Each rank exports, loads its own file and checks GraphCell == Model.predict exactly; prints ``OK <rank>``.
"""
import os
import sys

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "examples"))

import distinfer as ms  # noqa: E402
from distinfer import nn, ops  # noqa: E402
from distinfer.communication import get_group_size, get_rank, init  # noqa: E402
from gpt_block import GPTBlock, shard_gpt  # noqa: E402


class ReduceScatterNet(nn.Cell):
    """MatMul whose split contraction is reduced straight into a row split (out_strategy)."""

    def __init__(self):
        super().__init__()
        self.w = ms.Parameter(ms.Tensor(np.random.default_rng(1).random((8, 6), dtype=np.float32)), name="w")
        self.mm = ops.MatMul().shard(((1, 2), (2, 1)), out_strategy=((2, 1),))

    def construct(self, x):
        return ops.relu(self.mm(x, self.w))


class Scaled(nn.Cell):
    """ReLU (default batch split, rows in rank order) of an input whose rows are not in rank order."""

    def construct(self, x):
        return ops.relu(x) * 2.0


def check(net, x, path) -> None:
    path = ms.export(net, x, file_name=path)
    expected = ms.Model(net).predict(x).asnumpy()
    got = nn.GraphCell(ms.load(path))(x).asnumpy()
    assert np.array_equal(got, expected), f"{path}: differs by {np.abs(got - expected).max()}"


def main(out_dir: str) -> None:
    ms.set_seed(3)
    ms.set_auto_parallel_context(parallel_mode="semi_auto_parallel", dataset_strategy="full_batch")
    init()
    rank, size = get_rank(), get_group_size()
    gpt = shard_gpt(GPTBlock(vocab=32, hidden=16, heads=4, seq=8), 2, size // 2)
    ids = ms.Tensor(np.random.default_rng(0).integers(0, 32, (4, 8)).astype(np.int32))
    check(gpt, ids, os.path.join(out_dir, f"gpt_rank_{rank}"))
    x = ms.Tensor(np.random.default_rng(2).random((4, 8), dtype=np.float32))
    check(ReduceScatterNet(), x, os.path.join(out_dir, f"mm_rank_{rank}"))
    rows_inner_first = ms.Layout((2, 2), ("a", "b"))(("b", "a"), "None")
    ms.set_auto_parallel_context(dataset_strategy=(rows_inner_first,))
    full = np.random.default_rng(4).standard_normal((8, 4)).astype(np.float32)
    check(Scaled(), ms.Tensor(full[rows_inner_first.to_layout(full.shape).block(rank)]),
          os.path.join(out_dir, f"rows_rank_{rank}"))
    print(f"OK {rank}", flush=True)


if __name__ == "__main__":
    main(sys.argv[1])
