"""scripts/setup.sh on a machine without room for the install: it must stop before pip starts
and say how much is free and how much it needs (CI once died midway with ENOSPC instead)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _repo_copy(tmp_path: Path, *, free_kb: int) -> tuple[Path, dict[str, str]]:
    """A repo with setup.sh, a .venv whose python is this one (>= 3.12) but no install stamp,
    and a `df` on PATH that reports ``free_kb`` free; `pip` calls are logged, never run."""
    repo = tmp_path / "repo"
    (repo / "scripts").mkdir(parents=True)
    shutil.copy(ROOT / "scripts" / "setup.sh", repo / "scripts" / "setup.sh")
    shutil.copy(ROOT / "pyproject.toml", repo / "pyproject.toml")
    bin_dir = repo / ".venv" / "bin"
    bin_dir.mkdir(parents=True)
    log = tmp_path / "calls.log"
    (bin_dir / "python").write_text(
        "#!/bin/sh\n"
        f'case "$*" in *pip*) echo "pip $*" >> {log}; exit 0;; esac\n'
        f'exec {sys.executable} "$@"\n'
    )
    (bin_dir / "python").chmod(0o755)
    fake = tmp_path / "fakebin"
    fake.mkdir()
    (fake / "df").write_text(
        "#!/bin/sh\n"
        "echo 'Filesystem 1024-blocks Used Available Capacity Mounted on'\n"
        f"echo '/dev/x 1000000000 1 {free_kb} 1% /'\n"
    )
    (fake / "df").chmod(0o755)
    env = {**os.environ, "PATH": f"{fake}:{os.environ['PATH']}", "TMPDIR": str(tmp_path)}
    return repo, env


def test_setup_stops_before_pip_when_the_disk_is_full(tmp_path: Path) -> None:
    repo, env = _repo_copy(tmp_path, free_kb=1_100_000)
    done = subprocess.run(
        ["bash", "scripts/setup.sh"], cwd=repo, env=env, capture_output=True, text=True
    )
    assert done.returncode == 1
    assert "only 1074 MiB free" in done.stderr and "about 8 GiB" in done.stderr
    assert done.stdout == ""
    assert not (tmp_path / "calls.log").exists(), "pip ran although the disk was full"


def test_setup_goes_on_to_pip_when_there_is_room(tmp_path: Path) -> None:
    repo, env = _repo_copy(tmp_path, free_kb=60 * 1024 * 1024)
    subprocess.run(["bash", "scripts/setup.sh"], cwd=repo, env=env, capture_output=True, text=True)
    calls = (tmp_path / "calls.log").read_text()
    assert "--no-cache-dir -e .[test,trt,train]" in calls
