#!/bin/bash
# Run examples/<EXAMPLE> on 8 ranks with each rank's output in a file, as the tutorial's run scripts do:
#   mpirun -n 8 --output-filename log_output --merge-stderr-to-stdout python <EXAMPLE>
# Open MPI 5 spells that `--output merge-stderr-to-stdout,dir=log_output` (nothing goes to the console)
# and names the job folder after the launcher; it is renamed to log_output/<JOB>, so rank r's output is
# log_output/<JOB>/rank.<r>/stdout (the tutorial shows log_output/1/rank.<r>/stdout).
# Usage: bash scripts/run_logged.sh JOB EXAMPLE   (in the directory the example works in)
set -euo pipefail
JOB="$1"
EXAMPLE="$2"
HERE="$(cd "$(dirname "$0")/.." && pwd)"
PY="${PYTHON:-$HERE/.venv/bin/python}"
mkdir -p log_output
rm -rf "log_output/$JOB"
before="$(ls log_output)"
status=0
"$PY" -m distinfer.launch -n 8 --output merge-stderr-to-stdout,dir=log_output -- "$HERE/examples/$EXAMPLE" || status=$?
for folder in $(ls log_output); do
    if ! grep -qxF "$folder" <<< "$before"; then mv "log_output/$folder" "log_output/$JOB"; break; fi
done
exit $status
