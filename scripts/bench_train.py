#!/usr/bin/env python3
"""One training step of the GPT block side by side: distinfer at 1/2/4/8 ranks and MindSpore 2.x
stand-alone (GRAPH_MODE) when a Python with MindSpore is found (``--mindspore-python``,
``DISTINFER_MINDSPORE_PYTHON``, /work/msenv/bin/python).

The step is ``TrainOneStepCell(WithLossCell(net, token cross-entropy), Momentum(lr=0.01,
momentum=0.9))`` on the same weights and tokens in every contender; default size GPT-2-small
width (hidden 768, 12 heads, FFN 3072), vocabulary 8,192, batch 4, sequence 128. Contenders
run in fresh processes, alternating over ``--rounds`` rounds, each reporting the median of
``--repeat`` timed steps after 2 warm-up steps (the first step's loss is printed to show they
compute the same thing). Multi-rank runs use ``distinfer.launch``; 2 ranks also plain ``mpirun``.

It also times the two LM-head gradient products of a softmax cross-entropy gradient full of
subnormal numbers, with distinfer's MatMul and with plain numpy (no flush mode).

Informational only; nothing asserts on timings.

    .venv/bin/python scripts/bench_train.py [--ranks 1,2,4,8] [--rounds 3] [--repeat 3]
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _gpt_bench as gb  # noqa: E402
from bench_predict import ONE, contenders  # noqa: E402


def _args(argv=None) -> argparse.Namespace:
    return gb.bench_args(__doc__.splitlines()[0], 3, argv)


def subnormal_products(a: argparse.Namespace) -> tuple[float, float, float]:
    """Seconds of ``h.T @ g`` plus ``g @ w.T`` (the LM head's weight and input gradients) for a
    cross-entropy gradient ``g`` whose probabilities underflow: distinfer's MatMul (subnormals
    flushed), the same with normal numbers, and plain numpy on the subnormals."""
    import distinfer as ms
    from distinfer import ops

    rows = a.batch * a.seq
    rng = np.random.RandomState(0)
    logits = rng.randn(rows, a.vocab) * 30
    p = np.exp(logits - logits.max(1, keepdims=True))
    g = (p / p.sum(1, keepdims=True) / rows).astype(np.float32)  # ~half of it subnormal
    normal = (rng.randn(rows, a.vocab) * 1e-4).astype(np.float32)
    h = rng.randn(rows, a.hidden).astype(np.float32)
    w = rng.randn(a.hidden, a.vocab).astype(np.float32)
    ht, wt = ms.Tensor(h), ms.Tensor(w)
    mm_tn, mm_nt = ops.MatMul(transpose_a=True), ops.MatMul(transpose_b=True)

    def best(call) -> float:
        call()
        times = []
        for _ in range(3):
            start = time.perf_counter()
            call()
            times.append(time.perf_counter() - start)
        return min(times)

    ours = best(lambda: (mm_tn(ht, ms.Tensor(g)), mm_nt(ms.Tensor(g), wt)))
    base = best(lambda: (mm_tn(ht, ms.Tensor(normal)), mm_nt(ms.Tensor(normal), wt)))
    plain = best(lambda: (h.T @ g, g @ w.T))
    return ours, base, plain


def main(argv=None) -> int:
    a = _args(argv)
    with gb.prepared(a, "train") as d:
        res = gb.measure(contenders(a, d, "train"), a.rounds)
    print(f"GPT block vocab={a.vocab} hidden={a.hidden} heads={a.heads} ffn={a.ffn} seq={a.seq} batch={a.batch}: "
          f"one Momentum training step, median of {a.rounds} fresh-process rounds x {a.repeat} steps")
    one = res.get(ONE, {}).get("seconds")
    print(f"{'contender':<34} {'ms/step':>9} {'vs 1 proc':>9} {'BLAS thr':>8} {'first loss':>11}")
    for name, r in res.items():
        if r.get("seconds") is None:
            print(f"{name:<34} failed: {r.get('error', '')[-600:]}")
            continue
        print(f"{name:<34} {r['seconds'] * 1e3:>9.1f} {gb.ratio(r['seconds'], one):>9} {r.get('blas_threads', ''):>8} "
              f"{r.get('first_loss', float('nan')):>11.6f}")
    ms_s = res.get("MindSpore (GRAPH_MODE)", {}).get("seconds")
    print("\nratio (issue 15 judges: <= 1.0):")
    print(f"  train step distinfer / MindSpore:  {gb.ratio(one, ms_s)}")
    ours, base, plain = subnormal_products(a)
    print(f"\nLM-head gradient products of a subnormal-filled gradient: {ours * 1e3:.1f} ms flushed "
          f"({ours / base:.2f}x the same products on normal numbers); numpy without the flush mode "
          f"{plain * 1e3:.1f} ms ({plain / base:.2f}x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
