"""The core runtime under ``mpirun -n 1, 2, 4, 8``: the same test bodies at every rank count.

``tests/mpi/runtime_checks.py`` runs every check on every rank and rank 0 prints one ``PASS`` or
``FAIL`` line per check; it is launched once per rank count (8 ranks oversubscribe the cores)
and each check becomes one pytest item here.
"""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import pytest

from _mpi_checks import check_names, launch_checks

pytestmark = pytest.mark.mpi

SCRIPT = Path(__file__).resolve().parent / "mpi" / "runtime_checks.py"
RANKS = (1, 2, 4, 8)
TIMEOUT = 240


@lru_cache(maxsize=None)
def _launch(n: int) -> tuple[dict[str, str], str]:
    """Run the checks on ``n`` ranks once; ``({name: "" or error}, diagnostics)``."""
    return launch_checks(SCRIPT, n, TIMEOUT)


CASES = [(n, name) for n in RANKS for name in check_names(SCRIPT, n)]


@pytest.mark.parametrize("n,name", CASES, ids=[f"n{n}-{name}" for n, name in CASES])
def test_runtime_check(n: int, name: str) -> None:
    outcomes, diag = _launch(n)
    if name not in outcomes:
        pytest.fail(f"check {name!r} did not report on {n} ranks. {diag}")
    assert outcomes[name] == "", f"{name} on {n} ranks: {outcomes[name]}"


@pytest.mark.parametrize("n", RANKS)
def test_launch_reports_every_check(n: int) -> None:
    """The run finished cleanly and reported exactly the checks expected for ``n`` ranks."""
    outcomes, diag = _launch(n)
    assert not diag, diag
    assert sorted(outcomes) == sorted(check_names(SCRIPT, n))
