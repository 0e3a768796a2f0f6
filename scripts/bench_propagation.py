#!/usr/bin/env python3
"""Benchmark sharding propagation on the GPT block, over simulated device counts (layout-only runs in
one process: no MPI, no arithmetic).

For each (dp, mp) it prints, measured in this one run:

* compile: the first ``infer_predict_layout`` in auto_parallel with strategies on the 9 key ops only
  (trace, propagation, then the layout run) relative to the same first run in semi_auto_parallel with
  every strategy written by hand (``gpt_block.shard_gpt``);
* replay: later layout-only calls following the propagated plan relative to the same calls in
  semi_auto_parallel (what following a plan costs per call);
* how many ops propagation decided, and whether their strategies equal the hand-written ones.

Informational only; nothing asserts on timings.

    .venv/bin/python scripts/bench_propagation.py [--hidden 256] [--repeat 5]
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "examples"))

import distinfer as ms  # noqa: E402
from distinfer.parallel import _executor as ex  # noqa: E402
from distinfer.parallel import propagation  # noqa: E402
from gpt_block import GPTBlock, shard_gpt  # noqa: E402
from propagation_nets import gpt_key_ops_only  # noqa: E402

CONFIGS = ((1, 2), (2, 2), (2, 4), (4, 4))


def _args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--seq", type=int, default=32)
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--heads", type=int, default=8)
    ap.add_argument("--vocab", type=int, default=1024)
    ap.add_argument("--repeat", type=int, default=5)
    return ap.parse_args(argv)


def _timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def _context(mode: str, n: int) -> None:
    ms.reset_auto_parallel_context()
    ms.set_auto_parallel_context(parallel_mode=mode, search_mode="sharding_propagation", device_num=n,
                                 full_batch=True)


def measure(cfg: dict, dp: int, mp: int, batch: int, repeat: int) -> dict:
    ids = ms.Tensor(np.zeros((batch, cfg["seq"]), np.int32))
    shaped = ms.Tensor._make(None, ids.shape, None, ms.int32)
    runs = {}
    for mode in ("semi_auto_parallel", "auto_parallel"):
        _context(mode, dp * mp)
        propagation._CANDIDATES.clear()  # each compile pays for its own candidates
        ms.set_seed(1)
        net = GPTBlock(**cfg)
        net = shard_gpt(net, dp, mp) if mode == "semi_auto_parallel" else gpt_key_ops_only(net, dp, mp)
        model = ms.Model(net)
        first = _timed(lambda: model.infer_predict_layout(ids))
        with ex.abstract():
            replay = min(_timed(lambda: net(shaped)) for _ in range(repeat))  # the least disturbed call
        runs[mode] = (first, replay, net)
    plan = propagation.last_plan(runs["auto_parallel"][2])
    _context("auto_parallel", dp * mp)
    reference = shard_gpt(GPTBlock(**cfg), dp, mp)
    ms.Model(reference).infer_predict_layout(ids)
    same = [s for _, s, _ in plan.decisions] == [s for _, s, _ in propagation.last_plan(reference).decisions]
    semi, auto = runs["semi_auto_parallel"], runs["auto_parallel"]
    return {"compile": auto[0] / semi[0], "compile_s": auto[0], "replay": auto[1] / semi[1],
            "decided": sum(not c for _, _, c in plan.decisions), "ops": len(plan.decisions), "same": same}


def main(argv=None) -> None:
    a = _args(argv)
    cfg = dict(vocab=a.vocab, hidden=a.hidden, heads=a.heads, seq=a.seq, ffn=4 * a.hidden)
    print(f"GPT block: hidden {a.hidden}, heads {a.heads}, seq {a.seq}, vocab {a.vocab}, batch {a.batch}")
    measure(cfg, *CONFIGS[0], a.batch, 1)  # warm-up: imports and first-call caches out of the timings
    print("dp x mp | compile (auto / semi) | compile s | replay (auto / semi) | decided | = hand-written")
    for dp, mp in CONFIGS:
        r = measure(cfg, dp, mp, a.batch, a.repeat)
        print(f"{dp} x {mp}   | {r['compile']:21.2f} | {r['compile_s']:9.3f} | {r['replay']:20.2f} | "
              f"{r['decided']:3d}/{r['ops']:<3d} | {r['same']}")
    ms.reset_auto_parallel_context()


if __name__ == "__main__":
    main()
