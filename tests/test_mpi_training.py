"""Sharded training parity at 1, 2, 4 and 8 ranks (tests/mpi/train_parity.py)."""
import re
from pathlib import Path

import pytest

from distinfer.launch import run

SCRIPT = Path(__file__).parent / "mpi" / "train_parity.py"


@pytest.mark.parametrize("ranks", [1, 2, 4, 8])
def test_training_matches_single_process(ranks):
    proc = run(ranks, [str(SCRIPT)], capture_output=True, text=True, timeout=600)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    results = re.findall(r"^(?:PASS|FAIL) .*$", proc.stdout, flags=re.M)
    assert len(results) == ranks * 13, out[-3000:]
    assert all(r.startswith("PASS") for r in results), "\n".join(r for r in results if r.startswith("FAIL"))
