#!/usr/bin/env python3
"""Predict with the GPT block side by side: distinfer at 1/2/4/8 ranks, onnxruntime on distinfer's
ONNX export of the same network, and MindSpore 2.x stand-alone (GRAPH_MODE) when a Python with
MindSpore is found (``--mindspore-python``, ``DISTINFER_MINDSPORE_PYTHON``, /work/msenv/bin/python).

Default size: GPT-2-small width (hidden 768, 12 heads, FFN 3072), vocabulary 8,192, batch 4,
sequence 128. Every contender runs in a fresh process; the contenders alternate over
``--rounds`` rounds and each reports the median of ``--repeat`` timed predicts (after 2 warm-up
calls); the table shows the median over rounds. Multi-rank runs are started by
``distinfer.launch`` (which shares BLAS threads out and oversubscribes), and 2 ranks also by
plain ``mpirun -n 2`` with no thread variables, as MindSpore's tutorials start jobs. Their rows
also give the point-to-point bytes of one predict against the planner's minimum, and the
allreduces. It ends with the ratios issue 15 judges, and the import time of distinfer.

Informational only; nothing asserts on timings. At 2 ranks and more it also prints the cost of the
communication checks (step fingerprints, stamps on reductions, waits that poll instead of blocking in
MPI): predict time with the checked backend over predict time with plain blocking mpi4py calls,
the two timed alternately in the same job (``checked/plain``).

    .venv/bin/python scripts/bench_predict.py [--ranks 1,2,4,8] [--rounds 3] [--repeat 5]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _gpt_bench as gb  # noqa: E402

LAUNCH, PLAIN, ONE = "distinfer {n} ranks (launch)", "distinfer 2 ranks (plain mpirun)", "distinfer 1 process"


def _args(argv=None) -> argparse.Namespace:
    def extra(ap):
        ap.add_argument("--no-onnxruntime", action="store_true", help="skip the onnxruntime contender")

    return gb.bench_args(__doc__.splitlines()[0], 5, argv, extra)


def contenders(a: argparse.Namespace, d: Path, task: str) -> dict:
    """The distinfer contenders (one process, ``launch`` at each rank count, plain mpirun at 2)
    and MindSpore when available; name -> (command, environment)."""
    from distinfer import launch

    ranks = [int(r) for r in a.ranks.split(",")]
    cmd = gb.side_command(sys.executable, "distinfer", a, d, task)
    out = {}
    if 1 in ranks:
        out[ONE] = (cmd, gb.plain_env())
    for n in (r for r in ranks if r > 1):
        out[LAUNCH.format(n=n)] = (launch.mpirun_command(n, cmd[1:]), launch.mpirun_env(None, n))
    if 2 in ranks:
        out[PLAIN] = ([launch.mpirun_command(2, [])[0], "-n", "2", *cmd], gb.plain_env())
    ms_python = None if a.no_mindspore else gb.mindspore_python(a.mindspore_python)
    if ms_python:
        out["MindSpore (GRAPH_MODE)"] = (gb.side_command(ms_python, "mindspore", a, d, task), None)
    return out


def report_imports(a: argparse.Namespace) -> None:
    rounds = max(a.rounds, 3)
    print(f"\nimport distinfer: {gb.import_seconds(sys.executable, 'distinfer', rounds):.3f} s "
          f"(import numpy: {gb.import_seconds(sys.executable, 'numpy', rounds):.3f} s; median of {rounds} "
          f"fresh interpreters)")


def main(argv=None) -> int:
    a = _args(argv)
    with gb.prepared(a, "predict") as d:
        runs = contenders(a, d, "predict")
        if not a.no_onnxruntime:
            runs["onnxruntime (distinfer's ONNX)"] = (gb.side_command(sys.executable, "onnxruntime", a, d, "predict"),
                                                      None)
        res = gb.measure(runs, a.rounds)
        print(f"GPT block vocab={a.vocab} hidden={a.hidden} heads={a.heads} ffn={a.ffn} seq={a.seq} "
              f"batch={a.batch}: predict, median of {a.rounds} fresh-process rounds x {a.repeat} calls")
        one = res.get(ONE, {}).get("seconds")
        print(f"{'contender':<34} {'ms':>8} {'vs 1 proc':>9} {'BLAS thr':>8} {'p2p bytes':>11} {'planner min':>11} "
              f"{'AR/predict':>10} {'AR bytes/rank':>13} {'checked/plain':>13}")
        for name, r in res.items():
            if r.get("seconds") is None:
                print(f"{name:<34} failed: {r.get('error', '')[-600:]}")
                continue
            comm = (f"{r['bytes_sent']:>11,} {r['minimum']:>11,} {r['allreduces']:>10} {r['allreduce_bytes']:>13,} "
                    f"{gb.ratio(r.get('checked'), r.get('plain')):>13}"
                    if "bytes_sent" in r and r.get("ranks", 1) > 1 else "")
            print(f"{name:<34} {r['seconds'] * 1e3:>8.1f} {gb.ratio(r['seconds'], one):>9} "
                  f"{r.get('blas_threads', ''):>8} {comm}")
        for name in ("mindspore", "onnxruntime"):
            err = gb.agreement(d, name)
            if err is not None:
                print(f"{name} logits vs distinfer's: max |difference| / max |logit| = {err:.2e}")
        ms_s = res.get("MindSpore (GRAPH_MODE)", {}).get("seconds")
        ort_s = res.get("onnxruntime (distinfer's ONNX)", {}).get("seconds")
        print("\nratios (issue 15 judges: <= 1.0, <= 1.5, <= 0.6, <= 0.6):")
        print(f"  predict distinfer / MindSpore:                 {gb.ratio(one, ms_s)}")
        print(f"  predict distinfer / onnxruntime:               {gb.ratio(one, ort_s)}")
        print(f"  2 ranks (distinfer.launch) / one process:      {gb.ratio(res.get(LAUNCH.format(n=2), {}).get('seconds'), one)}")
        print(f"  2 ranks (plain mpirun -n 2) / one process:     {gb.ratio(res.get(PLAIN, {}).get('seconds'), one)}")
    report_imports(a)
    return 0


if __name__ == "__main__":
    sys.exit(main())
