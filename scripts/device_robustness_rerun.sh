#!/usr/bin/env bash
# Rerun the robustness cells on already trained models (no training): the calibrated recipe as it is now.
# Expects the models in .robust_ckpt/ ({arch}-w{seed}-n100*/), e.g. the checkpoints device_robustness.sh returned.
#   OUT=/some/dir CELLS=llava:0,llava:1 bash scripts/device_robustness_rerun.sh
set -u
OUT=${OUT:-/tmp/robustness-out}; mkdir -p "$OUT"
if [ -d .whl ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site:$PWD
  python3 -m pip uninstall -y -q torchvision 2>/dev/null
fi
export STEERKIT_HOME=${STEERKIT_HOME:-/tmp/skhome} HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1 STEERKIT_BENCH_THREADS=1
W=/tmp/rob
python3 benchmarks/robustness.py run --cells "${CELLS:-llava:0,llava:1,llava:2,llava:3,llava:4,llava:5}" \
  --device cuda --work $W --budget "${BUDGET:-200}" --checkpoints "$PWD/.robust_ckpt"
tar czf "$OUT/cells.tgz" -C $W .
for f in $W/log_*; do echo "== $f"; tail -4 "$f"; done
