#!/usr/bin/env python3
"""Set up distinfer in a local virtual environment and run its main job or its tests.

    python3 dev.py demo     # the seed workflow on 8 MPI ranks (save, load, predict, export)
    python3 dev.py test     # the test suite

Both commands create ``.venv`` beside this file on first use and reinstall only when
``pyproject.toml`` changes, so running them again is cheap. Needs only Python 3.10+.
"""
from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
PY = VENV / "bin" / "python"
STAMP = VENV / ".distinfer-installed"


def _install_key() -> str:
    return hashlib.sha256((ROOT / "pyproject.toml").read_bytes()).hexdigest()


def ensure_venv() -> None:
    """Create the virtual environment and install distinfer with its MPI and test extras."""
    if not PY.exists():
        print(f"[dev] creating {VENV}", flush=True)
        venv.EnvBuilder(with_pip=True).create(VENV)
    key = _install_key()
    if STAMP.exists() and STAMP.read_text() == key:
        return
    print("[dev] installing distinfer[mpi,test] (first run or pyproject.toml changed)", flush=True)
    pip = [str(PY), "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run(pip + ["install", "--upgrade", "pip"], check=True)
    subprocess.run(pip + ["install", "-e", f"{ROOT}[mpi,test]"], check=True)
    STAMP.write_text(key)


def run(argv: list[str]) -> int:
    env = dict(os.environ)
    env["PATH"] = f"{VENV / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    env.setdefault("PYTHONUNBUFFERED", "1")
    return subprocess.run(argv, cwd=ROOT, env=env).returncode


def main() -> int:
    what = sys.argv[1] if len(sys.argv) > 1 else "help"
    rest = sys.argv[2:]
    if what == "demo":
        ensure_venv()
        return run([str(PY), str(ROOT / "examples" / "seed_workflow.py"), *rest])
    if what == "test":
        ensure_venv()
        return run([str(PY), "-m", "pytest", "-q", *rest])
    if what == "setup":
        ensure_venv()
        return 0
    print(__doc__)
    return 0 if what in ("help", "-h", "--help") else 2


if __name__ == "__main__":
    sys.exit(main())
