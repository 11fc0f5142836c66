"""The Triton window attention against the exact attention over the same partitions.

On the CPU the kernel runs under Triton's interpreter in a subprocess (``TRITON_INTERPRET``
is read when the kernel is defined): partitions of real keep sets (clustered, like textured
regions) with bucket padding, windows longer than a query tile and a key block, q, k, v as
the strided views the net hands over. On CUDA it is compared with torch's flash varlen
attention (what it replaces) in bf16, replayed in a CUDA graph for two keep sets, and the
runner's automatic choice is checked.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import run_interpreted

from vs_skipsr.backends import TorchBackend
from vs_skipsr.benchmark import captured, clustered_keep
from vs_skipsr.models import random_sr
from vs_skipsr.models.attention import (
    padded_window_attention,
    tiled_window_attention,
    triton_attention_unavailable,
    varlen_available,
    varlen_window_attention,
)
from vs_skipsr.models.sr import apply_rope, rope_tables
from vs_skipsr.optional import optional_module
from vs_skipsr.tokens import Partition, padded_tokens

ROOT = Path(__file__).resolve().parent.parent
kernels = optional_module("vs_skipsr.models.attention_triton")
needs_triton = pytest.mark.skipif(kernels is None, reason="needs triton")
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def _triton_version() -> tuple[int, int]:
    major, minor = kernels.triton.__version__.split(".")[:2]
    return int(major), int(minor)


# Triton 3.6's interpreter cannot take a loop bound loaded at run time (it fails with "only
# 0-dimensional arrays can be converted to Python scalars"; 3.7 and 3.8 run it; the compiled
# kernel is not affected: the CUDA tests below ran on 3.6)
needs_interpreter_loops = pytest.mark.skipif(
    kernels is None or _triton_version() < (3, 7), reason="needs Triton >= 3.7's interpreter"
)

# grid (t, y, x), window, shift, kept fractions; the second has windows of 160 tokens: more
# than a 32-query tile and a 64-key block
CASES = [
    ((5, 6, 9), (5, 4, 4), (2, 2, 2), (0.05, 0.3, 1.0)),
    ((5, 9, 12), (5, 8, 4), (2, 4, 2), (0.2, 1.0)),
]


def _problem(grid, window, shift, frac, *, heads: int, dim: int, pad: int, device="cpu"):
    """q, k, v as views of one [K, 3, H, D] tensor (as the net's qkv), and the partitions."""
    index = torch.nonzero(clustered_keep(grid, frac).reshape(-1)).squeeze(1).to(device)
    _, _, parts = padded_tokens(
        index, bucket=index.numel() + pad, grid=grid, window=window, shift=shift, static_len=True
    )
    g = torch.Generator().manual_seed(int(frac * 100))
    qkv = torch.randn(index.numel() + pad, 3, heads, dim, generator=g).to(device)
    return index.numel(), qkv, parts


_INTERPRETED = """
import sys, torch, numpy as np
sys.path.insert(0, "tests")  # this module and its conftest (the child runs in the repo root)
from test_attention_triton import CASES, _problem, _rope
from vs_skipsr.models.attention_triton import tiled_window_attention
from vs_skipsr.models.rope_triton import rotate_qk
out = {}
for c, (grid, window, shift, fracs) in enumerate(CASES):
    for frac in fracs:
        for dtype in (torch.float32, torch.float16):
            for bm, bn in ((16, 16), (32, 64), (64, 32)):
                _, qkv, parts = _problem(grid, window, shift, frac, heads=2, dim=16, pad=5)
                qkv = qkv.to(dtype)
                for i, p in enumerate(parts):
                    o = tiled_window_attention(*qkv.unbind(1), p, block_m=bm, block_n=bn)
                    out[f"{c}_{frac}_{str(dtype)[6:]}_{bm}_{bn}_{i}"] = o.float().numpy()
                    if (bm, bn) == (32, 64):  # q and k rotated by the rotary kernel first
                        q, k = rotate_qk(qkv[:, 0], qkv[:, 1], _rope(qkv.shape[0], 16))
                        o = tiled_window_attention(q, k, qkv[:, 2], p, block_m=bm, block_n=bn)
                        out[f"{c}_{frac}_{str(dtype)[6:]}_rope_{i}"] = o.float().numpy()
np.savez(sys.argv[1], **out)
"""


def _rope(rows: int, dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Rotary tables of random (t, y, x) coordinates, one per row: the kernel must read each
    row's own."""
    coords = torch.randint(0, 40, (rows, 3), generator=torch.Generator().manual_seed(rows))
    return rope_tables(coords, dim, 64.0)


@needs_triton
@needs_interpreter_loops
def test_interpreted_kernel_is_the_exact_attention(tmp_path: Path) -> None:
    run_interpreted(_INTERPRETED, str(tmp_path / "out.npz"), timeout=600)
    got = np.load(tmp_path / "out.npz")
    checked = 0
    for c, (grid, window, shift, fracs) in enumerate(CASES):
        for frac in fracs:
            kept, qkv, parts = _problem(grid, window, shift, frac, heads=2, dim=16, pad=5)
            for dtype, tol in (("float32", 1e-5), ("float16", 4e-3)):
                x = qkv.to(getattr(torch, dtype)).float()
                for i, p in enumerate(parts):
                    want = padded_window_attention(*x.unbind(1), p.part).numpy()
                    for bm, bn in ((16, 16), (32, 64), (64, 32)):
                        o = got[f"{c}_{frac}_{dtype}_{bm}_{bn}_{i}"]
                        np.testing.assert_allclose(o[:kept], want[:kept], atol=tol, rtol=0)
                        assert not o[kept:].any(), "bucket padding rows must come out zero"
                        checked += 1
                    # rotated by the rotary kernel: the exact attention of apply_rope's q and k
                    # (it rounds the rotation to the input's precision, as the kernel does)
                    rope = _rope(qkv.shape[0], 16)
                    q, k, v = qkv.to(getattr(torch, dtype)).unbind(1)
                    q, k = (apply_rope(y, *rope).float() for y in (q, k))
                    want = padded_window_attention(q, k, v.float(), p.part).numpy()
                    o = got[f"{c}_{frac}_{dtype}_rope_{i}"]
                    np.testing.assert_allclose(o[:kept], want[:kept], atol=tol, rtol=0)
                    assert not o[kept:].any()
                    checked += 1
    assert checked == 2 * 5 * 2 * 4


@needs_triton
def test_tile_starts_count_each_windows_query_tiles() -> None:
    cu = torch.tensor([0, 0, 5, 37, 37, 100], dtype=torch.int32)  # lengths 0 5 32 0 63
    starts = kernels.tile_starts(cu, block_m=32)
    assert starts.tolist() == [0, 0, 1, 2, 2, 4]
    assert starts.dtype == torch.int32
    assert kernels.tile_starts(cu, block_m=16).tolist() == [0, 0, 1, 3, 3, 7]
    assert kernels.blocks_for(32) == (32, 32, 2) and kernels.blocks_for(128) == (64, 32, 4)


@needs_triton
def test_kernel_refuses_what_it_cannot_tile() -> None:
    _, qkv, parts = _problem((5, 6, 9), (5, 4, 4), (2, 2, 2), 0.3, heads=2, dim=24, pad=0)
    with pytest.raises(ValueError, match="head size 24"):
        kernels.tiled_window_attention(*qkv.unbind(1), parts[0])
    _, qkv, parts = _problem((5, 6, 9), (5, 4, 4), (2, 2, 2), 0.3, heads=2, dim=16, pad=0)
    q = qkv[:, 0].transpose(1, 2).contiguous().transpose(1, 2)  # [K, H, D] with D strided
    with pytest.raises(ValueError, match="q's last dimension"):
        kernels.tiled_window_attention(q, qkv[:, 1], qkv[:, 2], parts[0])

    rotary = optional_module("vs_skipsr.models.rope_triton")
    n = qkv.shape[0]
    for rope, needle in (
        (_rope(n + 1, 16), rf"\({n + 1}, 1, 8\) and .* for {n} rows of heads of 16"),
        (_rope(n, 32), rf"\({n}, 1, 16\) .* expected \[{n}, 1, 8\]"),
        (tuple(t.half() for t in _rope(n, 16)), "rotary tables of torch.float16"),
    ):
        with pytest.raises(ValueError, match=needle):
            rotary.rotate_qk(qkv[:, 0], qkv[:, 1], rope)
    with pytest.raises(ValueError, match="head size 15 is odd"):
        rotary.rotate_qk(qkv[:, 0, :, :15], qkv[:, 1, :, :15], _rope(n, 16))


def test_triton_attention_says_why_not_here() -> None:
    assert "not 'cpu'" in triton_attention_unavailable(
        torch.device("cpu"), torch.bfloat16, head_dim=32
    )
    if torch.cuda.is_available():
        cuda = torch.device("cuda")
        assert "fp32" in triton_attention_unavailable(cuda, torch.float32, head_dim=32)
        if kernels is not None:
            assert "48" in triton_attention_unavailable(cuda, torch.bfloat16, head_dim=48)
    with pytest.raises(ValueError, match="attention='triton': it runs on CUDA"):
        TorchBackend(device="cpu", attention="triton").load(sr=random_sr("tiny"), mask=None)


def test_cpu_runner_keeps_its_attention_forms() -> None:
    """The automatic choice on the CPU is still the grouped form, in any precision."""
    net = random_sr("tiny")
    for dtype in ("fp32", "bf16"):
        runner = TorchBackend(device="cpu", dtype=dtype).load(sr=net, mask=None)
        assert runner.attention == "grouped" and not runner.packed
    runner = TorchBackend(device="cpu", attention="padded").load(sr=net, mask=None)
    assert runner.attention == "padded" and not runner.use_grouped


@needs_cuda
@needs_triton
@pytest.mark.skipif(
    not torch.cuda.is_available() or not varlen_available(torch.device("cuda")),
    reason="needs varlen",
)
def test_cuda_kernel_is_flash_varlen_to_rounding() -> None:
    dev = torch.device("cuda")
    shapes = [  # the shipped model's heads on bikes' grid; the SeedVR2-3B shape's on 720p
        ((20, 51, 120), (5, 8, 8), (2, 4, 4), (0.06, 0.17, 1.0), 6, 32),
        ((21, 45, 80), (4, 8, 8), (2, 4, 4), (0.1, 1.0), 20, 128),
    ]
    for grid, window, shift, fracs, heads, dim in shapes:
        for frac in fracs:
            kept, qkv, parts = _problem(
                grid, window, shift, frac, heads=heads, dim=dim, pad=9, device=dev
            )
            qkv = qkv.to(torch.bfloat16)
            for p in parts:
                got = tiled_window_attention(*qkv.unbind(1), p)
                want = varlen_window_attention(*qkv.unbind(1), p)
                exact = padded_window_attention(*qkv.float().unbind(1), p.part)
                # as close to the exact attention as torch's kernel is, within bf16 rounding
                err = (got[:kept].float() - exact[:kept]).abs().max().item()
                ref = (want[:kept].float() - exact[:kept]).abs().max().item()
                assert err <= max(2 * ref, 1e-2), (frac, err, ref)
                assert not got[kept:].any()


@needs_cuda
@needs_triton
def test_cuda_rotary_kernel_rotates_as_apply_rope_does() -> None:
    """q and k rotated by the rotary kernel give the attention of apply_rope's rotated
    copies (the net's lean form) to within a rounding of the rotation: the shipped model's
    heads, and the SeedVR2-3B shape's (one token a program)."""
    dev = torch.device("cuda")
    for grid, window, heads, dim in (
        ((20, 51, 120), (5, 8, 8), 6, 32),
        ((21, 45, 80), (4, 8, 8), 20, 128),
    ):
        kept, qkv, parts = _problem(
            grid, window, (2, 4, 4), 0.17, heads=heads, dim=dim, pad=9, device=dev
        )
        qkv = qkv.half()
        rope = tuple(t.to(dev) for t in _rope(qkv.shape[0], dim))
        with torch.inference_mode():
            q, k = (apply_rope(x, *rope) for x in (qkv[:, 0], qkv[:, 1]))
            for p in parts:
                got = tiled_window_attention(*qkv.unbind(1), p, rope=rope)
                want = tiled_window_attention(q, k, qkv[:, 2], p)
                assert (got[:kept] - want[:kept]).abs().max().item() <= 1e-2, (heads, dim)
                assert not got[kept:].any()


@needs_cuda
@needs_triton
def test_cuda_kernel_replays_in_a_graph_for_any_keep_set() -> None:
    """One graph per bucket serves every keep set of that size: the grid is sized by the
    bucket, and the tile table is computed inside the graph from the partition's tensors."""
    dev = torch.device("cuda")
    grid, window, shift = (10, 17, 30), (5, 8, 8), (2, 4, 4)
    problems = []
    for seed in (1, 2):
        index = torch.nonzero(clustered_keep(grid, 0.2, seed=seed).reshape(-1)).squeeze(1)
        problems.append(index[:900].to(dev))  # the same count: one bucket
    _, _, parts = padded_tokens(
        problems[0], bucket=1000, grid=grid, window=window, shift=shift, static_len=True
    )
    static = [(p.order.clone(), p.cu_seqlens.clone()) for p in parts]
    qkv = torch.randn(1000, 3, 6, 32, device=dev, dtype=torch.bfloat16)

    def run():
        return [
            tiled_window_attention(*qkv.unbind(1), Partition(order=o, cu_seqlens=c, max_len=320))
            for o, c in static
        ]

    graph, outs = captured(run)
    for index in problems:
        _, _, fresh = padded_tokens(
            index, bucket=1000, grid=grid, window=window, shift=shift, static_len=True
        )
        for (o, c), p in zip(static, fresh, strict=True):
            o.copy_(p.order)
            c.copy_(p.cu_seqlens)
        graph.replay()
        for out, p in zip(outs, fresh, strict=True):
            want = tiled_window_attention(*qkv.unbind(1), p)
            assert torch.equal(out, want)


@needs_cuda
@needs_triton
def test_cuda_runner_picks_triton_and_matches_varlen() -> None:
    net = random_sr("default", seed=3)
    runners = {
        a: TorchBackend(device="cuda", dtype="bf16", attention=a).load(sr=net, mask=None)
        for a in ("auto", "varlen")
    }
    assert runners["auto"].attention == "triton"
    assert runners["varlen"].attention == "varlen"
    grid = (5, 17, 30)
    index = torch.nonzero(clustered_keep(grid, 0.3).reshape(-1)).squeeze(1).cuda()
    cfg = net.config
    _, coords, parts = padded_tokens(
        index,
        bucket=index.numel() + 4,
        grid=grid,
        window=cfg.window,
        shift=cfg.shift,
        static_len=True,
    )
    g = torch.Generator().manual_seed(0)
    base = torch.rand(coords.shape[0], cfg.base_dim, generator=g).cuda()
    state = (torch.randn(coords.shape[0], cfg.token_dim, generator=g) * cfg.noise_std).cuda()
    t = torch.ones(1, device="cuda")
    outs = {a: r.sr(base, state, coords, t, parts).float() for a, r in runners.items()}
    k = index.numel()
    diff = (outs["auto"][:k] - outs["varlen"][:k]).abs().max().item()
    assert diff < 0.05 * outs["varlen"][:k].abs().max().item(), diff


def test_info_names_the_attention_and_norm_kernels() -> None:
    """``python -m vs_skipsr info`` says which attention, residual norms and head passes the chosen
    backend runs: here the runner skipsr() would build, so on a GPU the Triton kernels' own
    checks decide them."""
    done = subprocess.run(
        [sys.executable, "-m", "vs_skipsr", "info"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    line = next(x for x in done.stdout.splitlines() if x.startswith("window attention there"))
    norms = next(x for x in done.stdout.splitlines() if x.startswith("residual norms there"))
    head = next(x for x in done.stdout.splitlines() if x.startswith("conv head's passes"))
    gelu = next(x for x in done.stdout.splitlines() if x.startswith("MLP's GELU there"))
    gather = next(x for x in done.stdout.splitlines() if x.startswith("kept tokens' gather"))
    if torch.cuda.is_available():  # whatever the backend: the pipeline gathers
        triton_gather = "kept tokens' gather there: triton (one kernel, in the net's dtype)"
        assert gather in (triton_gather, "kept tokens' gather there: torch's"), gather
    else:
        assert gather == "kept tokens' gather there: torch's", gather
    colour = next(x for x in done.stdout.splitlines() if x.startswith("device colour conversion"))
    triton_colour = "device colour conversion there: triton (three kernels)"
    torch_colour = "device colour conversion there: torch ops"
    assert colour in (
        (triton_colour, torch_colour) if torch.cuda.is_available() else (torch_colour,)
    )
    if "TensorRTBackend" in done.stdout:  # a GPU that TensorRT(-RTX) runs on
        assert "the exported net's" in line, line
        assert "the exported net's" in norms, norms
        assert "the exported net's" in head, head
        assert "the exported net's" in gelu, gelu
    elif torch.cuda.is_available():
        assert "triton (" in line or "varlen (Triton: " in line, line
        assert norms.endswith(("triton (one kernel a residual update and norm)", "torch's")), norms
        assert head.endswith(
            ("triton (a conv's bias + GELU, the cells, the velocity)", "torch's")
        ), head
        assert gelu.endswith(("cuBLASLt (its first matmul's epilogue)", "torch's")), gelu
    else:
        assert line.endswith("grouped (the CPU's form: windows grouped by length)"), line
        assert norms == "residual norms there: torch's", norms
        assert head == "conv head's passes there: torch's", head
        assert gelu == "MLP's GELU there: torch's", gelu
