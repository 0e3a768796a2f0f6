"""Sharding propagation and shard regions under ``mpirun -n 1, 2, 4, 8`` (tests/mpi/propagation_checks.py):
each check is one pytest item, run once per rank count."""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import pytest

from mpi_checks import check_names, launch_checks

pytestmark = pytest.mark.mpi

SCRIPT = Path(__file__).resolve().parent / "mpi" / "propagation_checks.py"
RANKS = (1, 2, 4, 8)


@lru_cache(maxsize=None)
def _launch(n: int) -> tuple[dict[str, str], str]:
    return launch_checks(SCRIPT, n, timeout=600)


CASES = [(n, name) for n in RANKS for name in check_names(SCRIPT, n)]


@pytest.mark.parametrize("n,name", CASES, ids=[f"n{n}-{name}" for n, name in CASES])
def test_propagation_check(n: int, name: str) -> None:
    outcomes, diag = _launch(n)
    assert name in outcomes, f"check {name!r} did not report on {n} ranks. {diag}"
    assert outcomes[name] == "", f"{name} on {n} ranks: {outcomes[name]}"


@pytest.mark.parametrize("n", RANKS)
def test_every_check_reported(n: int) -> None:
    outcomes, diag = _launch(n)
    assert not diag, diag
    assert sorted(outcomes) == sorted(check_names(SCRIPT, n))
