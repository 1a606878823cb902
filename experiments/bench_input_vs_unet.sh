#!/usr/bin/env bash
# Issue "Foundation": the input pipeline must deliver at least 5x what the U-Net step consumes.
# Runs both measurements in one go, on this machine, one after the other:
#   experiments/bench_input_vs_unet.sh [DATA_DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
data_dir=${1:-$HOME/tensorflow_datasets}
source=${NUCJAX_DSB2018_SOURCE:-$(cd ../shared/data/dsb2018 && pwd)}
echo "git: $(git rev-parse HEAD)  machine: $(nproc) cores, $(uname -m)  $(date -u +%FT%TZ)"
echo "== input pipeline: 256x256 crops, batch 16, real DSB 2018 train split"
.venv/bin/python experiments/bench_input_pipeline.py --data_dir="$data_dir" --source="$source" \
  --steps=50 --batch_size=16 --crop=256
echo "== U-Net train step (paper config: batch 16, 256x256)"
.venv/bin/python experiments/bench_train_step.py --config=configs/unet.py --steps=5
echo "== U-Net train step (:quick config: batch 16, 128x128)"
.venv/bin/python experiments/bench_train_step.py --config=configs/unet.py:quick --steps=5
