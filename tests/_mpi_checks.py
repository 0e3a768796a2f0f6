"""The pytest side of the check scripts in ``tests/mpi/`` (see ``tests/mpi/_harness.py``): each script is
launched once per rank count, and rank 0's ``PASS``/``FAIL`` lines become one pytest item per check."""
from __future__ import annotations

import importlib.util
from functools import lru_cache
from pathlib import Path
from typing import Callable, Sequence

import pytest

from distinfer import launch

__all__ = ["check_names", "launch_checks", "check_tests"]


def check_names(script: Path, n: int) -> list[str]:
    """What ``script`` runs on ``n`` ranks (its ``check_names(n)``), without running it."""
    spec = importlib.util.spec_from_file_location(f"_names_of_{script.stem}", script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.check_names(n)


def launch_checks(script: Path, n: int, timeout: float) -> tuple[dict[str, str], str]:
    """Run ``script`` on ``n`` ranks once: ``({check name: "" or its error}, diagnostics)``."""
    try:
        res = launch.run(n, [str(script)], capture_output=True, text=True, timeout=timeout)
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


def check_tests(script: Path, ranks: Sequence[int], timeout: float) -> tuple[Callable, Callable]:
    """The two tests of a check script: one item per (rank count, check), and one per rank count
    asserting that the run finished cleanly and reported exactly the checks expected."""
    launched = lru_cache(maxsize=None)(lambda n: launch_checks(script, n, timeout))
    cases = [(n, name) for n in ranks for name in check_names(script, n)]

    @pytest.mark.parametrize("n,name", cases, ids=[f"n{n}-{name}" for n, name in cases])
    def test_check(n: int, name: str) -> None:
        outcomes, diag = launched(n)
        if name not in outcomes:
            pytest.fail(f"check {name!r} did not report on {n} ranks. {diag}")
        assert outcomes[name] == "", f"{name} on {n} ranks: {outcomes[name]}"

    @pytest.mark.parametrize("n", ranks)
    def test_launch_reports_every_check(n: int) -> None:
        outcomes, diag = launched(n)
        assert not diag, diag
        expected = sorted(check_names(script, n))
        assert sorted(outcomes) == expected, f"reported {sorted(outcomes)}, expected {expected}"

    return test_check, test_launch_reports_every_check
