"""Drop-in semantics under ``mpirun -n 1, 2, 4, 8``: what MindSpore scripts rely on beyond the ops.

* the strategy file is whole and readable on every rank as soon as compiling returns (one shared path,
  or one path per rank);
* ``transform_checkpoints`` is not collective: one rank may call it alone; ``split_among_ranks=True``
  divides the files among all ranks;
* ``communication.comm_func`` collectives against numpy, on the world and on a group;
* a ``jit`` function and an ``AutoParallel`` network run as parallel graphs: inputs are each rank's share of
  the global batch, outputs each rank's share of the result, compared with numpy on the global batch;
* ``sync_pipeline_shared_parameters`` copies a weight used by two stages from the first to the second.

``tests/test_mpi_dropin.py`` launches this file and asserts on the ``PASS`` lines.
"""
from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import distinfer as ms  # noqa: E402
from distinfer import nn, ops  # noqa: E402
from distinfer.communication import _backend, comm_func, create_group, destroy_group  # noqa: E402
from distinfer.io import ParamLayout, StrategyFile, write_ckpt, write_strategy  # noqa: E402
from distinfer.parallel.auto_parallel import AutoParallel  # noqa: E402

from _harness import Checks, assert_close, rank, reset, size  # noqa: E402

CHECKS = Checks()


def check_names(n: int) -> list[str]:
    """Names of the checks this script runs on ``n`` ranks (for the pytest side)."""
    return ["strategy_file_shared_path", "strategy_file_per_rank", "transform_on_one_rank",
            "transform_split_among_ranks", "comm_func_world", "comm_func_group", "comm_func_point_to_point",
            "jit_graph_call", "auto_parallel_call", "sync_pipeline_shared_parameters"]


def _shared_dir() -> Path:
    """A fresh directory every rank sees (rank 0 makes it)."""
    return Path(_backend.world().bcast_object(tempfile.mkdtemp() if rank() == 0 else None))


def _seed_net() -> nn.Cell:
    ms.set_seed(3)
    net = nn.SequentialCell([nn.Dense(16, 8 * size()), nn.ReLU(), nn.Dense(8 * size(), 4)])
    net[0].matmul.shard(((1, 1), (size(), 1)))  # Dense's weight is [out, in]: split its rows
    return net


def _compile_and_read(path_of_rank) -> dict:
    reset(parallel_mode="semi_auto_parallel", full_batch=True,
          strategy_ckpt_config={"save_file": str(path_of_rank(rank()))})
    ms.Model(_seed_net()).infer_predict_layout(ms.Tensor(np.ones((4, 16), np.float32)))
    return ms.build_searched_strategy(str(path_of_rank(rank())))  # at once, on every rank


@CHECKS("strategy_file_shared_path")
def _() -> None:
    folder = _shared_dir()
    layouts = _compile_and_read(lambda r: folder / "strategy.ckpt")
    assert set(layouts) == {"0.weight", "0.bias", "2.weight", "2.bias"}, sorted(layouts)
    assert list(layouts["0.weight"].dev_matrix[0].dim) == ([size()] if size() > 1 else [1])


@CHECKS("strategy_file_per_rank")
def _() -> None:
    folder = _shared_dir()
    layouts = _compile_and_read(lambda r: folder / f"strategy_{r}.ckpt")
    _backend.world().barrier()
    assert sorted(os.listdir(folder)) == sorted(f"strategy_{r}.ckpt" for r in range(size())), os.listdir(folder)
    assert "0.weight" in layouts


def _transform_sources(folder: Path) -> np.ndarray:
    """Two source ranks holding column halves of w; rank 0 writes them."""
    full = np.arange(32, dtype=np.float32).reshape(4, 8)
    if rank() == 0:
        for r in range(2):
            os.makedirs(folder / "src" / f"rank_{r}")
            write_ckpt(str(folder / "src" / f"rank_{r}" / "net.ckpt"), [("w", full[:, 4 * r:4 * r + 4])])
        write_strategy(str(folder / "src.ckpt"), StrategyFile(layouts={"w": ParamLayout([2], [-1, 0])}))
        write_strategy(str(folder / "dst.ckpt"), StrategyFile(layouts={"w": ParamLayout([4], [0, -1])}))
    _backend.world().barrier()
    return full


@CHECKS("transform_on_one_rank")
def _() -> None:
    folder = _shared_dir()
    full = _transform_sources(folder)
    if rank() == 0:  # the others do not take part (a collective call would hang here)
        ms.transform_checkpoints(str(folder / "src"), str(folder / "dst"), "c_", str(folder / "src.ckpt"),
                                 str(folder / "dst.ckpt"))
    _backend.world().barrier()
    got = [ms.load_checkpoint(str(folder / "dst" / f"rank_{r}" / f"c_{r}.ckpt"))["w"].asnumpy() for r in range(4)]
    assert_close(np.concatenate(got), full, what="rows of w")


@CHECKS("transform_split_among_ranks")
def _() -> None:
    folder = _shared_dir()
    full = _transform_sources(folder)
    ms.transform_checkpoints(str(folder / "src"), str(folder / "dst"), "c_", str(folder / "src.ckpt"),
                             str(folder / "dst.ckpt"), split_among_ranks=True)
    got = [ms.load_checkpoint(str(folder / "dst" / f"rank_{r}" / f"c_{r}.ckpt"))["w"].asnumpy() for r in range(4)]
    assert_close(np.concatenate(got), full, what="rows of w")


def _mine(shape=(2, 3)) -> np.ndarray:
    return (np.arange(int(np.prod(shape)), dtype=np.float32).reshape(shape) + 1) * (rank() + 1)


def _all(shape=(2, 3), ranks=None) -> list[np.ndarray]:
    return [(np.arange(int(np.prod(shape)), dtype=np.float32).reshape(shape) + 1) * (r + 1)
            for r in (range(size()) if ranks is None else ranks)]


def _collectives(group: str, ranks: list[int]) -> None:
    x = ms.Tensor(_mine((len(ranks) * 2, 3)))
    every = _all((len(ranks) * 2, 3), ranks)
    total = np.sum(every, axis=0)
    for op, want in (("sum", total), ("max", np.max(every, axis=0)), ("min", np.min(every, axis=0)),
                     ("prod", np.prod(every, axis=0))):
        out, handle = comm_func.all_reduce(x, op=op, group=group)
        assert handle is None
        assert_close(out.asnumpy(), want, what=f"all_reduce {op}")
    assert_close(comm_func.all_gather_into_tensor(x, group=group)[0].asnumpy(), np.concatenate(every),
                 what="all_gather_into_tensor")
    me = ranks.index(rank())
    assert_close(comm_func.reduce_scatter_tensor(x, group=group)[0].asnumpy(), total[2 * me:2 * me + 2],
                 what="reduce_scatter_tensor")
    src = ranks[-1]
    assert_close(comm_func.broadcast(x, src=src, group=group).asnumpy(), every[-1], what="broadcast")
    reduced = comm_func.reduce(x, dst=src, group=group).asnumpy()
    assert_close(reduced, total if rank() == src else np.zeros_like(total), what="reduce")
    gathered = comm_func.gather_into_tensor(x, dst=src, group=group).asnumpy()
    assert_close(gathered, np.concatenate(every) if rank() == src else np.zeros_like(every[0]),
                 what="gather_into_tensor")
    assert_close(comm_func.scatter_tensor(x, src=src, group=group).asnumpy(), every[-1][2 * me:2 * me + 2],
                 what="scatter_tensor")
    comm_func.barrier(group)


@CHECKS("comm_func_world")
def _() -> None:
    _collectives("hccl_world_group", list(range(size())))


@CHECKS("comm_func_group")
def _() -> None:
    evens = list(range(0, size(), 2))
    if rank() in evens:
        create_group("evens", evens)
        try:
            _collectives("evens", evens)
        finally:
            destroy_group("evens")


@CHECKS("comm_func_point_to_point")
def _() -> None:
    if size() == 1:
        return
    nxt, prev = (rank() + 1) % size(), (rank() - 1) % size()
    x = ms.Tensor(_mine())
    if rank() % 2 == 0:  # even ranks send first, so every send meets a posted receive
        comm_func.send(x, dst=nxt)
        got = comm_func.recv(ms.Tensor(np.zeros((2, 3), np.float32)), src=prev)
    else:
        got = comm_func.recv(ms.Tensor(np.zeros((2, 3), np.float32)), src=prev)
        comm_func.isend(x, dst=nxt).wait()
    assert_close(got.asnumpy(), _all()[prev], what="ring")


def _rows(rows: int) -> np.ndarray:
    return np.arange(rows * 16, dtype=np.float32).reshape(rows, 16) / 100 + rank()


@CHECKS("jit_graph_call")
def _() -> None:
    reset(parallel_mode="semi_auto_parallel")  # dataset_strategy "data_parallel": each rank feeds its shard
    net = _seed_net()

    @ms.jit
    def forward(x):
        return net(x), ops.reduce_sum(x)

    out, total = forward(ms.Tensor(_rows(2)))
    reset()
    everyone = np.concatenate([np.arange(32, dtype=np.float32).reshape(2, 16) / 100 + r for r in range(size())])
    want = _seed_net()(ms.Tensor(everyone)).asnumpy()  # the same initial weights, one process
    assert out.shape == (2, 4) and out.layout is None
    assert_close(out.asnumpy(), want[2 * rank():2 * rank() + 2], what="each rank's rows of the output")
    assert_close(total.asnumpy(), everyone.sum(), what="sum over the global batch")


@CHECKS("auto_parallel_call")
def _() -> None:
    reset()
    folder = _shared_dir()
    parallel = AutoParallel(_seed_net(), parallel_mode="semi_auto")
    parallel.save_param_strategy_file(str(folder / "auto.ckpt"))
    out = parallel(ms.Tensor(_rows(2)))
    assert ms.get_auto_parallel_context("parallel_mode") == "stand_alone"  # the configuration did not leak
    everyone = np.concatenate([np.arange(32, dtype=np.float32).reshape(2, 16) / 100 + r for r in range(size())])
    want = _seed_net()(ms.Tensor(everyone)).asnumpy()
    assert_close(out.asnumpy(), want[2 * rank():2 * rank() + 2], what="each rank's rows of the output")
    assert "0.weight" in ms.build_searched_strategy(str(folder / "auto.ckpt"))


@CHECKS("sync_pipeline_shared_parameters")
def _() -> None:
    """Two stages (one rank: one stage, where syncing must leave the weight alone)."""
    stages = 2 if size() % 2 == 0 else 1
    reset(parallel_mode="semi_auto_parallel", pipeline_stages=stages, full_batch=True)
    shared = ms.Parameter(ms.Tensor(np.full((4, 4), 2.0, np.float32)), name="shared")

    class Stage(nn.Cell):
        def __init__(self):
            super().__init__()
            self.w = shared

        def construct(self, x):
            return ops.matmul(x, self.w)

    first, second = Stage(), Stage()
    first.pipeline_stage, second.pipeline_stage = 0, stages - 1
    net = nn.SequentialCell([first, second])
    net.compile(ms.Tensor(np.ones((2, 4), np.float32)))  # each stage lays its use of the weight out
    stage = rank() // (size() // stages)
    if stage == 1:
        shared.set_data(ms.Tensor(np.zeros((4, 4), np.float32)))  # the stages now disagree
    ms.sync_pipeline_shared_parameters(net)
    assert_close(shared.asnumpy(), np.full(shared.shape, 2.0, np.float32), what=f"stage {stage}'s copy")


if __name__ == "__main__":
    CHECKS.run()
