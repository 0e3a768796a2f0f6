"""The core runtime under ``mpirun -n 1, 2, 4, 8``: the same test bodies at every rank count.

``tests/mpi/runtime_checks.py`` runs every check on every rank and rank 0 prints one ``PASS`` or
``FAIL`` line per check; it is launched once per rank count (8 ranks oversubscribe the cores)
and each check becomes one pytest item here.
"""
from __future__ import annotations

import importlib.util
from functools import lru_cache
from pathlib import Path

import pytest

from distinfer import launch

pytestmark = pytest.mark.mpi

SCRIPT = Path(__file__).resolve().parent / "mpi" / "runtime_checks.py"
RANKS = (1, 2, 4, 8)
TIMEOUT = 240


def _check_names(n: int) -> list[str]:
    spec = importlib.util.spec_from_file_location("_runtime_checks_names", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.check_names(n)


@lru_cache(maxsize=None)
def _launch(n: int) -> tuple[dict[str, str], str]:
    """Run the checks on ``n`` ranks once; ``({name: "" or error}, diagnostics)``."""
    try:
        res = launch.run(n, [str(SCRIPT)], capture_output=True, text=True, timeout=TIMEOUT)
    except Exception as exc:  # noqa: BLE001 - a hang or a missing mpirun fails every item
        return {}, f"launch failed: {exc!r}"
    outcomes: dict[str, str] = {}
    for line in res.stdout.splitlines():
        if line.startswith("PASS "):
            outcomes[line[5:].strip()] = ""
        elif line.startswith("FAIL "):
            name, _, err = line[5:].partition(": ")
            outcomes[name.strip()] = err or "failed"
    done = f"DONE {n}" in res.stdout
    diag = "" if done and res.returncode == 0 else \
        f"exit code {res.returncode}, DONE line {'present' if done else 'missing'}\n" \
        f"stdout tail:\n{res.stdout[-2000:]}\nstderr tail:\n{res.stderr[-3000:]}"
    return outcomes, diag


CASES = [(n, name) for n in RANKS for name in _check_names(n)]


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
    assert sorted(outcomes) == sorted(_check_names(n))
