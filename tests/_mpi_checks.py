"""The pytest side of the check scripts in ``tests/mpi/`` (see ``tests/mpi/_harness.py``): list a script's
checks for a rank count, and launch it once per rank count, reading rank 0's ``PASS``/``FAIL`` lines."""
from __future__ import annotations

import importlib.util
from pathlib import Path

from distinfer import launch

__all__ = ["check_names", "launch_checks"]


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
