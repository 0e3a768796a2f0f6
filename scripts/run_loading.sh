#!/bin/bash
# The "Model Loading" step on 8 ranks, as the tutorial runs it:
#   mpirun -n 8 --output-filename log_output --merge-stderr-to-stdout python test_loading.py
# Open MPI 5 spells that `--output merge-stderr-to-stdout,dir=log_output` and names the job folder
# after the launcher; it is renamed to 1 so each rank's output is in log_output/1/rank.<r>/stdout as
# the tutorial shows. The exports go to mindir/net_rank_<r>.mindir.
# Run in the directory holding src_checkpoints/ and src_strategy.ckpt (see run_saving.sh).
set -euo pipefail
HERE="$(cd "$(dirname "$0")/.." && pwd)"
PY="${PYTHON:-$HERE/.venv/bin/python}"
rm -rf log_output
status=0
"$PY" -m distinfer.launch -n 8 --output merge-stderr-to-stdout,dir=log_output -- "$HERE/examples/test_loading.py" || status=$?
job=$(find log_output -mindepth 1 -maxdepth 1 -type d | head -n 1)
if [ -n "$job" ] && [ "$job" != "log_output/1" ]; then mv "$job" log_output/1; fi
exit $status
