#!/usr/bin/env bash
# nucjax launcher.
#   ./launch.sh            install (once), train the U-Net recipe that gives the most accuracy
#                          per CPU minute (configs/unet.py:best shortened to 1200 steps, under
#                          20 minutes here), evaluate it on validation next to the classical
#                          baseline, segment the stage-1 test images
#   ./launch.sh test       install (once) and run lint + the whole test suite
#   ./launch.sh install    install (once): .venv with requirements.txt and nucjax itself
#                          (editable), so `.venv/bin/nucjax` is the command line
#   ./launch.sh main ARGS  install (once) and run `nucjax ARGS` (`python -m nucjax.main ARGS`)
set -euo pipefail
cd "$(dirname "$0")"

VENV=${NUCJAX_VENV:-.venv}
PY="$VENV/bin/python"

install() {
  if [ ! -x "$PY" ]; then
    echo "creating $VENV" >&2
    python3 -m venv "$VENV"
  fi
  # Re-install only when requirements.txt or pyproject.toml changed since the last install.
  local stamp="$VENV/.requirements.sha256"
  local want
  want=$(cat requirements.txt pyproject.toml | sha256sum | cut -d' ' -f1)
  if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
    echo "installing requirements and nucjax into $VENV" >&2
    "$PY" -m pip install -q --disable-pip-version-check -r requirements.txt 2> >(grep -v "is ignored: it is neither" >&2)
    # The `nucjax` command, running this checkout (requirements.txt holds the dependencies).
    "$PY" -m pip install -q --disable-pip-version-check --no-deps -e .
    echo "$want" >"$stamp"
  fi
}

# The DSB 2018 source: a URL, a file:// URL or a local folder with the BBBC038 files. The shared
# copy beside this checkout stands in for the download on machines without internet.
if [ -z "${NUCJAX_DSB2018_SOURCE:-}" ] && [ -d ../shared/data/dsb2018 ]; then
  export NUCJAX_DSB2018_SOURCE="$(cd ../shared/data/dsb2018 && pwd)"
fi

cmd=${1:-train}
case "$cmd" in
  test)
    install
    shift
    "$VENV/bin/ruff" check .
    "$VENV/bin/ruff" format --check .
    # Most test time is XLA compilation, which runs on one core: one worker per core.
    "$PY" -m pytest -q -n "${NUCJAX_TEST_WORKERS:-2}" --dist loadfile "$@"
    ;;
  train)
    install
    workdir=runs/unet_best
    # :best's full 3600 steps add +0.022 validation DSB for three times the minutes.
    "$PY" -m nucjax.main --config=configs/unet.py:best --workdir=$workdir \
      --config.train.num_steps=1200 --config.train.eval_every_steps=600 \
      --config.train.checkpoint_every_steps=200
    echo "== validation, the trained U-Net (whole images, official DSB 2018 metric):"
    "$PY" -m nucjax.main --mode=evaluate --workdir=$workdir
    echo "== validation, the classical baseline (Otsu + distance watershed, no training):"
    "$PY" experiments/classical_baseline.py --split=validation
    "$PY" -m nucjax.main --mode=predict --workdir=$workdir --input=split:test \
      --output=$workdir/stage1_test | tail -3
    echo "== outputs: $workdir (checkpoints, metrics.jsonl, tensorboard/, eval/, stage1_test/)"
    ;;
  install)
    install
    echo "installed: $VENV/bin/nucjax (source $VENV/bin/activate to put it on your PATH)" >&2
    ;;
  main)
    install
    shift
    "$PY" -m nucjax.main "$@"
    ;;
  *)
    echo "usage: $0 [train|install|test [PYTEST ARGS]|main ARGS]" >&2
    exit 2
    ;;
esac
