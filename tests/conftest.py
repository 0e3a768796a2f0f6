"""Shared test helpers: where MindSpore's fixtures live, and running a body under mpirun."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# MindSpore-made reference files (read-only), shipped beside the repository as ../shared.
MS_FIXTURES = Path(os.environ.get("DISTINFER_MS_FIXTURES", ROOT.parent / "shared" / "fixtures" / "mindspore"))


@pytest.fixture(scope="session")
def ms_fixtures() -> Path:
    """Root of the MindSpore-made fixtures (``ckpt/``, ``safetensors/``, ``strategy/`` ...)."""
    if not MS_FIXTURES.is_dir():
        pytest.fail(f"MindSpore fixtures not found at {MS_FIXTURES}; set DISTINFER_MS_FIXTURES")
    return MS_FIXTURES
