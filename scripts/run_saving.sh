#!/bin/bash
# The "Model Saving" step on 8 ranks: writes src_checkpoints/rank_{0..7}/checkpoint-*.ckpt and src_strategy.ckpt
# in the current directory. Uses the mpirun of the repository's .venv (python3 dev.py setup creates it).
set -euo pipefail
HERE="$(cd "$(dirname "$0")/.." && pwd)"
PY="${PYTHON:-$HERE/.venv/bin/python}"
"$PY" -m distinfer.launch -n 8 "$HERE/examples/train_saving.py"
