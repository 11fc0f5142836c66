# Source on the GPU machine (repo root): installs the wheels carried in .whl/ (VapourSynth,
# L-SMASH Works, imageio-ffmpeg, py-spy; the machine has no network) into /tmp/site once and
# puts them on PYTHONPATH and PATH, so vspipe and the benchmarks run in this shell.
#   . scripts/gpu_env.sh && vspipe -p -a src=... scripts/demo.vpy --
if [ ! -e /tmp/site/.installed ]; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/site .whl/*.whl || return 1
    touch /tmp/site/.installed
fi
export PYTHONPATH="$PWD:/tmp/site" PATH="/tmp/site/bin:$PATH" PYTHONUNBUFFERED=1
python3 -m vapoursynth config >/dev/null 2>&1 || true
