#!/usr/bin/env bash
# One device call: the GPU benchmarks, with VapourSynth, L-SMASH Works and imageio-ffmpeg
# (ffmpeg + libx264) carried as wheels in .whl/ (the machine has no network).
# Usage (GPU machine, repo root, data/val/clips/cockatoo.mp4 present):
#   bash scripts/gpu_bench.sh OUTDIR [scripts/bench.py arguments...]
set -uo pipefail
out=${1:-out/gpu_bench}
shift || true
mkdir -p "$out"
. scripts/gpu_env.sh || exit 1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
if [ "${SKIP_TESTS:-0}" != 1 ]; then  # SKIP_TESTS=1: a second call on the same machine
    python3 -m pytest -q -p no:cacheprovider tests/test_core.py tests/test_filter.py -k cuda 2>&1 | tail -6
fi
python3 scripts/bench.py --out "$out" "$@"
