#!/usr/bin/env bash
# The run behind benchmarks/results/robustness.json and the shipped embedded checkpoints (checkpoints/):
# 12 cells (LLaVA and Qwen2.5-VL x world seeds 0-5), each training its model on one shared GPU and running
# the calibrated recipe (benchmarks/robustness.py). Made for the project's lent H200 machine, whose Python
# lacks some of steerkit's dependencies: they travel as wheels in .whl/ (the versions of constraints.txt).
#   OUT=/some/dir BUDGET=500 bash scripts/device_robustness.sh
set -u
OUT=${OUT:-/tmp/robustness-out}; mkdir -p "$OUT"
if [ -d .whl ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site:$PWD
  # as on the CPU machines: without torchvision transformers uses its PIL image processors
  python3 -m pip uninstall -y -q torchvision 2>/dev/null
fi
export STEERKIT_HOME=${STEERKIT_HOME:-/tmp/skhome} HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1 STEERKIT_BENCH_THREADS=1
python3 -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__, torch.cuda.get_device_name())"
W=/tmp/rob; CELLS=""
for a in llava qwen2_5_vl; do for s in 0 1 2 3 4 5; do CELLS="$CELLS,$a:$s"; done; done
python3 benchmarks/robustness.py run --cells "${CELLS#,}" --device cuda --work $W --budget "${BUDGET:-500}"
cd "$STEERKIT_HOME"
tar czf "$OUT/cells.tgz" -C $W .
for a in llava qwen2_5_vl; do
  tar czf "$OUT/ckpt_${a}_012.tgz" models/${a}-w[012]-* 2>/dev/null
  tar czf "$OUT/ckpt_${a}_345.tgz" models/${a}-w[345]-* 2>/dev/null
done
tar czf "$OUT/world0.tgz" worlds/seed0-n100-* 2>/dev/null
ls -la "$OUT"; for f in $W/log_*; do echo "== $f"; tail -5 "$f"; done
