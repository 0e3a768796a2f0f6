#!/bin/bash
# The "Model Saving" step on 8 ranks: writes src_checkpoints/rank_{0..7}/checkpoint-*.ckpt and src_strategy.ckpt
# in the current directory; rank r's output is in log_output/saving/rank.<r>/stdout (see run_logged.sh).
# Uses the mpirun of the repository's .venv (python3 dev.py setup creates it).
set -euo pipefail
exec bash "$(dirname "$0")/run_logged.sh" saving train_saving.py
