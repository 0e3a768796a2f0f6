#!/usr/bin/env python3
"""Benchmark running a per-rank MINDIR export of the GPT block against the network it came from.

At each rank count every rank exports its file, loads it back, and this one run measures:

* ``nn.GraphCell`` time per call relative to ``Model.predict`` of the live network;
* point-to-point bytes sent by the file's communication (MindSpore's AllGather / AlltoAll /
  Send-Receive, run as messages) relative to what ``predict`` sent (the planner's minimum
  pieces), summed over ranks; allreduces per call in both;
* export time (trace + write) per rank, and the file size of rank 0.

Informational only; nothing asserts on timings. On a 2-core machine 4 and 8 ranks oversubscribe
the cores.

    .venv/bin/python scripts/bench_export.py [--batch 16] [--hidden 256] [--repeat 5]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path[:0] = [str(Path(__file__).resolve().parent), str(Path(__file__).resolve().parents[1] / "examples")]
from _gpt_bench import MESH as CONFIGS  # noqa: E402

def _args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--seq", type=int, default=32)
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--heads", type=int, default=8)
    ap.add_argument("--vocab", type=int, default=1024)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--ranks", default="1,2,4,8")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    return ap.parse_args(argv)


def _net_cfg(a: argparse.Namespace) -> dict:
    return dict(vocab=a.vocab, hidden=a.hidden, heads=a.heads, seq=a.seq, ffn=4 * a.hidden)


def _ids(a: argparse.Namespace) -> np.ndarray:
    return np.random.RandomState(0).randint(0, a.vocab, size=(a.batch, a.seq)).astype(np.int32)


def _time_predict(model, x, repeat: int, sync=lambda: None) -> float:
    model.predict(x)  # materialise parameters, warm caches
    times = []
    for _ in range(repeat):
        sync()
        t0 = time.perf_counter()
        model.predict(x)
        sync()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def rank_results(script: str, a: argparse.Namespace):
    """Run ``script --worker`` (and this run's arguments) at each rank count of ``a.ranks``; yield
    ``(ranks, the JSON line rank 0 printed, None)`` or ``(ranks, None, why it failed)``."""
    from distinfer import launch

    argv = [str(Path(script).resolve()), "--worker"] + sys.argv[1:]
    for n in (int(r) for r in a.ranks.split(",")):
        res = launch.run(n, argv, capture_output=True, text=True, timeout=600)
        line = next((ln for ln in res.stdout.splitlines() if ln.startswith("{")), None)
        if res.returncode or line is None:
            yield n, None, f"failed (exit {res.returncode}): {res.stderr[-800:]}"
        else:
            yield n, json.loads(line), None




def _time_calls(fn, repeat: int, sync) -> float:
    fn()
    times = []
    for _ in range(repeat):
        sync()
        t0 = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _traffic(world, fn) -> tuple:
    world.stats.reset()
    fn()
    st = world.stats
    return world.allgather_object((st.bytes_sent, st.messages, st.allreduces))


def worker(a) -> None:
    """One rank: export, then predict vs GraphCell; rank 0 prints one JSON line."""
    import distinfer as ms
    from distinfer import nn
    from distinfer.communication import _backend, init
    from gpt_block import GPTBlock, shard_gpt

    init()
    world = _backend.world()
    dp, mp = CONFIGS[world.size]
    ms.set_auto_parallel_context(parallel_mode="semi_auto_parallel", full_batch=True)
    ms.set_seed(1)
    net = shard_gpt(GPTBlock(**_net_cfg(a)), dp, mp)
    model, x = ms.Model(net), ms.Tensor(_ids(a))
    folder = world.bcast_object(tempfile.mkdtemp(prefix="bench_export_") if world.rank == 0 else None)
    model.predict(x)  # materialise parameters before timing the export
    world.barrier()
    t0 = time.perf_counter()
    path = ms.export(net, x, file_name=os.path.join(folder, f"gpt_rank_{world.rank}"))
    export_s = world.allgather_object(time.perf_counter() - t0)
    cell = nn.GraphCell(ms.load(path))
    predict_s = _time_predict(model, x, a.repeat, world.barrier)
    graph_s = _time_calls(lambda: cell(x), a.repeat, world.barrier)
    live = _traffic(world, lambda: model.predict(x))
    replay = _traffic(world, lambda: cell(x))
    if world.rank == 0:
        print(json.dumps(dict(ranks=world.size, dp=dp, mp=mp, predict=predict_s, graph=graph_s,
                              export=max(export_s), size=os.path.getsize(path),
                              live_bytes=sum(t[0] for t in live), graph_bytes=sum(t[0] for t in replay),
                              live_msgs=sum(t[1] for t in live), graph_msgs=sum(t[1] for t in replay),
                              live_ar=live[0][2], graph_ar=replay[0][2])), flush=True)


def main() -> None:
    a = _args()
    if a.worker:
        worker(a)
        return
    print(f"GPT block vocab={a.vocab} hidden={a.hidden} heads={a.heads} seq={a.seq} batch={a.batch}; "
          f"medians of {a.repeat}")
    print(f"{'ranks':>5} {'dp x mp':>7} {'predict ms':>10} {'graph ms':>9} {'graph/pred':>10} {'p2p bytes':>11} "
          f"{'graph bytes':>11} {'bytes ratio':>11} {'msgs':>9} {'allreduces':>10} {'export ms':>9} {'file KiB':>8}")
    for n, r, failure in rank_results(__file__, a):
        if failure:
            print(f"{n:>5} {failure}")
            continue
        ratio = r["graph_bytes"] / r["live_bytes"] if r["live_bytes"] else 1.0 if not r["graph_bytes"] else float("inf")
        print(f"{n:>5} {r['dp']:>3} x {r['mp']:<2} {r['predict'] * 1e3:>10.1f} {r['graph'] * 1e3:>9.1f} "
              f"{r['graph'] / r['predict']:>10.2f} {r['live_bytes']:>11,} {r['graph_bytes']:>11,} {ratio:>11.2f} "
              f"{r['live_msgs']:>4}/{r['graph_msgs']:<4} {r['live_ar']:>4}/{r['graph_ar']:<5} "
              f"{r['export'] * 1e3:>9.1f} {r['size'] / 1024:>8.0f}")


if __name__ == "__main__":
    main()
