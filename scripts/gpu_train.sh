#!/usr/bin/env bash
# One device call: check the CUDA paths, train the SR net, then the mask net on its labels.
# Usage (on the GPU machine, repo root, data/pack present): SR_MIN=5.5 MASK_MIN=1.5 bash scripts/gpu_train.sh OUTDIR
set -uo pipefail
out=${1:-out/gpu_train}
mkdir -p "$out"
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python3 -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name())"
python3 -m pytest -q --noconftest -p no:cacheprovider tests/test_core.py 2>&1 | tail -4
python3 scripts/train_sr.py --pack data/pack --minutes "${SR_MIN:-5.5}" --batch "${SR_BATCH:-16}" --max-step-s "${MAX_STEP_S:-0.3}" \
    --out /tmp/train/sr --weights vs_skipsr/weights/sr_default.safetensors || exit 1
python3 scripts/train_mask.py --pack data/pack --sr-weights vs_skipsr/weights/sr_default.safetensors \
    --minutes "${MASK_MIN:-1.5}" --out /tmp/train/mask --weights vs_skipsr/weights/mask_default.safetensors || exit 1
cp vs_skipsr/weights/*.safetensors /tmp/train/sr/*.png /tmp/train/mask/*.png "$out/"
cp /tmp/train/sr/curve.jsonl "$out/curve_sr.jsonl"
cp /tmp/train/mask/curve.jsonl "$out/curve_mask.jsonl"
