#!/usr/bin/env bash
# Table 1 and the stage-1 test submissions on a borrowed GPU host, in one command.
#
#   experiments/gpu_run.sh OUT        (from the repository root; gpu_pack/ made by gpu_pack.py)
#
# From the device tool: run(command='experiments/gpu_run.sh "$OUT"', carry=["gpu_pack"]).
# The host has JAX but no TensorFlow, ml_collections, PyYAML, tqdm, roifile or matplotlib
# (experiments/gpu_pack.py): the packed pure-Python wheels go on PYTHONPATH (a wheel is a zip),
# the data is the packed compact copy (config.data.storage=compact), batches are made on the
# device (config.data.pipeline=device). Then:
#   1. experiments/table1.py --budget=minutes=$GPU_RUN_MINUTES --variant=$GPU_RUN_VARIANT: the
#      four networks with the paper's settings (Table 2), each stopped after GPU_RUN_MINUTES
#      training minutes (default 1): the paper's schedules do not fit in the 10 minutes one
#      device command may run. Evaluated on validation (test too when its labels were packed),
#      plus the classical baseline. Writes OUT/table1.{md,json,png}.
#   2. --mode=predict --input=split:test for each trained network: OUT/submissions/NET.csv.gz
#      (Kaggle DSB 2018 stage 1) and OUT/submissions/NET_summary.json.
#   3. OUT/runs/NET/: each run's config.json, summary.json, metrics.jsonl and eval reports (the
#      checkpoints stay in GPU_RUN_WORKDIRS, runs/gpu_run by default: too big to return).
# Everything printed also goes to OUT/gpu_run.log. Exit code: 0, or 1 when any step failed
# (the others still ran). Run again on the same (warm) machine, it skips finished trainings
# and evaluations (table1.py) and resumes an interrupted training from its checkpoint.
#
# Environment: GPU_PACK (default gpu_pack), PYTHON (default python, else python3),
# GPU_RUN_VARIANT (paper; tiny for a dry run on a CPU), GPU_RUN_MINUTES (1), GPU_RUN_NETWORKS
# (all four + classical), GPU_RUN_WORKDIRS (the runs' folder, default runs/gpu_run).
set -uo pipefail

if [[ $# -ne 1 ]]; then
  echo "usage: experiments/gpu_run.sh OUT" >&2
  exit 2
fi
mkdir -p "$1" && OUT=$(cd "$1" && pwd)
PACK=$(cd "${GPU_PACK:-gpu_pack}" 2>/dev/null && pwd) || {
  echo "gpu_run: no ${GPU_PACK:-gpu_pack}/ here: run experiments/gpu_pack.py first and carry it" >&2
  exit 2
}
PYTHON=${PYTHON:-$(command -v python || command -v python3)}
VARIANT=${GPU_RUN_VARIANT:-paper}
MINUTES=${GPU_RUN_MINUTES:-1}
NETWORKS=${GPU_RUN_NETWORKS:-simple_cnn,resnet,unet,mask_rcnn,classical}
mkdir -p "${GPU_RUN_WORKDIRS:=runs/gpu_run}" && WORK=$(cd "$GPU_RUN_WORKDIRS" && pwd)
exec > >(tee -a "$OUT/gpu_run.log") 2>&1

wheels=("$PACK"/wheels/*.whl)
if [[ ! -f ${wheels[0]} ]]; then
  echo "gpu_run: no wheels in $PACK/wheels: run experiments/gpu_pack.py again" >&2
  exit 2
fi
WHEELPATH=$(IFS=:; echo "${wheels[*]}")
export PYTHONPATH="$PWD:$WHEELPATH${PYTHONPATH:+:$PYTHONPATH}"
data=(
  --config.data.source=dsb2018
  --config.data.data_dir="$PACK/data"
  --config.data.storage=compact
  --config.data.pipeline=device
)
status=0
echo "gpu_run: $(date -u +%FT%TZ), git $(git rev-parse --short HEAD 2>/dev/null || echo '?'), runs in $WORK"
echo "gpu_run: paper configs (:$VARIANT) capped at $MINUTES training minutes per network" \
  "(--budget=minutes=$MINUTES): the paper's schedules do not fit in one 10-minute command"

overrides=()
for flag in "${data[@]}"; do overrides+=("--override=$flag"); done
"$PYTHON" experiments/table1.py --budget="minutes=$MINUTES" --variant="$VARIANT" \
  --networks="$NETWORKS" --splits=validation,test --workdir_root="$WORK" \
  --out="$OUT/table1" "${overrides[@]}" || status=1

runs=$("$PYTHON" -c "from nucjax import benchmark as b; print(b.parse_budget('minutes=$MINUTES').folder)")
mkdir -p "$OUT/submissions"
for workdir in "$WORK/$runs"/*/; do
  net=$(basename "$workdir")
  [[ $net == classical ]] && continue
  mkdir -p "$OUT/runs/$net"
  for f in config.json summary.json metrics.jsonl; do
    [[ -f $workdir/$f ]] && cp "$workdir/$f" "$OUT/runs/$net/"
  done
  [[ -d $workdir/eval ]] && cp -r "$workdir/eval" "$OUT/runs/$net/"
  [[ -f $workdir/summary.json ]] || continue  # training failed: table1 reported it
  predictions="$WORK/predictions/$net"
  # the saved config.json already names the packed data
  if "$PYTHON" -m nucjax.main --mode=predict --workdir="$workdir" --input=split:test \
    --output="$predictions"; then
    gzip -c "$predictions/submission.csv" >"$OUT/submissions/$net.csv.gz"
    cp "$predictions/summary.json" "$OUT/submissions/${net}_summary.json"
  else
    echo "gpu_run: predict $net failed" >&2
    status=1
  fi
done
echo "gpu_run: done (exit $status): $OUT"
ls -l "$OUT" "$OUT/submissions"
exit $status
