#!/usr/bin/env bash
# Creates .venv with a Python >= 3.12 (VapourSynth R74+ needs it), installs the package with its
# test and TensorRT-RTX extras, and the encoders the demo and tests pipe into.
# Idempotent: a second run only checks. Messages go to stderr.
set -euo pipefail
cd "$(dirname "$0")/.."
say() { echo "setup: $*" >&2; }

py_ok() {  # $@ = a command that runs a python; true when it runs and is >= 3.12
    "$@" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 12) else 1)' >/dev/null 2>&1
}

find_python() {
    if [ -n "${SKIPSR_PYTHON:-}" ]; then
        py_ok "$SKIPSR_PYTHON" && { echo "$SKIPSR_PYTHON"; return 0; }
        say "SKIPSR_PYTHON=$SKIPSR_PYTHON is not a Python >= 3.12"; return 1
    fi
    local cand
    for cand in python3.14 python3.13 python3.12 python3; do
        if command -v "$cand" >/dev/null 2>&1 && py_ok "$cand"; then
            "$cand" -c 'import sys; print(sys.executable)'; return 0
        fi
    done
    # pyenv: installed but not selected versions are not on PATH as runnable shims.
    if command -v pyenv >/dev/null 2>&1 || [ -d "${PYENV_ROOT:-$HOME/.pyenv}/versions" ]; then
        local root="${PYENV_ROOT:-$HOME/.pyenv}" v
        for v in $(ls -1 "$root/versions" 2>/dev/null | grep -E '^3\.(1[2-9])(\.[0-9]+)?$' | sort -rV); do
            for cand in "$root/versions/$v/bin/python3" "$root/versions/$v/bin/python"; do
                if [ -x "$cand" ] && py_ok "$cand"; then echo "$cand"; return 0; fi
            done
        done
    fi
    return 1
}

if [ ! -x .venv/bin/python ] || ! py_ok .venv/bin/python; then
    if ! PY=$(find_python); then
        say "no Python >= 3.12 found (looked on PATH for python3.12+ and in pyenv's versions)."
        say "VapourSynth R74+ needs Python >= 3.12: install one (e.g. 'pyenv install 3.12') or set SKIPSR_PYTHON."
        exit 1
    fi
    say "creating .venv with $PY ($("$PY" --version 2>&1))"
    rm -rf .venv
    "$PY" -m venv .venv
fi

stamp=.venv/.skipsr-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
    # A first install takes ~6.5 GB in .venv (PyPI's torch for 3.12+ is a CUDA build) plus pip's
    # unpacking in TMPDIR: say so up front rather than die midway on ENOSPC.
    need_gb=8
    for dir in .venv "${TMPDIR:-/tmp}"; do
        free_kb=$(df -Pk "$dir" 2>/dev/null | awk 'NR==2 {print $4}')
        if [ -n "$free_kb" ] && [ "$free_kb" -lt $((need_gb * 1024 * 1024)) ]; then
            say "only $((free_kb / 1024)) MiB free on the filesystem of $dir; installing needs about ${need_gb} GiB."
            say "free some space (or point TMPDIR elsewhere) and run scripts/setup.sh again."
            exit 1
        fi
    done
    say "installing vs_skipsr and its dependencies into .venv (torch is large: minutes on first run)"
    .venv/bin/python -m pip install -q --upgrade pip >&2
    .venv/bin/python -m pip install -q --no-cache-dir -e '.[test,trt,train]' >&2
    touch "$stamp"
fi

# Encoders: Debian's x264 and ffmpeg. apt needs root; say what to do otherwise.
need=()
command -v x264 >/dev/null 2>&1 || need+=(x264)
command -v ffmpeg >/dev/null 2>&1 || need+=(ffmpeg)
if [ ${#need[@]} -gt 0 ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        say "installing ${need[*]} with apt-get"
        apt-get update -qq >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >&2
    else
        say "missing ${need[*]}: install them with your package manager (e.g. 'sudo apt-get install ${need[*]}')"
        exit 1
    fi
fi
# vspipe embeds Python through VSScript: PyPI's VapourSynth must be told once which Python
if .venv/bin/python -m vapoursynth check-env 2>/dev/null | grep -q 'NOT CONFIGURED'; then
    say "configuring VSScript: $(.venv/bin/python -m vapoursynth config 2>&1)"
fi
say "ready: $(.venv/bin/python --version 2>&1), vapoursynth $(.venv/bin/python -c 'import vapoursynth as vs; print(vs.core.version_number())' 2>/dev/null || echo '?')"
