#!/usr/bin/env bash
# Train one or more configs on the real DSB 2018 data, one after another, logging each run.
#   experiments/run_quick.sh configs/unet.py:quick configs/simple_cnn.py:quick
# Each run goes to runs/<name>_<variant>/ with its console log; the git revision and machine
# are written next to it (run_info.txt) for the record in experiments/README.md.
set -euo pipefail
cd "$(dirname "$0")/.."
export NUCJAX_DSB2018_SOURCE=${NUCJAX_DSB2018_SOURCE:-$(cd ../shared/data/dsb2018 && pwd)}
for cfg in "$@"; do
  name=$(basename "${cfg%%:*}" .py)_${cfg##*:}
  workdir=runs/$name
  mkdir -p "$workdir"
  {
    echo "command: python -m nucjax.main --config=$cfg --workdir=$workdir"
    echo "git: $(git rev-parse HEAD)$(git diff --quiet HEAD -- nucjax configs || echo ' (+local changes)')"
    echo "machine: $(nproc) cores, $(free -g | awk '/Mem:/{print $2}') GiB, $(uname -m), started $(date -u +%FT%TZ)"
  } >"$workdir/run_info.txt"
  .venv/bin/python -m nucjax.main --config="$cfg" --workdir="$workdir" >"$workdir/console.log" 2>&1
  echo "finished: $(date -u +%FT%TZ)" >>"$workdir/run_info.txt"
done
