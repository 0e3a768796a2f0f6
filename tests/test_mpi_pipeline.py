"""Pipeline parallel on 8 ranks (2 stages of 4): inference from MindSpore's pipeline_2x4 checkpoints,
training across stages, and its files merged back."""
import re
from pathlib import Path

import pytest

from distinfer import nn
from distinfer.launch import run

SCRIPT = Path(__file__).parent / "mpi" / "pipeline_predict.py"


def test_pipeline_inference_and_training(ms_fixtures):
    proc = run(8, [str(SCRIPT), str(ms_fixtures)], capture_output=True, text=True, timeout=300)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    lines = re.findall(r"^(?:PASS|FAIL) .*$", proc.stdout, flags=re.M)
    assert len(lines) == 32 and all(line.startswith("PASS") for line in lines), "\n".join(lines) or out[-3000:]


def test_pipeline_stage_must_be_a_non_negative_int():
    with pytest.raises(ValueError, match="pipeline_stage"):
        nn.Dense(2, 2).pipeline_stage = -1
