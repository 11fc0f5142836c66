"""The blocks' MLP with its GELU as the first matmul's cuBLASLt epilogue (``sr.mlp``,
``fused_mlp``).

On the CPU ``torch._addmm_activation`` takes the exact GELU, not the net's tanh form, so the
fused form never runs there; these tests use that to show the load-time check's float32
tolerance tells the two apart (an epilogue with the exact GELU would be refused), and that the
flag reaches every block through the net's lean forward. On CUDA the runner takes the
epilogue where the check passes, and the net's numbers stay those of torch's MLP to bf16
rounding, eager and replayed in a graph.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from vs_skipsr.models import random_sr
from vs_skipsr.models.sr import fused_mlp_works, mlp

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def _layers(channels: int, seed: int) -> nn.Sequential:
    gen = torch.Generator().manual_seed(seed)
    layers = nn.Sequential(
        nn.Linear(channels, 2 * channels),
        nn.GELU(approximate="tanh"),
        nn.Linear(2 * channels, channels),
    )
    with torch.no_grad():
        for p in layers.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) / channels**0.5)
    return layers


def test_check_tells_the_exact_gelu_from_the_nets() -> None:
    """The CPU's fused form (the exact GELU) against the net's MLP at the check's values:
    close (the same layers, bias and all) but outside the check's float32 tolerance."""
    layers = _layers(192, seed=0)
    h = 2 * torch.randn(37, 192, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        exact, tanh = mlp(layers, h, fused=True), mlp(layers, h)
    assert torch.equal(tanh, layers(h))
    assert torch.allclose(exact, tanh, rtol=0, atol=5e-3)
    assert not torch.allclose(exact, tanh, rtol=1e-4, atol=1e-5)
    assert not fused_mlp_works(torch.device("cpu"), torch.bfloat16, channels=192)


def test_flag_reaches_every_block() -> None:
    """The shipped shape's velocity with ``fused_mlp`` (here the exact GELU) differs from the
    plain one by a GELU form's worth, in every block's share: each block alone changed."""
    from test_core import _net_inputs

    net = random_sr("default", seed=5, std=0.1)
    base, state, coords, attends = _net_inputs(net, (net.config.window[0], 3, 4), seed=3)
    t = torch.tensor([1.0])
    calls: list[int] = []
    for i, blk in enumerate(net.blocks):  # which blocks ran their MLP as the Sequential
        blk.mlp.register_forward_hook(lambda *a, i=i: calls.append(i))
    with torch.inference_mode():
        fused = net.forward_attend(base, state, coords, t, attends, fused_mlp=True)
        assert not calls  # every block took the fused form
        plain = net.forward_attend(base, state, coords, t, attends)
    assert calls == list(range(len(net.blocks)))
    assert not torch.equal(plain, fused)
    assert (plain - fused).abs().max() < 0.01 * plain.abs().max()


@needs_cuda
def test_cuda_runner_takes_the_epilogue_and_keeps_the_nets_numbers() -> None:
    from vs_skipsr.backends import TorchBackend
    from vs_skipsr.benchmark import sr_inputs

    assert fused_mlp_works(torch.device("cuda"), torch.bfloat16, channels=192)
    net = random_sr("default", seed=3, std=0.1)
    exact = TorchBackend(device="cuda", dtype="fp32").load(sr=net, mask=None)
    fused = TorchBackend(device="cuda", dtype="bf16").load(sr=net, mask=None)
    plain = TorchBackend(device="cuda", dtype="bf16").load(sr=net, mask=None)
    graphed = TorchBackend(device="cuda", dtype="bf16", cuda_graphs=True).load(sr=net, mask=None)
    assert fused.fused_mlp and graphed.fused_mlp and not exact.fused_mlp
    plain.fused_mlp = False
    k, call = sr_inputs(
        fused, grid=(5, 17, 30), fraction=0.3, bucketed=True, generator=torch.Generator()
    )
    state, t = call[1][:k], call[3]
    got, want, ref = (state / t - r.sr(*call)[:k] for r in (fused, plain, exact))
    assert not torch.equal(got, want)  # the epilogue ran: it rounds the GELU once
    err_fused, err_plain = ((v - ref).pow(2).mean().sqrt().item() for v in (got, want))
    assert err_fused < 1.25 * err_plain, (err_fused, err_plain)
    assert torch.equal(graphed.sr(*call)[:k], fused.sr(*call)[:k])
