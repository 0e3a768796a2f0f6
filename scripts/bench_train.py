"""Training throughput of the tutorials' seed network at 1, 2, 4 and 8 ranks, in one run.

Semi-auto parallel, ``data_parallel`` dataset strategy (each rank feeds its own batch of 32, so
the global batch is 32 x ranks), the tutorial strategies where they fit (layer1
``((2, 1), (1, 2))``, layer3 ``((2, 2), (2, 1))`` from 4 ranks; 2-way variants at 2 ranks), SGD.
The parent launches each rank count through :func:`distinfer.launch.run`; every child times its
steps in 3 rounds and rank 0 prints one ``BENCH`` line (per round the slowest rank's time; the
fastest round is reported, as other jobs may share the cores). The table gives steps per
second and samples per second relative to one process.

    .venv/bin/python scripts/bench_train.py [--ranks 1,2,4,8] [--steps 20]
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
BATCH = 32
WARMUP = 2
ROUNDS = 3  # timed rounds; the fastest is reported (the machine may be shared)


def strategies(n: int) -> tuple | None:
    """The tutorial strategies when ``n >= 4``; 2-way versions at 2 ranks; none at 1."""
    if n >= 4:
        return ((2, 1), (1, 2)), ((2, 2), (2, 1))
    if n == 2:
        return ((2, 1), (1, 1)), ((1, 2), (2, 1))
    return None


def child(steps: int) -> None:
    """One rank: train WARMUP steps, then time ROUNDS x ``steps`` steps; rank 0 prints the result."""
    sys.path.insert(0, str(ROOT / "examples"))
    import distinfer as ms
    import distinfer.dataset as ds
    from distinfer import nn
    from distinfer.communication import _backend, get_group_size, get_rank, init
    from seed_net import seed_network

    init()
    n, rank = get_group_size(), get_rank()
    ms.set_auto_parallel_context(parallel_mode="semi_auto_parallel", dataset_strategy="data_parallel")
    ms.set_seed(1)
    net = seed_network(shard=False)
    shard = strategies(n)
    if shard:
        net.layer1.matmul.shard(shard[0])
        net.layer3.matmul.shard(shard[1])
    model = ms.Model(net, nn.CrossEntropyLoss(), nn.SGD(net.trainable_params(), 0.01))
    rng = np.random.RandomState(rank)
    rows = BATCH * max(steps, WARMUP)
    data = ds.NumpySlicesDataset({"image": rng.rand(rows, 1, 28, 28).astype(np.float32),
                                  "label": rng.randint(0, 10, rows).astype(np.int32)}, shuffle=False)
    model.train(1, data.take(BATCH * WARMUP).batch(BATCH))
    world = _backend.world()
    rounds = []
    for _ in range(ROUNDS):
        world.allgather_object(None)  # barrier
        start = time.perf_counter()
        model.train(1, data.take(BATCH * steps).batch(BATCH))
        rounds.append(max(world.allgather_object(time.perf_counter() - start)))
    if rank == 0:
        print("BENCH " + json.dumps({"ranks": n, "steps": steps, "seconds": min(rounds), "rounds": rounds}),
              flush=True)


def measure(ranks: int, steps: int) -> dict:
    from distinfer.launch import run

    proc = run(ranks, [__file__, "--child", "--steps", str(steps)], capture_output=True, text=True, timeout=1800)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("BENCH ")]
    if proc.returncode or not lines:
        raise RuntimeError(f"{ranks} ranks failed (exit {proc.returncode}):\n{proc.stdout[-2000:]}\n"
                           f"{proc.stderr[-2000:]}")
    return json.loads(lines[-1][len("BENCH "):])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ranks", default="1,2,4,8", help="comma-separated rank counts (default 1,2,4,8)")
    parser.add_argument("--steps", type=int, default=20, help="timed steps per rank count (default 20)")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child(args.steps)
        return 0
    results = [measure(int(r), args.steps) for r in args.ranks.split(",")]
    base = results[0]["steps"] / results[0]["seconds"]
    print(f"seed network, SGD, batch {BATCH} per rank (data_parallel), {args.steps} timed steps")
    print(f"{'ranks':>5} {'ms/step':>9} {'steps/s':>9} {'rel steps/s':>11} {'samples/s':>10} {'rel samples/s':>13}")
    for r in results:
        sps = r["steps"] / r["seconds"]
        print(f"{r['ranks']:>5} {1000 / sps:>9.1f} {sps:>9.2f} {sps / base:>11.2f} {sps * BATCH * r['ranks']:>10.0f} "
              f"{sps * r['ranks'] / (base * results[0]['ranks']):>13.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
