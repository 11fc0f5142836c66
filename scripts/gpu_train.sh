#!/usr/bin/env bash
# One device call: check the CUDA paths, train the SR net (data-parallel over every GPU the
# machine has), then the mask net on its labels. Each result lands in OUTDIR as soon as it
# exists, so a call cut short still returns what finished.
# Usage (on the GPU machine, repo root, data/pack present):
#   SR_MIN=5.5 MASK_MIN=1.5 bash scripts/gpu_train.sh OUTDIR
# SR_INIT=weights.safetensors fine-tunes those weights; SR_KEEP_RANKINGS=both trains on keep
# sets ranked by either shipped scorer (train_sr.py --keep-rankings).
set -uo pipefail
out=${1:-out/gpu_train}
mkdir -p "$out"
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
ngpu=$(nvidia-smi -L | wc -l)
python3 -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name())"
python3 -m pytest -q --noconftest -p no:cacheprovider tests/test_core.py 2>&1 | tail -4
launch=(python3)
if [ "$ngpu" -gt 1 ]; then
    launch=(python3 -m torch.distributed.run --standalone --nproc_per_node "$ngpu")
fi
init=()
[ -n "${SR_INIT:-}" ] && init=(--init "$SR_INIT")  # fine-tune these weights instead
"${launch[@]}" scripts/train_sr.py --pack data/pack --minutes "${SR_MIN:-5.5}" \
    --batch "${SR_BATCH:-16}" --lr "${SR_LR:-1e-3}" --max-step-s "${MAX_STEP_S:-0.3}" \
    --keep-rankings "${SR_KEEP_RANKINGS:-gradient}" "${init[@]}" \
    --half-weights --out /tmp/train/sr --weights "$out/sr_default.safetensors" || exit 1
cp /tmp/train/sr/curve.jsonl "$out/curve_sr.jsonl"
cp /tmp/train/sr/*.png "$out/"
cp "$out/sr_default.safetensors" vs_skipsr/weights/sr_default.safetensors
python3 scripts/train_mask.py --pack data/pack --sr-weights vs_skipsr/weights/sr_default.safetensors \
    --minutes "${MASK_MIN:-1.5}" --out /tmp/train/mask --weights "$out/mask_default.safetensors" || exit 1
cp /tmp/train/mask/*.png "$out/"
cp /tmp/train/mask/curve.jsonl "$out/curve_mask.jsonl"
