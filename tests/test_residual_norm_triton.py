"""The fused residual update and layer norm against torch's ``addcmul`` and ``layer_norm``.

On the CPU the kernel runs under Triton's interpreter in a subprocess (``TRITON_INTERPRET``
is read when the kernel is defined), which saves its outputs; this process compares them with
torch's ops on the same inputs: widths of one program's block, of the shipped model's 192 in
a block of 256, and of 2560; row counts with a partial last program and none at all; y as a
column slice of a wider tensor; gate, weight and bias as [1, C] and [C], in x's dtype and in
float32. The tolerances are checked to be tight enough: outputs of plausible wrong kernels (no
gate, an unbiased variance, the norm of the unrounded update) must fail them. On CUDA the
kernel is compared with torch's kernels at the shipped model's size and replayed in a graph.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from conftest import run_interpreted

from vs_skipsr.optional import optional_module

kernels = optional_module("vs_skipsr.models.residual_norm_triton")
needs_triton = pytest.mark.skipif(kernels is None, reason="needs triton")
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

EPS = 1e-6  # the blocks' norms'
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}

# (C, K): one program's worth of rows is 64 at C = 32, 8 at C = 192 (a block of 256) and 1
# at C = 2560 (a block of 4096); 300 and 37 end in a partial program, 0 launches nothing
SIZES = [(32, 300), (32, 0), (192, 37), (192, 1), (2560, 5)]
# how gate, weight and bias come: ([1, C] or [C], in x's dtype or float32) for each
LAYOUTS = {
    "net": (("row", "x"), ("vec", "x"), ("row", "x")),  # as Block.forward hands them over
    "fp32": (("vec", "f32"), ("row", "f32"), ("strided", "f32")),
}


def _case(c: int, k: int, dtype: str, layout: str) -> dict[str, torch.Tensor]:
    """Inputs like a residual stream's: rows of unit spread around offsets of up to ~20 (so
    rounding the update to half precision moves its norm visibly), y a column slice of a
    [K, 3C] tensor (a view with a row stride of 3C), gates around +-0.5."""
    g = torch.Generator().manual_seed(1000 * c + k + len(dtype) + len(layout))
    dt = DTYPES[dtype]
    x = torch.randn(k, c, generator=g) + 8 * torch.randn(k, 1, generator=g)
    wide = torch.randn(k, 3 * c, generator=g).to(dt)
    out = {"x": x.to(dt), "y": wide[:, c : 2 * c]}
    values = {
        "gate": 0.5 * torch.randn(c, generator=g),
        "weight": 1 + 0.3 * torch.randn(c, generator=g),
        "bias": 0.2 * torch.randn(c, generator=g),
    }
    for (name, v), (shape, kind) in zip(values.items(), LAYOUTS[layout], strict=True):
        v = v.to(dt if kind == "x" else torch.float32)
        if shape == "row":
            v = v.reshape(1, c)
        elif shape == "strided":  # every other value of a longer vector
            v = torch.stack([v, torch.zeros_like(v)], dim=1).reshape(2 * c)[::2]
        out[name] = v
    return out


def _cases() -> list[tuple[int, int, str, str]]:
    return [
        (c, k, dtype, layout)
        for c, k in SIZES
        for dtype in DTYPES
        for layout in LAYOUTS
        if layout == "net" or k > 1  # the float32 parameters on the larger row counts
    ]


def _name(c: int, k: int, dtype: str, layout: str) -> str:
    return f"{c}_{k}_{dtype}_{layout}"


def _reference(inp: dict[str, torch.Tensor]) -> tuple[torch.Tensor, ...]:
    """torch's ops on the same inputs: the update rounded to x's dtype and its layer norm
    (also the float32 update unrounded, for the wrong kernel that normalises it)."""
    x, y = inp["x"], inp["y"]
    c = x.shape[1]
    update = torch.addcmul(x, inp["gate"].reshape(1, c), y)  # float32 with float32 gates
    x_new = update.to(x.dtype)
    weight, bias = inp["weight"].reshape(c), inp["bias"].reshape(c)
    normed = F.layer_norm(x_new, (c,), weight, bias, EPS).to(x.dtype)
    exact = torch.addcmul(x.float(), inp["gate"].float().reshape(1, c), y.float())
    return x_new, normed, exact


def _layer_norm(v: torch.Tensor, inp: dict[str, torch.Tensor], *, unbiased: bool = False):
    """The layer norm in float64, the variance biased (torch's) or not (a wrong kernel)."""
    v = v.double()
    c = v.shape[1]
    var = v.var(dim=1, keepdim=True, unbiased=unbiased)
    out = (v - v.mean(dim=1, keepdim=True)) / torch.sqrt(var + EPS)
    out = out * inp["weight"].double().reshape(c) + inp["bias"].double().reshape(c)
    return out.to(inp["x"].dtype)


def _interpreted_update(inp: dict[str, torch.Tensor]) -> torch.Tensor:
    """The update as Triton's interpreter (3.6, 3.8) computes the kernel's ``tl.fma``: the float32
    product rounded before the sum (``x * y + z`` in numpy), then float16 rounded to the
    nearest and bfloat16 truncated (its fp32-to-bf16 cast ignores the rounding mode)."""
    x = inp["x"]
    gate = inp["gate"].float().reshape(1, x.shape[1])
    v = x.float() + gate * inp["y"].float()  # two torch ops: the product rounded first
    if x.dtype == torch.bfloat16:
        return (v.view(torch.int32) & -65536).view(torch.float32).to(torch.bfloat16)
    return v.to(x.dtype)


def ulps(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """How many representable values of their dtype lie between a and b, elementwise."""
    bits = torch.int32 if a.dtype == torch.float32 else torch.int16
    top = 1 << (8 * a.element_size() - 1)

    def line(t: torch.Tensor) -> torch.Tensor:  # sign and magnitude onto one integer line
        i = t.contiguous().view(bits).long()
        return torch.where(i < 0, -(i & (top - 1)), i)

    return (line(a) - line(b)).abs()


# The normalised output's tolerance, relative to the reference plus a small absolute part.
# Both sides compute it in float32 from the same rounded update, in another order of sums:
# they differ by a few float32 ulps (~1e-6 of the row's spread; measured up to 6e-6 at
# C = 2560 in float32), which moves the rounded result by at most one ulp of its dtype:
# 2^-10 of the value in float16, 2^-7 in bfloat16. The interpreter truncates to bfloat16
# (Triton 3.6 and 3.8: its fp32-to-bf16 cast ignores the rounding mode) where torch rounds to the
# nearest: up to 1.5 ulps there, allowed 2^-6. The absolute part covers results near zero,
# whose float32 errors stem from the row's scale, not their own. Tight enough to fail an
# unbiased variance (a relative 1 - sqrt((C-1)/C): 1.6e-2 at C = 32, 2.6e-3 at 192, 2e-4 at
# 2560) in float32 at every width and float16 up to 192, and the norm of the unrounded
# update in both half precisions (the rows' offsets of ~8 make that rounding 2^-8 of x and
# more: test_wrong_kernels_fail_the_tolerances).
RTOL = {"float32": 1e-5, "float16": 2.0**-10, "bfloat16": 2.0**-7}
RTOL_INTERPRETED_BF16 = 2.0**-6
ATOL = 1e-5


def close(got: torch.Tensor, want: torch.Tensor, dtype: str, *, interpreted: bool) -> bool:
    rtol = RTOL_INTERPRETED_BF16 if interpreted and dtype == "bfloat16" else RTOL[dtype]
    return torch.allclose(got.double(), want.double(), rtol=rtol, atol=ATOL)


_INTERPRETED = """
import sys, torch
sys.path.insert(0, "tests")  # this module and its conftest (the child runs in the repo root)
from test_residual_norm_triton import EPS, _case, _cases, _name
from vs_skipsr.models.residual_norm_triton import residual_norm
out = {}
for case in _cases():
    inp = _case(*case)
    x_new, normed = residual_norm(**inp, eps=EPS)
    out[_name(*case)] = (x_new, normed)
torch.save(out, sys.argv[1])
"""


@pytest.fixture(scope="module")
def interpreted(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[torch.Tensor, ...]]:
    """The kernel's outputs for every case, run once under the interpreter."""
    path = tmp_path_factory.mktemp("residual_norm") / "out.pt"
    run_interpreted(_INTERPRETED, str(path), timeout=300)
    return torch.load(path)


@needs_triton
def test_interpreted_kernel_is_torchs_addcmul_and_layer_norm(interpreted) -> None:
    assert len(interpreted) == len(_cases())
    for case in _cases():
        c, k, dtype, layout = case
        inp = _case(*case)
        x_new, normed = interpreted[_name(*case)]
        want_x, want_n, _ = _reference(inp)
        assert x_new.shape == normed.shape == (k, c), case
        assert x_new.dtype == normed.dtype == DTYPES[dtype], case
        assert x_new.is_contiguous() and normed.is_contiguous()
        if k == 0:
            continue
        # the update: bit for bit what the interpreter's arithmetic gives (its tl.fma rounds
        # the product; it truncates to bfloat16), and so torch's fma exactly in float16 with
        # a float16 gate (the product of two halves fits a float32: rounding it changes
        # nothing) and to an ulp in bfloat16 with a bfloat16 gate. Compiled, the update is
        # torch's to the bit (the CUDA test below)
        assert torch.equal(x_new, _interpreted_update(inp)), case
        if layout == "net" and dtype == "float16":
            assert torch.equal(x_new, want_x), (case, int(ulps(x_new, want_x).max()))
        if layout == "net" and dtype == "bfloat16":
            assert int(ulps(x_new, want_x).max()) <= 1, case
        # the norm of the rounded update; in bfloat16 of the interpreter's own rounded update
        # (torch's may be an ulp away, and the norm's inputs must be the same to compare it)
        if dtype == "bfloat16":
            want_n = F.layer_norm(
                x_new, (c,), inp["weight"].reshape(c), inp["bias"].reshape(c), EPS
            ).to(x_new.dtype)
        assert close(normed, want_n, dtype, interpreted=True), (
            case,
            float((normed.double() - want_n.double()).abs().max()),
        )


@needs_triton
def test_wrong_kernels_fail_the_tolerances(interpreted) -> None:
    """What the tolerances above would catch: the kernel's outputs against those of kernels
    that lost the gate, took an unbiased variance, or normalised the update before rounding
    it must fail them (where the dtype can tell the difference at all)."""
    caught = {"no gate": 0, "unbiased": 0, "unrounded": 0}
    for case in _cases():
        c, k, dtype, _ = case
        if k == 0:
            continue
        inp = _case(*case)
        x_new, normed = interpreted[_name(*case)]
        want_x, _, exact = _reference(inp)
        no_gate = (inp["x"].float() + inp["y"].float()).to(x_new.dtype)
        assert int(ulps(x_new, no_gate).max()) > 1, case
        assert not close(normed, _layer_norm(no_gate, inp), dtype, interpreted=True), case
        caught["no gate"] += 1
        unbiased = _layer_norm(want_x, inp, unbiased=True)
        if dtype == "float32" or (dtype == "float16" and c <= 192):
            assert not close(normed, unbiased, dtype, interpreted=True), case
            caught["unbiased"] += 1
        if dtype != "float32":
            unrounded = _layer_norm(exact, inp)
            assert not close(normed, unrounded, dtype, interpreted=True), case
            caught["unrounded"] += 1
    assert caught == {"no gate": 21, "unbiased": 12, "unrounded": 14}, caught


@needs_triton
def test_tolerances_pass_torchs_own_variants() -> None:
    """The other side: torch's half-precision layer norm against the float64 norm of the same
    rounded update passes them (so they are not tighter than torch's own rounding)."""
    for case in _cases():
        _, k, dtype, layout = case
        if k == 0 or layout != "net" or dtype == "float32":
            continue
        inp = _case(*case)
        want_x, want_n, _ = _reference(inp)
        assert close(want_n, _layer_norm(want_x, inp), dtype, interpreted=False), case


@needs_triton
def test_empty_rows_need_no_launch() -> None:
    """K = 0 returns two empty tensors without a launch (on plain CPU tensors, outside the
    interpreter, a launch would fail)."""
    for c in (192, 7):
        x = torch.zeros(0, c, dtype=torch.float16)
        gate = torch.zeros(1, c, dtype=torch.float16)
        x_new, normed = kernels.residual_norm(x, x, gate, gate, gate, eps=EPS)
        assert x_new.shape == normed.shape == (0, c) and x_new.dtype == torch.float16


@needs_triton
def test_blocks_hold_whole_rows_of_a_few_kilobytes() -> None:
    assert kernels.blocks_for(192) == (256, 8, 4)
    assert kernels.blocks_for(32) == (32, 64, 4)
    assert kernels.blocks_for(2560) == (4096, 1, 4)
    assert kernels.blocks_for(8192) == (8192, 1, 8)
    for c, _ in SIZES:
        _, rows, _ = kernels.blocks_for(c)
        assert rows & (rows - 1) == 0
    assert any(k % kernels.blocks_for(c)[1] for c, k in SIZES)  # a partial last program


@needs_triton
def test_bad_inputs_are_named() -> None:
    c = 192
    x = torch.zeros(4, c, dtype=torch.float16)
    v = torch.zeros(c, dtype=torch.float16)
    fn = kernels.residual_norm
    with pytest.raises(ValueError, match=r"y has shape \(4, 96\), x \(4, 192\)"):
        fn(x, x[:, :96], v, v, v, eps=EPS)
    with pytest.raises(ValueError, match=r"y's last dimension is not contiguous"):
        fn(x, torch.zeros(4, 2 * c, dtype=torch.float16)[:, ::2], v, v, v, eps=EPS)
    with pytest.raises(ValueError, match=r"x's last dimension is not contiguous"):
        fn(torch.zeros(c, 4, dtype=torch.float16).t(), x, v, v, v, eps=EPS)
    with pytest.raises(ValueError, match=r"y is torch.float32, x torch.float16"):
        fn(x, x.float(), v, v, v, eps=EPS)
    with pytest.raises(ValueError, match=r"gate has shape \(2, 192\), not \[192\] or \[1, 192\]"):
        fn(x, x, torch.zeros(2, c, dtype=torch.float16), v, v, eps=EPS)
    with pytest.raises(ValueError, match=r"bias has shape \(191,\)"):
        fn(x, x, v, v, v[:-1], eps=EPS)
    with pytest.raises(ValueError, match=r"weight is torch.float64, not x's torch.float16"):
        fn(x, x, v, v.double(), v, eps=EPS)
    with pytest.raises(ValueError, match=r"x has shape \(4, 1, 192\), not \[K, C\]"):
        fn(x[:, None], x, v, v, v, eps=EPS)
    with pytest.raises(ValueError, match=r"x is torch.float64"):
        fn(x.double(), x.double(), v, v, v, eps=EPS)


def _cuda_case(dtype: torch.dtype, *, seed: int) -> dict[str, torch.Tensor]:
    """The shipped model's block at bikes' bucket: [21248, 192], gate, weight and bias as
    Block.forward hands them over ([1, C] chunks of the modulation, in x's dtype)."""
    k, c = 21248, 192
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(k, c, generator=g) + 8 * torch.randn(k, 1, generator=g)
    wide = torch.randn(k, 2 * c, generator=g).to(device="cuda", dtype=dtype)
    mod = (torch.randn(1, 3 * c, generator=g) * 0.5).to(device="cuda", dtype=dtype)
    return {
        "x": x.to(device="cuda", dtype=dtype),
        "y": wide[:, c:],  # a view, as the kernel may be handed one
        "gate": mod[:, :c],
        "weight": 1 + mod[:, c : 2 * c],
        "bias": mod[:, 2 * c :],
    }


@needs_cuda
@needs_triton
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_cuda_kernel_is_torchs_kernels(dtype: torch.dtype) -> None:
    inp = _cuda_case(dtype, seed=0)
    x_new, normed = kernels.residual_norm(**inp, eps=EPS)
    c = inp["x"].shape[1]
    want_x = torch.addcmul(inp["x"], inp["gate"], inp["y"])
    want_n = F.layer_norm(want_x, (c,), inp["weight"].reshape(c), inp["bias"].reshape(c), EPS)
    # exact: the halves' product fits a float32, so fused or not it is rounded once, as torch's
    assert torch.equal(x_new, want_x), int(ulps(x_new, want_x).max())
    name = str(dtype).removeprefix("torch.")
    err = float((normed.double() - want_n.double()).abs().max())
    assert close(normed, want_n, name, interpreted=False), err
    # an ulp at most away from zero (nearer, the float32 sums' errors, from the row's scale,
    # are more ulps of the value: the tolerance's absolute part)
    big = want_n.abs() >= 0.25
    assert int(ulps(normed[big], want_n[big]).max()) <= 1, err


@needs_cuda
@needs_triton
def test_cuda_kernel_replays_in_a_graph() -> None:
    from vs_skipsr.benchmark import captured

    inp = _cuda_case(torch.float16, seed=1)
    graph, (x_new, normed) = captured(lambda: kernels.residual_norm(**inp, eps=EPS))
    fresh = _cuda_case(torch.float16, seed=2)
    for name, t in inp.items():
        t.copy_(fresh[name])
    graph.replay()
    want_x, want_n = kernels.residual_norm(**fresh, eps=EPS)
    torch.cuda.synchronize()
    assert torch.equal(x_new, want_x) and torch.equal(normed, want_n)


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two CUDA devices")
@needs_triton
def test_cuda_kernel_launches_on_its_tensors_device() -> None:
    inp = {n: t.to("cuda:1") for n, t in _cuda_case(torch.float16, seed=3).items()}
    assert inp["y"].is_contiguous()  # .to() made it so; the point here is the device
    with torch.cuda.device(0):
        x_new, normed = kernels.residual_norm(**inp, eps=EPS)
    assert torch.equal(x_new, torch.addcmul(inp["x"], inp["gate"], inp["y"]))
    assert normed.device == inp["x"].device


def test_cpu_runner_keeps_torchs_norms() -> None:
    from vs_skipsr.backends import TorchBackend
    from vs_skipsr.models import random_sr

    runner = TorchBackend(device="cpu", dtype="bf16").load(sr=random_sr("tiny"), mask=None)
    assert not runner.fused_norm


@needs_cuda
@needs_triton
def test_cuda_runner_fuses_the_norms_and_keeps_the_nets_numbers() -> None:
    """On CUDA in half precision the runner takes the kernel (its own check passes), and
    the whole net's velocity stays within rounding of torch's norms."""
    from vs_skipsr.backends import TorchBackend
    from vs_skipsr.benchmark import sr_inputs
    from vs_skipsr.models import random_sr

    net = random_sr("default", seed=3)
    fused = TorchBackend(device="cuda", dtype="fp16").load(sr=net, mask=None)
    plain = TorchBackend(device="cuda", dtype="fp16").load(sr=net, mask=None)
    assert fused.fused_norm
    plain.fused_norm = False
    k, call = sr_inputs(
        fused, grid=(5, 17, 30), fraction=0.3, bucketed=False, generator=torch.Generator()
    )
    got, want = (r.sr(*call)[:k] for r in (fused, plain))
    assert not torch.equal(got, want)  # (the kernel ran: its norm rounds differently)
    assert (got - want).abs().max().item() < 0.02 * want.abs().max().item()
