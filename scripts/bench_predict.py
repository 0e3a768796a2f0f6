#!/usr/bin/env python3
"""Benchmark distributed ``Model.predict`` of the GPT block at 1/2/4/8 ranks.

For each rank count it prints, measured in this one run:

* predict time relative to the same (unsharded) network predicting in one plain process;
* point-to-point bytes sent (``world().stats.bytes_sent`` summed over ranks) relative to the
  planner's minimum for the redistributions that ran (sum of ``Plan.moved_elements() * itemsize``);
* allreduces per predict and their payload bytes (per rank), reported separately;
* the cost of the communication checks (step fingerprints, stamps on reductions, waits that
  poll instead of blocking in MPI): predict time with the checked backend over predict time with
  plain blocking mpi4py calls (``_Unchecked``), the two timed alternately in the same job.

Informational only; nothing asserts on timings. On a 2-core machine 4 and 8 ranks oversubscribe
the cores, so their times measure MPI overhead more than parallel speed-up.

    .venv/bin/python scripts/bench_predict.py [--batch 16] [--hidden 256] [--repeat 5]
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "examples"))

CONFIGS = {1: (1, 1), 2: (1, 2), 4: (2, 2), 8: (2, 4)}  # ranks -> (dp, mp)
ITEMSIZE = 4  # every tensor the GPT block moves is float32 or int32


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


class _Unchecked:
    """The backend's data calls as plain blocking mpi4py calls with no step checks: the baseline
    the checking cost is measured against (float32/int32 data, as the GPT block moves)."""

    def __init__(self, world) -> None:
        self._world = world
        self._ops = {"sum": world.MPI.SUM, "max": world.MPI.MAX, "min": world.MPI.MIN}

    def __getattr__(self, name: str):
        return getattr(self._world, name)

    def allreduce(self, arr, partition, op="sum", what=""):
        src = np.ascontiguousarray(arr).reshape(np.shape(arr))
        out = np.empty_like(src)
        self._world.group_comm(partition).Allreduce(src, out, op=self._ops[op])
        return out

    def reduce_scatter(self, arr, partition, axis, op="sum", what=""):
        comm = self._world.group_comm(partition)
        send = np.ascontiguousarray(np.moveaxis(arr, axis, 0))
        recv = np.empty((send.shape[0] // comm.Get_size(),) + send.shape[1:], send.dtype)
        comm.Reduce_scatter_block(send, recv, op=self._ops[op])
        return np.ascontiguousarray(np.moveaxis(recv, 0, axis))

    def exchange(self, sends, recvs, what=""):
        """One message per peer (the arrays back to back), as the checked backend sends them."""
        MPI, comm = self._world.MPI, self._world.comm
        sizes = {src: [int(np.prod(shape)) * np.dtype(dt).itemsize for shape, dt in specs]
                 for src, specs in recvs.items()}
        inbox = {src: np.empty(sum(n), np.uint8) for src, n in sizes.items()}
        outbox = [np.concatenate([np.ascontiguousarray(a).reshape(-1).view(np.uint8) for a in arrays])
                  for arrays in sends.values()]
        reqs = [comm.Irecv([buf, MPI.BYTE], source=src, tag=17) for src, buf in inbox.items()]
        reqs += [comm.Isend([buf, MPI.BYTE], dest=dst, tag=17) for dst, buf in zip(sends, outbox)]
        MPI.Request.Waitall(reqs)
        out = {}
        for src, specs in recvs.items():
            cuts = np.cumsum([0] + sizes[src])
            out[src] = [inbox[src][lo:hi].view(dt).reshape(shape) for lo, hi, (shape, dt) in zip(cuts, cuts[1:], specs)]
        return out


def _checking_cost(model, x, world, repeat: int) -> tuple[float, float]:
    """Median seconds per predict with the checked backend and with ``_Unchecked``, alternating."""
    from distinfer.communication import _backend

    plain = _Unchecked(world)
    times: dict[str, list[float]] = {"checked": [], "plain": []}
    for i in range(2 * repeat):
        mode = ("checked", "plain")[(i + i // 2) % 2]  # checked, plain, plain, checked, ...
        _backend.reset_for_tests(world if mode == "checked" else plain)
        world.barrier()
        t0 = time.perf_counter()
        model.predict(x)
        world.barrier()
        times[mode].append(time.perf_counter() - t0)
    _backend.reset_for_tests(world)
    return statistics.median(times["checked"]), statistics.median(times["plain"])


class _PlanTally:
    """Executor observer: the planner's minimum for every redistribution that ran."""

    def __init__(self) -> None:
        self.moved = 0
        self.plans = 0

    def op(self, *args) -> None:
        pass

    def comm(self, kind: str, **info) -> None:
        if kind == "redistribute":
            self.moved += info["plan"].moved_elements()
            self.plans += 1


def worker(a: argparse.Namespace) -> None:
    """One rank: sharded predict timing and communication counters; rank 0 prints one JSON line."""
    import distinfer as ms
    from distinfer.communication import _backend, init
    from distinfer.parallel import _executor as ex
    from gpt_block import GPTBlock, shard_gpt

    init()
    world = _backend.world()
    dp, mp = CONFIGS[world.size]
    ms.set_auto_parallel_context(parallel_mode="semi_auto_parallel", full_batch=True)
    ms.set_seed(1)
    model = ms.Model(shard_gpt(GPTBlock(**_net_cfg(a)), dp, mp))
    x = ms.Tensor(_ids(a))
    seconds = _time_predict(model, x, a.repeat, world.barrier)
    checked, plain = _checking_cost(model, x, world, a.repeat) if world.size > 1 else (seconds, seconds)
    world.stats.reset()
    tally = _PlanTally()
    with ex.observing(tally):
        model.predict(x)
    st = world.stats
    sent = world.allgather_object((st.bytes_sent, st.messages, st.allreduces, st.allreduce_bytes))
    if world.rank == 0:
        print(json.dumps(dict(ranks=world.size, dp=dp, mp=mp, seconds=seconds, minimum=tally.moved * ITEMSIZE,
                              plans=tally.plans, bytes_sent=sum(s[0] for s in sent),
                              messages=sum(s[1] for s in sent), allreduces=sent[0][2],
                              allreduce_bytes=sent[0][3], checked=checked, plain=plain)), flush=True)


def baseline(a: argparse.Namespace) -> float:
    """The same network, unsharded, in this plain process."""
    import distinfer as ms
    from gpt_block import GPTBlock

    ms.set_seed(1)
    return _time_predict(ms.Model(GPTBlock(**_net_cfg(a))), ms.Tensor(_ids(a)), a.repeat)


def main() -> None:
    a = _args()
    if a.worker:
        worker(a)
        return
    from distinfer import launch

    base = baseline(a)
    print(f"GPT block vocab={a.vocab} hidden={a.hidden} heads={a.heads} seq={a.seq} batch={a.batch}; "
          f"one process (unsharded): {base * 1e3:.1f} ms per predict (median of {a.repeat})")
    print(f"{'ranks':>5} {'dp x mp':>7} {'ms':>8} {'time/1proc':>10} {'p2p bytes':>11} {'planner min':>11} "
          f"{'sent/min':>8} {'msgs':>5} {'allreduces':>10} {'AR bytes/rank':>13} {'checked/plain':>13}")
    argv = [str(Path(__file__).resolve()), "--worker"] + sys.argv[1:]
    for n in (int(r) for r in a.ranks.split(",")):
        res = launch.run(n, argv, capture_output=True, text=True, timeout=600)
        line = next((ln for ln in res.stdout.splitlines() if ln.startswith("{")), None)
        if res.returncode or line is None:
            print(f"{n:>5} failed (exit {res.returncode}): {res.stderr[-800:]}")
            continue
        r = json.loads(line)
        ratio = r["bytes_sent"] / r["minimum"] if r["minimum"] else float("nan") if r["bytes_sent"] else 1.0
        print(f"{n:>5} {r['dp']:>3} x {r['mp']:<2} {r['seconds'] * 1e3:>8.1f} {r['seconds'] / base:>10.2f} "
              f"{r['bytes_sent']:>11,} {r['minimum']:>11,} {ratio:>8.3f} {r['messages']:>5} "
              f"{r['allreduces']:>10} {r['allreduce_bytes']:>13,} {r['checked'] / r['plain']:>13.3f}")


if __name__ == "__main__":
    main()
