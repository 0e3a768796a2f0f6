"""Faults on one rank of a 4-rank job end the whole job within a bounded time, with that rank's message.

Each scenario of ``tests/mpi/faults.py`` is one job: rank 2 raises, exits (``sys.exit`` 0 and 1,
``os._exit``), is killed, is interrupted, fails in a thread, returns early, predicts with another
batch, trains with another strategy, stops communicating, or runs an extra collective; rank 1
loads its files in another order; a checkpoint file is corrupt. The fault-free run must exit 0
with results equal to one process's.
"""
from __future__ import annotations

import os
import re
import subprocess
import time
from pathlib import Path

import pytest

from distinfer import launch

pytestmark = pytest.mark.mpi

SCRIPT = Path(__file__).resolve().parent / "mpi" / "faults.py"
FAULT_LIMIT = 90  # seconds a faulty job may take, MPI start and teardown included


def run(scenario: str, workdir: Path, timeout: float, plain_mpirun: bool = False) -> tuple[int, str, float]:
    """``(exit code, stdout + stderr, seconds)`` of the scenario on 4 ranks; a hang fails the test."""
    cmd = launch.mpirun_command(4, [str(SCRIPT), scenario, str(workdir)])
    env = launch.mpirun_env(ranks=4)
    if plain_mpirun:  # as MindSpore's tutorials start jobs: only what Open MPI itself needs here
        env = {k: v for k, v in os.environ.items() if not k.endswith("_NUM_THREADS")}
        env.update(OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")
    start = time.monotonic()
    try:
        res = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"{scenario}: the job did not end within {timeout} s:\n{exc.stdout}\n{exc.stderr}")
    return res.returncode, res.stdout + res.stderr, time.monotonic() - start


def test_fault_free_job_exits_0_with_correct_results(tmp_path):
    code, out, _ = run("ok", tmp_path, timeout=600)
    assert code == 0, out[-4000:]
    for what in ("predict", "train", "load"):
        assert sorted(re.findall(rf"rank (\d) {what} ok", out)) == ["0", "1", "2", "3"], out[-4000:]


# scenario -> patterns the job's output must contain (the faulting rank's message, both views...)
FAULTS = {
    "raise": [r"\[distinfer rank 2\] uncaught exception", r"RuntimeError: rank 2 fails on purpose"],
    "exit0": [r"rank 2 misbehaves: exit0", r"rank 2 left the script \(returned from the script or called sys\.exit\) "
              r"after .*; rank \d is waiting for it in "],
    "exit1": [r"rank 2 left the script .* is waiting for it in "],
    "return": [r"rank 2 returns from the script", r"rank 2 left the script .* is waiting for it in "],
    "os_exit": [r"process rank 2 .*exiting\s+improperly"],
    "kill": [r"process rank 2 .*exited on\s+signal 9"],
    "interrupt": [r"\[distinfer rank 2\] uncaught exception", r"KeyboardInterrupt"],
    "thread": [r"\[distinfer rank 2\] uncaught exception in thread 'loader'", r"ZeroDivisionError"],
    "shape": [r"DivergenceError: rank \d expected message #\d+ from rank \d for exchange in \w+",
              r"shape=\[4, 512\]", r"shape=\[8, 512\]"],
    "strategy": [r"DivergenceError: .*rank 2"],
    "order": [r"DivergenceError: load_distributed_checkpoint: the ranks were given different inputs",
              r"rank 1: \{\"checkpoint_filenames\"", r"first difference: checkpoint_filenames\[0\]"],
    "corrupt": [r"FormatError: .*rank_5\.ckpt"],
    "hang": [r"waited \d+ s \(the watchdog limit", r"rank 2: no answer"],
    "extra_collective": [r"DivergenceError: ranks \d and \d wait for each other in different steps",
                         r"allreduce #1 on ranks \[0, 1, 2, 3\] in no op .*: an extra sum"],
}


@pytest.mark.parametrize("scenario", list(FAULTS))
def test_fault_ends_the_job_with_its_message(scenario, tmp_path):
    code, out, seconds = run(scenario, tmp_path, timeout=FAULT_LIMIT)
    assert code != 0, f"{scenario}: the job exited 0 after {seconds:.0f} s:\n{out[-4000:]}"
    for pattern in FAULTS[scenario]:
        assert re.search(pattern, out, re.S), f"{scenario}: no {pattern!r} in the output:\n{out[-6000:]}"


def test_plain_mpirun_ends_a_job_whose_rank_exits_0(tmp_path):
    """Started as ``mpirun -n 4 python script.py`` (no launcher settings), a rank calling
    ``sys.exit(0)`` mid-predict still ends the job with its message."""
    code, out, _ = run("exit0", tmp_path, timeout=FAULT_LIMIT, plain_mpirun=True)
    assert code != 0 and re.search(r"rank 2 left the script", out), out[-4000:]
