"""The conv head's Triton passes against torch: bias + GELU against its add and
``F.gelu(approximate="tanh")``, the cells against its strided subtraction, the velocity against
its add and division.

On the CPU the kernels run under Triton's interpreter in a subprocess (``TRITON_INTERPRET``
is read when a kernel is defined), which saves their outputs, and the whole net's lean
velocity with and without the fused passes; this process compares them with torch's ops on
the same inputs. Bias + GELU: the head's 64 channels and 48, channels-last and contiguous,
sizes with a partial last program and none, with and without the added term, in float32 and
both half precisions; its tolerance is checked to be tight enough (a kernel that dropped the
bias or the term, or took the exact GELU for the tanh one, must fail it). Cells and velocity:
the shipped head's sizes and a small one, to the bit. On CUDA the kernels are compared with
torch's kernels at the shipped model's sizes, replayed in a graph, and the runner takes them.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from conftest import interpreter_bf16, run_interpreted

from vs_skipsr.models.sr import ConvHead
from vs_skipsr.optional import optional_module

kernels = optional_module("vs_skipsr.models.head_triton")
# (channels, patch, cell, K): the shipped head's 3 x 32² base patches in 4-pixel cells (three
# programs a row, the last one full), a small head's 3 x 8² (one program, masked), none
CELL_CASES = [(3, 32, 4, 9), (3, 8, 4, 5), (3, 32, 4, 0)]
# (channels, patch, cell, K, t): the shipped head's 3 x 16² residual, t clamped at 1e-3
VELOCITY_CASES = [(3, 16, 4, 7, 0.75), (3, 16, 4, 3, 0.0), (3, 8, 4, 2, 1.0), (3, 16, 4, 0, 1.0)]
needs_triton = pytest.mark.skipif(kernels is None, reason="needs triton")
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
# (C, K, H, layout): 2048 values a program; 37 * 64 * 16 and 25 * 48 * 36 end in a partial
# program, 0 launches nothing; cuDNN may hand back either layout
SIZES = [(64, 37, 4, "last"), (64, 0, 4, "last"), (48, 25, 6, "last"), (64, 2, 1, "last")]
SIZES += [(64, 37, 4, "first"), (48, 3, 6, "first")]
LAYOUTS = {"last": torch.channels_last, "first": torch.contiguous_format}


def _case(
    c: int, k: int, h: int, layout: str, dtype: str, with_add: bool
) -> dict[str, torch.Tensor | None]:
    """A conv output's values (spread ~4, so the GELU's negative tail and its linear part
    both occur), channels-last or contiguous, a term like it and a bias ~1."""
    g = torch.Generator().manual_seed(100 * c + k + h + len(layout) + len(dtype) + with_add)
    dt = DTYPES[dtype]

    def conv_like() -> torch.Tensor:
        x = 4 * torch.randn(k, c, h, h, generator=g)
        return x.to(dt).contiguous(memory_format=LAYOUTS[layout])

    return {
        "x": conv_like(),
        "bias": torch.randn(c, generator=g).to(dt),
        "add": conv_like() if with_add else None,
    }


def _cases() -> list[tuple[int, int, int, str, str, bool]]:
    return [(*size, d, a) for size in SIZES for d in DTYPES for a in (False, True)]


def _name(*case: object) -> str:
    return "_".join(str(v) for v in case)


def _reference(inp: dict[str, torch.Tensor | None], *, approximate: str = "tanh") -> torch.Tensor:
    """torch's ops: (x + add) + bias, each sum rounded to x's dtype, then the GELU."""
    x = inp["x"]
    assert x is not None
    v = x if inp["add"] is None else x + inp["add"]
    return F.gelu(v + inp["bias"][:, None, None], approximate=approximate)  # type: ignore[index]


def _interpreted_reference(inp: dict[str, torch.Tensor | None]) -> torch.Tensor:
    """:func:`_reference` with each rounding to bfloat16 a truncation, as the interpreter
    makes it: in the GELU's tail an input an ulp off moves the output by many ulps, so the
    kernel's arithmetic is compared at the interpreter's roundings."""
    x = inp["x"]
    assert x is not None
    v = x.float()
    if inp["add"] is not None:
        v = interpreter_bf16(v + inp["add"].float()).float()
    v = interpreter_bf16(v + inp["bias"].float()[:, None, None]).float()  # type: ignore[union-attr]
    return interpreter_bf16(F.gelu(v, approximate="tanh"))


def ulps(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """How many representable values of their dtype lie between a and b, elementwise."""
    bits = {torch.float32: torch.int32, torch.float16: torch.int16, torch.bfloat16: torch.int16}
    top = 1 << (8 * a.element_size() - 1)

    def line(t: torch.Tensor) -> torch.Tensor:  # sign and magnitude onto one integer line
        i = t.contiguous().view(bits[t.dtype]).long()
        return torch.where(i < 0, -(i & (top - 1)), i)

    return (line(a) - line(b)).abs()


# The tolerance, one ulp of half precision: the sums are rounded as torch rounds them, the
# GELU in float32 by a formula within a few float32 ulps of torch's, so compiled the result is
# torch's or one ulp off. The interpreter truncates float32 to bfloat16 (Triton 3.6, 3.8), so
# there bfloat16 is compared with torch's arithmetic at those truncations. Values under 1e-3 in magnitude
# (the GELU's far negative tail) are held to an absolute 1e-4 instead. In float32, an
# absolute 2e-6 and a relative 1e-5: torch's 0.5 v (1 + tanh(u)) loses float32 digits where
# 1 + tanh(u) is small (about 1e-7 of v, absolute), which v / (1 + exp(-2u)) does not.
def close(got: torch.Tensor, want: torch.Tensor, dtype: str) -> bool:
    if dtype == "float32":
        return torch.allclose(got, want, rtol=1e-5, atol=2e-6)
    small = want.abs() < 1e-3
    if small.any() and (got[small].float() - want[small].float()).abs().max() > 1e-4:
        return False
    return bool(small.all()) or int(ulps(got[~small], want[~small]).max()) <= 1


_INTERPRETED = """
import sys, torch
sys.path.insert(0, "tests")  # this module and its conftest (the child runs in the repo root)
from test_head_triton import (
    CELL_CASES, DTYPES, VELOCITY_CASES, _case, _cases, _cell_base, _name, _net_velocities,
    _velocity_inputs,
)
from vs_skipsr.models.head_triton import bias_gelu_, cells, head_velocity
out = {}
for case in _cases():
    inp = _case(*case)
    x = inp["x"]
    got = bias_gelu_(x, inp["bias"], add=inp["add"])
    assert got is x  # in place
    out[_name(*case)] = got
for case in CELL_CASES:
    for dtype in DTYPES:
        c, p, cell, _ = case
        out[_name("cells", *case, dtype)] = cells(_cell_base(*case, dtype), channels=c, patch=p, cell=cell)
for case in VELOCITY_CASES:
    c, p, cell, k, t = case
    state, rows = _velocity_inputs(*case)
    out[_name("velocity", *case)] = head_velocity(
        state, rows, torch.tensor([t]), noise_std=0.25, channels=c, patch=p, cell=cell
    )
    for n in (1, 3):
        out[_name("step", n, *case)] = head_velocity(
            state, rows, torch.tensor([t]), noise_std=0.25, channels=c, patch=p, cell=cell,
            euler_steps=n,
        )
out["net"] = _net_velocities()
torch.save(out, sys.argv[1])
"""


def _cell_base(c: int, p: int, cell: int, k: int, dtype: str) -> torch.Tensor:
    """Base patches in [0, 1] as the net gets them, a column slice of a wider tensor (rows
    with a stride)."""
    g = torch.Generator().manual_seed(c + p + cell + k)
    return torch.rand(k, c * p * p + 5, generator=g).to(DTYPES[dtype])[:, 5:]


def _velocity_inputs(c: int, p: int, cell: int, k: int, t: float) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(c + p + cell + k)
    state = torch.randn(k, c * p * p, generator=g)
    rows = torch.randn(k * (p // cell) ** 2, c * cell * cell, generator=g).to(torch.bfloat16)
    return state, rows


def _head(c: int, p: int, cell: int) -> ConvHead:
    """A conv head whose base patch is ``p`` pixels (halo included) and patch ``p`` - 2 cells."""
    return ConvHead(dim=8, patch=p - 2 * cell, channels=c, width=8, cell=cell, halo=cell)


def _net_velocities() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The shipped model's shape (random weights) through its lean base features and one
    velocity in bfloat16 with the fused head and without, and in float32: the head's output
    (times noise_std / t) of each, (fused, torch's, float32)."""
    from test_core import _net_inputs

    from vs_skipsr.models import random_sr

    net = random_sr("default", seed=5, std=0.1)  # the head's term is then a visible share
    cfg = net.config
    base, state, coords, attends = _net_inputs(net, (cfg.window[0], 3, 4), seed=3)
    t = torch.tensor([0.7])
    with torch.inference_mode():
        exact = net.forward_attend(base, state, coords, t, attends)
        half = net.to(torch.bfloat16)
        velocities = [
            half.forward_attend(base.to(torch.bfloat16), state, coords, t, attends, fused_head=f)
            for f in (True, False)
        ]
        # the head's output, noise_std / t times: what the fused passes change
        return tuple(state / t - v for v in (*velocities, exact))  # type: ignore[return-value]


@pytest.fixture(scope="module")
def interpreted(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    """The kernels' outputs for every case and the net's head outputs, run once under the
    interpreter."""
    path = tmp_path_factory.mktemp("head") / "out.pt"
    run_interpreted(_INTERPRETED, str(path), timeout=300)
    return torch.load(path)


@needs_triton
def test_interpreted_kernel_is_torchs_add_and_gelu(interpreted) -> None:
    for case in _cases():
        c, k, h, layout, dtype, _ = case
        got = interpreted[_name(*case)]
        inp = _case(*case)
        want = _interpreted_reference(inp) if dtype == "bfloat16" else _reference(inp)
        assert got.shape == (k, c, h, h) and got.dtype == DTYPES[dtype], case
        assert got.is_contiguous(memory_format=LAYOUTS[layout]), case
        if k:
            assert close(got, want, dtype), (case, int(ulps(got, want).max()))


@needs_triton
def test_wrong_kernels_fail_the_tolerance(interpreted) -> None:
    """A kernel that lost the bias or the term, or took the exact GELU, fails it."""
    caught = 0
    for case in _cases():
        _, k, _, _, dtype, with_add = case
        if not k:
            continue
        inp = _case(*case)
        got = interpreted[_name(*case)]
        wrong = [_reference(inp, approximate="none"), _reference({**inp, "bias": 0 * inp["bias"]})]
        if with_add:
            wrong.append(_reference({**inp, "add": None}))
        for w in wrong:
            assert not close(got, w, dtype), case
            caught += 1
    assert caught == 75, caught


@needs_triton
def test_fused_head_keeps_the_nets_numbers(interpreted) -> None:
    """The shipped model's lean head output with the fused passes is torch's to rounding:
    the first conv's bias joins the term after its rounding instead of before, and bfloat16
    rounds a few values an ulp apart, which the head's later convs spread."""
    fused, plain, exact = interpreted["net"]
    assert not torch.equal(fused, plain)  # the kernel ran
    scale = exact.abs().max().item()
    assert scale > 1
    assert (fused - plain).abs().max().item() < 0.02 * scale
    # as near the float32 net as torch's bfloat16 passes, within the interpreter's truncation
    # to bfloat16 (measured 1.7 times their error; compiled, the CUDA test holds it to 1.25)
    err_fused, err_plain = ((v - exact).pow(2).mean().sqrt().item() for v in (fused, plain))
    assert 0 < err_fused < 2.5 * err_plain, (err_fused, err_plain)


@needs_triton
def test_interpreted_cells_are_torchs(interpreted) -> None:
    """base - 0.5 in the head's cell order: torch's (ConvHead.cells' torch form) to the bit,
    in bfloat16 to the interpreter's truncation of the same float32 difference."""
    for case in CELL_CASES:
        c, p, cell, k = case
        for dtype in DTYPES:
            base = _cell_base(*case, dtype)
            got = interpreted[_name("cells", *case, dtype)]
            want = _head(c, p, cell).cells(base)
            assert got.shape == want.shape == (k, c * p * p) and got.dtype == want.dtype
            if dtype == "bfloat16":  # the float32 difference, truncated
                want = interpreter_bf16(_head(c, p, cell).cells(base.float()))
            assert torch.equal(got, want), (case, dtype)


@needs_triton
def test_interpreted_velocity_is_torchs(interpreted) -> None:
    """(state - 0.25 residual) / max(t, 1e-3) with the residual in patch order: torch's add
    and division to the bit; a residual read in its rows' order instead fails."""
    for case in VELOCITY_CASES:
        c, p, cell, k, t = case
        state, rows = _velocity_inputs(*case)
        got = interpreted[_name("velocity", *case)]
        residual = _head(c, p + 2 * cell, cell).in_patch_order(rows).reshape(k, c * p * p)
        want = torch.add(state, residual, alpha=-0.25).div_(max(t, 1e-3))
        assert got.dtype == torch.float32 and torch.equal(got, want), case
        if k:
            unshuffled = torch.add(state, rows.reshape(k, c * p * p), alpha=-0.25) / max(t, 1e-3)
            assert not torch.allclose(got, unshuffled), case


@needs_triton
@pytest.mark.parametrize("steps", [1, 3])
def test_interpreted_velocity_with_its_euler_step_is_euler_update(interpreted, steps) -> None:
    """With ``euler_steps``: the state after the step, state - velocity / steps in one
    rounding (an FMA, as CUDA's add computes a + alpha * b; the interpreter's numpy rounds
    the product too), not the velocity."""
    from vs_skipsr.models.sr import euler_update

    for case in VELOCITY_CASES:
        k = case[3]
        state, _ = _velocity_inputs(*case)
        got = interpreted[_name("step", steps, *case)]
        v = interpreted[_name("velocity", *case)]
        alpha = torch.tensor(-1.0 / steps).double()  # the float32 the kernel takes
        fma = state.double() + v.double() * alpha  # before its one rounding
        larger = torch.maximum(state.abs(), (v * alpha.float()).abs()).double()
        assert got.dtype == torch.float32 and got.shape == state.shape, case
        # the interpreter's two roundings (product, sum) are each at most half an ulp of
        # values no larger than twice ``larger``; an ulp is at most 2^-23 of its value
        assert bool(((got.double() - fma).abs() <= larger * 2.0**-22).all()), case
        assert torch.allclose(got, euler_update(state, v, steps=steps), rtol=1e-6, atol=1e-6)
        if k:
            assert not torch.allclose(got, v), case


@needs_triton
def test_empty_rows_need_no_launch() -> None:
    x = torch.zeros(0, 64, 4, 4, dtype=torch.float16).contiguous(memory_format=torch.channels_last)
    assert kernels.bias_gelu_(x, torch.zeros(64, dtype=torch.float16)) is x


@needs_triton
def test_bad_cells_and_velocity_inputs_are_named() -> None:
    base = torch.rand(4, 3 * 32 * 32)
    with pytest.raises(ValueError, match=r"cells: base has shape \(4, 3072\), not \[K, 768\]"):
        kernels.cells(base, channels=3, patch=16, cell=4)
    with pytest.raises(ValueError, match=r"cells: cell=5 does not divide patch=32"):
        kernels.cells(base, channels=3, patch=32, cell=5)
    with pytest.raises(ValueError, match=r"cells: base's rows are not contiguous"):
        kernels.cells(base.t().contiguous().t(), channels=3, patch=32, cell=4)
    state, rows = torch.zeros(2, 768), torch.zeros(32, 48)
    t = torch.ones(1)
    fn = kernels.head_velocity
    with pytest.raises(ValueError, match=r"rows have shape \(31, 48\)"):
        fn(state, rows[:31], t, noise_std=0.25, channels=3, patch=16, cell=4)
    with pytest.raises(ValueError, match=r"state has shape \(2, 767\)"):
        fn(state[:, 1:], rows, t, noise_std=0.25, channels=3, patch=16, cell=4)
    with pytest.raises(ValueError, match=r"t has 2 values, not one"):
        fn(state, rows, torch.ones(2), noise_std=0.25, channels=3, patch=16, cell=4)
    with pytest.raises(ValueError, match=r"euler_steps=0, not a step count >= 1"):
        fn(state, rows, t, noise_std=0.25, channels=3, patch=16, cell=4, euler_steps=0)


@needs_triton
def test_bad_inputs_are_named() -> None:
    cl = torch.channels_last
    x = torch.zeros(2, 64, 4, 4, dtype=torch.float16).contiguous(memory_format=cl)
    b = torch.zeros(64, dtype=torch.float16)
    fn = kernels.bias_gelu_
    with pytest.raises(ValueError, match=r"neither channels-last nor contiguous \(strides"):
        fn(x.transpose(2, 3), b)
    with pytest.raises(
        ValueError, match=r"add is \(2, 64, 4, 4\) torch.float16 \(strides \(1024, 16"
    ):
        fn(x, b, add=x.contiguous())
    with pytest.raises(ValueError, match=r"bias has shape \(63,\), not \[64\]"):
        fn(x, b[:-1])
    with pytest.raises(ValueError, match=r"bias is torch.float64, not x's torch.float16"):
        fn(x, b.double())
    with pytest.raises(ValueError, match=r"add is \(2, 64, 4, 2\) torch.float16"):
        fn(x, b, add=x[..., :2])
    with pytest.raises(ValueError, match=r"x is torch.int32"):
        fn(x.int(), b)
    with pytest.raises(ValueError, match=r"x has shape \(2, 64, 4\), not"):
        fn(x[..., 0], b)


def test_cpu_runner_keeps_torchs_head() -> None:
    from vs_skipsr.backends import TorchBackend
    from vs_skipsr.models import random_sr

    runner = TorchBackend(device="cpu", dtype="bf16").load(sr=random_sr("default"), mask=None)
    assert not runner.fused_head


def _cuda_case(dtype: torch.dtype, *, seed: int, with_add: bool) -> dict[str, torch.Tensor | None]:
    """The stem's first conv output at bikes' bucket: [21248, 64, 6, 6]."""
    g = torch.Generator().manual_seed(seed)

    def conv_like() -> torch.Tensor:
        x = 4 * torch.randn(21248, 64, 6, 6, generator=g)
        return x.to(device="cuda", dtype=dtype).contiguous(memory_format=torch.channels_last)

    return {
        "x": conv_like(),
        "bias": torch.randn(64, generator=g).to(device="cuda", dtype=dtype),
        "add": conv_like() if with_add else None,
    }


@needs_cuda
@needs_triton
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("with_add", [False, True])
def test_cuda_kernel_is_torchs_kernels(dtype: torch.dtype, with_add: bool) -> None:
    inp = _cuda_case(dtype, seed=0, with_add=with_add)
    want = _reference(inp)
    got = kernels.bias_gelu_(inp["x"].clone(), inp["bias"], add=inp["add"])
    name = str(dtype).removeprefix("torch.")
    assert close(got, want, name), int(ulps(got, want).max())


@needs_cuda
@needs_triton
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_cuda_cells_and_velocity_are_torchs(dtype: torch.dtype) -> None:
    """At bikes' bucket (21248 tokens), to the bit: the cells of the shipped head's base
    patches, and the velocity from its rows with t = 0.6."""
    g = torch.Generator().manual_seed(4)
    head = _head(3, 32, 4)
    base = torch.rand(21248, 3 * 32 * 32, generator=g).to(device="cuda", dtype=dtype)
    assert torch.equal(kernels.cells(base, channels=3, patch=32, cell=4), head.cells(base))
    state, rows = (v.cuda() for v in _velocity_inputs(3, 16, 4, 21248, 0.6))
    t = torch.full((1,), 0.6, device="cuda")
    got = kernels.head_velocity(state, rows, t, noise_std=0.25, channels=3, patch=16, cell=4)
    residual = _head(3, 16 + 2 * 4, 4).in_patch_order(rows).reshape(21248, 768)  # patch 16
    assert torch.equal(got, torch.add(state, residual, alpha=-0.25).div_(t))
    for steps in (1, 8):  # with the Euler step: base.euler_update's add to the bit
        step = kernels.head_velocity(
            state, rows, t, noise_std=0.25, channels=3, patch=16, cell=4, euler_steps=steps
        )
        assert torch.equal(step, torch.add(state, got, alpha=-1.0 / steps))


@needs_cuda
@needs_triton
def test_cuda_kernel_replays_in_a_graph() -> None:
    from vs_skipsr.benchmark import captured

    inp = _cuda_case(torch.float16, seed=1, with_add=True)
    x = inp["x"]
    graph, out = captured(lambda: kernels.bias_gelu_(x, inp["bias"], add=inp["add"]))
    fresh = _cuda_case(torch.float16, seed=2, with_add=True)
    for name, t in inp.items():
        t.copy_(fresh[name])  # type: ignore[union-attr]
    graph.replay()
    want = kernels.bias_gelu_(fresh["x"], fresh["bias"], add=fresh["add"])
    torch.cuda.synchronize()
    assert out is x and torch.equal(x, want)


@needs_cuda
@needs_triton
def test_cuda_runner_fuses_the_head_and_keeps_the_nets_numbers() -> None:
    from vs_skipsr.backends import TorchBackend
    from vs_skipsr.benchmark import sr_inputs
    from vs_skipsr.models import random_sr

    net = random_sr("default", seed=3, std=0.1)
    exact = TorchBackend(device="cuda", dtype="fp32").load(sr=net, mask=None)
    fused = TorchBackend(device="cuda", dtype="bf16").load(sr=net, mask=None)
    plain = TorchBackend(device="cuda", dtype="bf16").load(sr=net, mask=None)
    assert fused.fused_head and not exact.fused_head
    plain.fused_head = False
    k, call = sr_inputs(
        fused, grid=(5, 17, 30), fraction=0.3, bucketed=False, generator=torch.Generator()
    )
    state, t = call[1][:k], call[3]
    got, want, ref = (state / t - r.sr(*call)[:k] for r in (fused, plain, exact))  # head outputs
    assert not torch.equal(got, want)  # (the kernel ran: it rounds the first conv differently)
    assert (got - want).abs().max().item() < 0.02 * ref.abs().max().item()
    err_fused, err_plain = ((v - ref).pow(2).mean().sqrt().item() for v in (got, want))
    assert err_fused < 1.25 * err_plain, (err_fused, err_plain)
