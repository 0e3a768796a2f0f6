#!/bin/bash
# The "Model Loading" step on 8 ranks: loads the slices written by run_saving.sh (run it in the directory
# holding src_checkpoints/ and src_strategy.ckpt), predicts, and exports mindir/net_rank_<r>.mindir;
# rank r's output is in log_output/1/rank.<r>/stdout, as the tutorial shows (see run_logged.sh).
set -euo pipefail
exec bash "$(dirname "$0")/run_logged.sh" 1 test_loading.py
