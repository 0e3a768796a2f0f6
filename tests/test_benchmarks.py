"""The benchmark scripts still run end to end (tiny sizes; nothing asserts on timings)."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"
# The side-by-side GPT benchmarks at a size that runs in seconds (their default is GPT-2-small width).
TINY_GPT = ["--vocab", "256", "--hidden", "64", "--heads", "4", "--ffn", "128", "--seq", "16", "--batch", "2"]


@pytest.mark.parametrize("script,args,expect", [
    ("bench_reshard.py", ["--sizes", "16", "--repeat", "1"], ["transform 8->4", "transform 8->1", "load (rank 0/4)",
                                                             "  cpu", "  limit", "  memcpy"]),
    ("bench_ckpt.py", ["--gib", "0.05"], ["column box", "peak RSS"]),
    ("bench_predict.py", ["--ranks", "1,2", "--rounds", "1", "--repeat", "1", "--no-mindspore", *TINY_GPT],
     ["distinfer 2 ranks (plain mpirun)", "onnxruntime logits vs distinfer's", "predict distinfer / onnxruntime",
      "import distinfer:"]),
    ("bench_export.py", ["--ranks", "1,2", "--repeat", "1", "--hidden", "64", "--vocab", "128"], ["1 x 2"]),
    ("bench_train.py", ["--ranks", "1", "--rounds", "1", "--repeat", "1", "--no-mindspore", *TINY_GPT],
     ["distinfer 1 process", "1.00x", "subnormal-filled gradient"]),
    ("bench_propagation.py", ["--hidden", "32", "--heads", "4", "--seq", "8", "--vocab", "64", "--batch", "8",
                              "--repeat", "1"], ["2 x 4", "14/23", "True"]),
])
def test_benchmark_runs(script, args, expect):
    res = subprocess.run([sys.executable, str(SCRIPTS / script), *args], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    for line in expect:
        assert line in res.stdout, f"{script}: no {line!r} in its output:\n{res.stdout[-2000:]}"
