"""The core runtime under ``mpirun -n 1, 2, 4, 8``: the same test bodies at every rank count.

``tests/mpi/runtime_checks.py`` runs every check on every rank and rank 0 prints one ``PASS`` or
``FAIL`` line per check; it is launched once per rank count (8 ranks oversubscribe the cores)
and each check becomes one pytest item here.
"""
from __future__ import annotations

from pathlib import Path

import pytest

from _mpi_checks import check_tests

pytestmark = pytest.mark.mpi

SCRIPT = Path(__file__).resolve().parent / "mpi" / "runtime_checks.py"

test_runtime_check, test_launch_reports_every_check = check_tests(SCRIPT, ranks=(1, 2, 4, 8), timeout=240)
