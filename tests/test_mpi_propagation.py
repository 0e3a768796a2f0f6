"""Sharding propagation and shard regions under ``mpirun -n 1, 2, 4, 8`` (tests/mpi/propagation_checks.py):
each check is one pytest item, run once per rank count."""
from __future__ import annotations

from pathlib import Path

import pytest

from _mpi_checks import check_tests

pytestmark = pytest.mark.mpi

SCRIPT = Path(__file__).resolve().parent / "mpi" / "propagation_checks.py"

test_propagation_check, test_every_check_reported = check_tests(SCRIPT, ranks=(1, 2, 4, 8), timeout=600)
