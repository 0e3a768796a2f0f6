"""Drop-in semantics under ``mpirun -n 1, 2, 4, 8`` (strategy file visibility, non-collective transforms,
comm_func collectives, graph calls of jit functions and AutoParallel, pipeline weight syncing).

``tests/mpi/dropin_checks.py`` runs every check on every rank and rank 0 prints one ``PASS`` or ``FAIL``
line per check; it is launched once per rank count and each check becomes one pytest item here.
"""
from __future__ import annotations

from pathlib import Path

import pytest

from _mpi_checks import check_tests

pytestmark = pytest.mark.mpi

SCRIPT = Path(__file__).resolve().parent / "mpi" / "dropin_checks.py"

test_dropin_check, test_launch_reports_every_check = check_tests(SCRIPT, ranks=(1, 2, 4, 8), timeout=300)
