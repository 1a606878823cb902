#!/usr/bin/env bash
# One recorded DSB 2018 run: train, evaluate on validation, predict the stage-1 test images.
#   experiments/record_run.sh NAME CONFIG [--config.FIELD=VALUE ...]
#   experiments/record_run.sh unet_best configs/unet.py:best
# Writes runs/NAME/ (checkpoints, metrics, run_info.txt with command, git revision, machine and
# times; eval/validation_step*.md; stage1_test/submission.csv) and the gzipped Kaggle
# submission experiments/submissions/NAME.csv.gz, which is what gets scored on the test labels.
set -euo pipefail
cd "$(dirname "$0")/.."
name=$1 cfg=$2
shift 2
export NUCJAX_DSB2018_SOURCE=${NUCJAX_DSB2018_SOURCE:-$(cd ../shared/data/dsb2018 && pwd)}
PY=${PY:-.venv/bin/python}
workdir=${RUNS:-runs}/$name
mkdir -p "$workdir" experiments/submissions
{
  echo "command: python -m nucjax.main --config=$cfg --workdir=$workdir $*"
  echo "git: $(git rev-parse HEAD)$(git diff --quiet HEAD -- nucjax configs || echo ' (+local changes)')"
  echo "machine: $(nproc) cores, $(free -g | awk '/Mem:/{print $2}') GiB, $(uname -m)"
  echo "train started: $(date -u +%FT%TZ)"
} >"$workdir/run_info.txt"
$PY -m nucjax.main --config="$cfg" --workdir="$workdir" "$@" >"$workdir/train.log" 2>&1
echo "train finished: $(date -u +%FT%TZ)" >>"$workdir/run_info.txt"
$PY -m nucjax.main --mode=evaluate --workdir="$workdir" >"$workdir/evaluate.log" 2>&1
echo "evaluated: $(date -u +%FT%TZ)" >>"$workdir/run_info.txt"
$PY -m nucjax.main --mode=predict --workdir="$workdir" --input=split:test \
  --output="$workdir/stage1_test" >"$workdir/predict.log" 2>&1
gzip -9 -n -c "$workdir/stage1_test/submission.csv" >"experiments/submissions/$name.csv.gz"
echo "submission: experiments/submissions/$name.csv.gz ($(date -u +%FT%TZ))" >>"$workdir/run_info.txt"
tail -6 "$workdir/evaluate.log"
