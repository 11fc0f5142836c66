#!/usr/bin/env bash
# The main job, end to end: a real clip (cockatoo.mp4 from Debian's python3-imageio) through
# scripts/demo.vpy (BestSource, else L-SMASH -> skipsr) with vspipe, into x264, then checked
# with ffprobe. 1280x720 is cut to the first FRAMES frames and downscaled to LR_WIDTH (320x180)
# so a CPU finishes in a minute or two; x4 brings it back to 1280x720.
#
#   scripts/demo.sh                       # writes out/demo.mkv and out/demo_mask.png
#   FRAMES=60 SKIP_RATIO=0.7 scripts/demo.sh
#   SR_WEIGHTS=path.safetensors MASK_WEIGHTS=path.safetensors scripts/demo.sh
#
# Progress and logs go to stderr; the last line on stdout says where the file is.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
say() { echo "demo: $*" >&2; }

FRAMES=${FRAMES:-24}
LR_WIDTH=${LR_WIDTH:-320}
SCALE=${SCALE:-4}
SKIP_RATIO=${SKIP_RATIO:-}   # empty: skipsr's default threshold
THRESHOLD=${THRESHOLD:-}
CRF=${CRF:-18}
SR_WEIGHTS=${SR_WEIGHTS:-}
MASK_WEIGHTS=${MASK_WEIGHTS:-}
OUT=${OUT:-$ROOT/out/demo.mkv}

scripts/setup.sh
VSPIPE=.venv/bin/vspipe
# the PyPI VapourSynth needs to be told once which Python vspipe embeds
if .venv/bin/python -m vapoursynth check-env 2>/dev/null | grep -q 'NOT CONFIGURED'; then
    say "configuring VSScript for .venv ($(.venv/bin/python -m vapoursynth config 2>&1))"
fi

.venv/bin/python scripts/fetch_data.py --what sample
CLIP=$ROOT/data/val/clips/cockatoo.mp4
[ -f "$CLIP" ] || { say "fetch_data.py did not produce $CLIP"; exit 1; }

if [ -z "$SR_WEIGHTS" ] && [ ! -f vs_skipsr/weights/sr_default.safetensors ]; then
    say "the shipped SR weights (vs_skipsr/weights/sr_default.safetensors) are not there yet:"
    say "train them (scripts/train_sr.py) or pass SR_WEIGHTS=path/to/sr.safetensors"
    exit 1
fi

args=(-a "src=$CLIP" -a "frames=$FRAMES" -a "lr_width=$LR_WIDTH" -a "scale=$SCALE")
[ -n "$SKIP_RATIO" ] && args+=(-a "skip_ratio=$SKIP_RATIO")
[ -n "$THRESHOLD" ] && args+=(-a "threshold=$THRESHOLD")
[ -n "$SR_WEIGHTS" ] && args+=(-a "sr_weights=$(realpath "$SR_WEIGHTS")")
[ -n "$MASK_WEIGHTS" ] && args+=(-a "mask_weights=$(realpath "$MASK_WEIGHTS")")

mkdir -p "$(dirname "$OUT")"
say "vspipe scripts/demo.vpy | x264 -> $OUT ($FRAMES frames, ${LR_WIDTH}px wide, x$SCALE)"
start=$(date +%s%N)
set +e
"$VSPIPE" -c y4m -p "${args[@]}" scripts/demo.vpy - \
    | x264 --demuxer y4m --preset medium --crf "$CRF" --output "$OUT" -
status=("${PIPESTATUS[@]}")
set -e
elapsed_ms=$(( ($(date +%s%N) - start) / 1000000 ))
if [ "${status[0]}" != 0 ] || [ "${status[1]}" != 0 ]; then
    say "failed: vspipe exited ${status[0]}, x264 ${status[1]}"
    exit 1
fi

IFS=, read -r width height count < <(ffprobe -v error -count_frames -select_streams v:0 \
    -show_entries stream=width,height,nb_read_frames -of csv=p=0 "$OUT")
if [ "$count" != "$FRAMES" ]; then
    say "ffprobe counts $count frames in $OUT, expected $FRAMES"
    exit 1
fi
say "ffprobe: $count frames, ${width}x${height}; vspipe | x264 took $((elapsed_ms / 1000)).$(printf '%03d' $((elapsed_ms % 1000))) s"

# frame 0 with the keep mask drawn over it: skipped tokens dimmed and blue, kept ones outlined
MASK_PNG=$(dirname "$OUT")/demo_mask.png
if "$VSPIPE" -c y4m -e 0 "${args[@]}" -a show_mask=1 scripts/demo.vpy - 2>/dev/null \
    | ffmpeg -v error -y -f yuv4mpegpipe -i - -frames:v 1 "$MASK_PNG"; then
    say "mask overlay: $MASK_PNG"
fi

echo "$OUT"
