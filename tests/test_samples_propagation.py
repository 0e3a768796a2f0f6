"""MindSpore's sharding propagation and shard function samples run on 8 ranks with only their imports
changed (examples/sharding_propagation.py, examples/shard_function.py), on a small MNIST folder, and
print the losses the same script prints in one process (stand-alone). Called directly in auto_parallel,
a network takes each rank's batch as its shard of the global batch (dataset_strategy "data_parallel",
as MindSpore does); both runs seed the dataset's shuffle, so every rank reads the same batch and the
global batch is 8 copies of the stand-alone one: the same loss and gradients."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from distinfer.launch import run
from test_examples import small_mnist  # noqa: F401  (the fixture: 256 digits as idx files)

ROOT = Path(__file__).resolve().parents[1]
# print(loss) shows the value as numpy prints it (MindSpore's str of a Tensor).
LOSS = re.compile(r"epoch: (\d+), step: (\d+), loss is ([-\d.e]+)")


def _losses(out: str) -> dict[tuple[int, int], list[float]]:
    found: dict[tuple[int, int], list[float]] = {}
    for epoch, step, value in LOSS.findall(out):
        found.setdefault((int(epoch), int(step)), []).append(float(value))
    return found


def _seeded(script: Path, tmp_path: Path, stand_alone: bool) -> Path:
    """The sample with its dataset shuffled the same way on every rank (``ds.config.set_seed``, so the
    runs see the same batches) and, for the reference, its parallel context replaced by stand_alone."""
    text = script.read_text().replace("ms.set_seed(1)", "ms.set_seed(1)\nds.config.set_seed(1)", 1)
    if stand_alone:
        text = re.sub(r"ms\.set_auto_parallel_context\(parallel_mode=ms\.ParallelMode\.AUTO_PARALLEL,[^)]*\)",
                      "ms.set_auto_parallel_context(parallel_mode=ms.ParallelMode.STAND_ALONE)", text)
        assert "STAND_ALONE" in text
    out = tmp_path / (("single_" if stand_alone else "") + script.name)
    out.write_text(text)
    return out


def _compare(script: str, tmp_path: Path, data: Path) -> None:
    env = dict(os.environ, DATA_PATH=str(data))
    sample = ROOT / "examples" / script
    proc = run(8, [str(_seeded(sample, tmp_path, False))], capture_output=True, text=True, timeout=900, cwd=tmp_path,
               env=env)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    single = subprocess.run([sys.executable, str(_seeded(sample, tmp_path, True))], capture_output=True, text=True,
                            timeout=900, cwd=tmp_path, env=env)
    assert single.returncode == 0, (single.stdout + single.stderr)[-4000:]
    parallel, want = _losses(proc.stdout), _losses(single.stdout)
    assert want and sorted(parallel) == sorted(want), (proc.stdout[-2000:], single.stdout[-2000:])
    for key, values in parallel.items():  # (ranks' lines may interleave: those read whole are compared)
        for v in values:
            assert abs(v - want[key][0]) <= 1e-4 * max(1.0, abs(want[key][0])), (key, v, want[key][0])


def test_shard_function_sample(tmp_path, small_mnist):  # noqa: F811
    _compare("shard_function.py", tmp_path, small_mnist)


def test_sharding_propagation_sample(tmp_path, small_mnist):  # noqa: F811
    _compare("sharding_propagation.py", tmp_path, small_mnist)
