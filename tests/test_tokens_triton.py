"""The kept tokens' gather as a Triton kernel (``vs_skipsr/tokens_triton.py``) against torch's
flat index and cast.

On the CPU the kernel runs under Triton's interpreter in a subprocess (``TRITON_INTERPRET`` is
read when a kernel is defined), which saves its patches; this process compares them with
torch's gather on the same inputs: the shipped model's 16-pixel tokens with an 8-pixel halo
(32-pixel patches, one program a channel), a patch whose side is not a power of two (masked
rows and columns), no halo, frames with strides that are not contiguous, tokens on every
border; float32 and float16 to the bit, bfloat16 at the interpreter's truncation. On CUDA the
kernel gives torch's bytes at bikes' window size and the pipeline takes it.
"""

from __future__ import annotations

import pytest
import torch
from conftest import interpreter_bf16, run_interpreted

from vs_skipsr import tokens
from vs_skipsr.optional import optional_module
from vs_skipsr.tokens import gather_patches, token_coords

kernels = optional_module("vs_skipsr.tokens_triton")
needs_triton = pytest.mark.skipif(kernels is None, reason="needs triton")
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
# (T, H, W, patch, halo, layout): the shipped token and halo, a 12-pixel side (16 lanes, 4
# masked), no halo; "wide": a column slice of wider frames, "last": channels-last strides
CASES = [
    (2, 48, 64, 16, 8, "contiguous"),
    (2, 48, 64, 16, 8, "wide"),
    (3, 24, 40, 8, 2, "last"),
    (2, 32, 48, 16, 0, "contiguous"),
]


def _frames(t: int, h: int, w: int, layout: str) -> torch.Tensor:
    g = torch.Generator().manual_seed(t + h + w + len(layout))
    if layout == "wide":
        return torch.rand(t, 3, h, w + 7, generator=g)[..., 3 : 3 + w]
    frames = torch.rand(t, 3, h, w, generator=g)
    if layout == "last":
        return frames.contiguous(memory_format=torch.channels_last)
    return frames


def _coords(t: int, h: int, w: int, patch: int) -> torch.Tensor:
    """Every token of the first frame's border and a few of the others, out of order."""
    grid = (t, h // patch, w // patch)
    total = grid[0] * grid[1] * grid[2]
    index = torch.randperm(total, generator=torch.Generator().manual_seed(total))[: total // 2]
    first = torch.arange(grid[1] * grid[2])
    border = first[(first // grid[2] % (grid[1] - 1) == 0) | (first % grid[2] % (grid[2] - 1) == 0)]
    return token_coords(torch.cat((border, index)), grid=grid)


def _name(*case: object) -> str:
    return "_".join(str(v) for v in case)


_INTERPRETED = """
import sys, torch
sys.path.insert(0, "tests")
from test_tokens_triton import CASES, DTYPES, _coords, _frames, _name
from vs_skipsr.tokens_triton import gather_patches
out = {}
for t, h, w, patch, halo, layout in CASES:
    frames, coords = _frames(t, h, w, layout), _coords(t, h, w, patch)
    for name, dt in DTYPES.items():
        got = gather_patches(frames, coords, patch=patch, halo=halo, dtype=dt)
        out[_name(t, h, w, patch, halo, layout, name)] = got
out["none"] = gather_patches(_frames(2, 48, 64, "contiguous"), torch.zeros(0, 3, dtype=torch.long),
                             patch=16, halo=8, dtype=torch.bfloat16)
torch.save(out, sys.argv[1])
"""


@pytest.fixture(scope="module")
def interpreted(tmp_path_factory: pytest.TempPathFactory) -> dict[str, torch.Tensor]:
    path = tmp_path_factory.mktemp("tokens_triton") / "out.pt"
    run_interpreted(_INTERPRETED, str(path), timeout=300)
    return torch.load(path)


@needs_triton
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", CASES, ids=[_name(*c) for c in CASES])
def test_interpreted_gather_is_torchs(interpreted, case, dtype) -> None:
    t, h, w, patch, halo, layout = case
    frames, coords = _frames(t, h, w, layout), _coords(t, h, w, patch)
    plain = tokens._gather_flat(frames, coords, patch=patch, halo=halo).reshape(len(coords), -1)
    got = interpreted[_name(*case, dtype)]
    assert got.dtype == DTYPES[dtype] and got.shape == plain.shape
    want = interpreter_bf16(plain) if dtype == "bfloat16" else plain.to(DTYPES[dtype])
    assert torch.equal(got, want)
    # and the CPU's own way (rows of a padded copy) agrees: one layout, whatever reads it
    assert torch.equal(
        tokens._gather_rows(frames, coords, patch=patch, halo=halo).reshape(len(coords), -1),
        plain,
    )


@needs_triton
def test_interpreted_gather_of_no_token_is_empty(interpreted) -> None:
    none = interpreted["none"]
    assert none.shape == (0, 3 * 32 * 32) and none.dtype == torch.bfloat16


@needs_triton
def test_gather_refuses_bad_inputs_naming_them() -> None:
    frames = torch.rand(2, 3, 32, 32)
    coords = torch.zeros(4, 3, dtype=torch.long)
    with pytest.raises(ValueError, match=r"coords are torch.int32 \(4, 3\)"):
        kernels.gather_patches(frames, coords.int(), patch=16, halo=8, dtype=torch.float32)
    with pytest.raises(ValueError, match=r"frames are torch.uint8"):
        kernels.gather_patches(frames.byte(), coords, patch=16, halo=8, dtype=torch.float32)
    with pytest.raises(ValueError, match=r"dtype=torch.int32"):
        kernels.gather_patches(frames, coords, patch=16, halo=8, dtype=torch.int32)


def test_gather_in_the_nets_dtype_is_the_float32_gather_cast() -> None:
    """The torch ways (the CPU's, and CUDA's without Triton) give the dtype asked for: the
    float32 patches cast once, and the Triton check is not asked off CUDA."""
    frames, coords = _frames(2, 48, 64, "contiguous"), _coords(2, 48, 64, 16)
    plain = gather_patches(frames, coords, patch=16, halo=8)
    assert plain.dtype == torch.float32
    half = gather_patches(frames, coords, patch=16, halo=8, dtype=torch.bfloat16)
    assert torch.equal(half, plain.to(torch.bfloat16))
    assert not tokens.triton_gather_works(torch.device("cpu"))


@needs_cuda
@needs_triton
@pytest.mark.parametrize("dtype", DTYPES.values(), ids=list(DTYPES))
def test_cuda_gather_is_torchs_bytes(dtype: torch.dtype) -> None:
    """bikes' window (20 x 816 x 1920 output, x4 of 480 x 204), 17% of its tokens and every
    border token of its first frame."""
    dev = torch.device("cuda")
    assert tokens.triton_gather_works(dev)
    frames = _frames(20, 816, 1920, "contiguous").to(dev)
    coords = _coords(20, 816, 1920, 16)[::3].to(dev)
    want = tokens._gather_flat(frames, coords, patch=16, halo=8).reshape(len(coords), -1)
    got = gather_patches(frames, coords, patch=16, halo=8, dtype=dtype)
    assert torch.equal(got, want.to(dtype))


@needs_cuda
@needs_triton
def test_cuda_window_is_the_same_with_the_triton_gather(monkeypatch) -> None:
    """A skipping window of the shipped model through the torch runner: the same bytes with
    the Triton gather as with torch's gather and cast."""
    from vs_skipsr.backends import TorchBackend
    from vs_skipsr.models.weights import load_sr
    from vs_skipsr.pipeline import upscale_window

    runner = TorchBackend(device="cuda", dtype="bf16", cuda_graphs=False).load(
        sr=load_sr(), mask=None
    )
    assert runner.base_dtype == torch.bfloat16
    lr = torch.rand(5, 3, 68, 120, generator=torch.Generator().manual_seed(4)).cuda()

    def window() -> torch.Tensor:
        out = upscale_window(lr, scale=4, runner=runner, skip_ratio=0.6, seed=1)
        return out.frames.clone()

    fused = window()
    monkeypatch.setattr(tokens, "triton_gather_works", lambda device: False)
    assert torch.equal(fused, window())
