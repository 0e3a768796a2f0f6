"""Shared test helpers: where MindSpore's fixtures live, and running a body under mpirun."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# The examples (the tutorials' networks) are importable by the tests: ``from seed_net import ...``.
sys.path.insert(0, str(ROOT / "examples"))
# MindSpore-made reference files (read-only), shipped beside the repository as ../shared.
MS_FIXTURES = Path(os.environ.get("DISTINFER_MS_FIXTURES", ROOT.parent / "shared" / "fixtures" / "mindspore"))


@pytest.fixture(scope="session")
def ms_fixtures() -> Path:
    """Root of the MindSpore-made fixtures (``ckpt/``, ``safetensors/``, ``strategy/`` ...)."""
    if not MS_FIXTURES.is_dir():
        pytest.fail(f"MindSpore fixtures not found at {MS_FIXTURES}; set DISTINFER_MS_FIXTURES")
    return MS_FIXTURES


def pytest_configure(config) -> None:
    config.addinivalue_line("markers", "mindspore: needs real MindSpore 2.10 in its own Python "
                                       "(DISTINFER_MINDSPORE_PYTHON); skipped without it")
@pytest.fixture(scope="session")
def mindspore_python() -> str:
    """A Python with real MindSpore installed (``DISTINFER_MINDSPORE_PYTHON``, else /work/msenv/bin/python),
    for optional side-by-side tests; they are skipped without one."""
    path = os.environ.get("DISTINFER_MINDSPORE_PYTHON", "/work/msenv/bin/python")
    if not Path(path).is_file():
        pytest.skip(f"no MindSpore interpreter at {path} (set DISTINFER_MINDSPORE_PYTHON to compare with MindSpore)")
    return path
