"""Sharding propagation and shard regions under ``mpirun -n 1, 2, 4, 8`` (tests/mpi/propagation_checks.py):
each check is one pytest item, run once per rank count."""
from __future__ import annotations

import importlib.util
from functools import lru_cache
from pathlib import Path

import pytest

from distinfer import launch

pytestmark = pytest.mark.mpi

SCRIPT = Path(__file__).resolve().parent / "mpi" / "propagation_checks.py"
RANKS = (1, 2, 4, 8)


def _check_names(n: int) -> list[str]:
    spec = importlib.util.spec_from_file_location("_propagation_check_names", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.check_names(n)


@lru_cache(maxsize=None)
def _launch(n: int) -> tuple[dict[str, str], str]:
    try:
        res = launch.run(n, [str(SCRIPT)], capture_output=True, text=True, timeout=600)
    except Exception as exc:  # noqa: BLE001 - a hang or a missing mpirun fails every item
        return {}, f"launch failed: {exc!r}"
    outcomes = {}
    for line in res.stdout.splitlines():
        if line.startswith(("PASS ", "FAIL ")):
            name, _, err = line[5:].partition(": ")
            outcomes[name.strip()] = "" if line.startswith("PASS") else (err or "failed")
    done = f"DONE {n}" in res.stdout and res.returncode == 0
    diag = "" if done else f"exit code {res.returncode}\nstdout tail:\n{res.stdout[-2000:]}\n" \
                           f"stderr tail:\n{res.stderr[-3000:]}"
    return outcomes, diag


CASES = [(n, name) for n in RANKS for name in _check_names(n)]


@pytest.mark.parametrize("n,name", CASES, ids=[f"n{n}-{name}" for n, name in CASES])
def test_propagation_check(n: int, name: str) -> None:
    outcomes, diag = _launch(n)
    assert name in outcomes, f"check {name!r} did not report on {n} ranks. {diag}"
    assert outcomes[name] == "", f"{name} on {n} ranks: {outcomes[name]}"


@pytest.mark.parametrize("n", RANKS)
def test_every_check_reported(n: int) -> None:
    outcomes, diag = _launch(n)
    assert not diag, diag
    assert sorted(outcomes) == sorted(_check_names(n))
