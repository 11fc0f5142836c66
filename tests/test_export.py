"""The ONNX exports compute what the torch nets compute, at any kept-token count.

One export per net serves every K, window count and window length (dynamic axes), so each
test runs the same graph at several shapes built the way the pipeline builds them: real keep
sets, real (t, y, x) coordinates, real partitions from ``tokens.build_partition``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from vs_skipsr.backends import OnnxRuntimeBackend, TorchBackend
from vs_skipsr.export import (
    MASK_INPUTS,
    SR_INPUTS,
    export_mask_onnx,
    export_sr_onnx,
    onnx_bytes,
)
from vs_skipsr.models.mask import MaskNet
from vs_skipsr.models.sr import SRTransformer
from vs_skipsr.models.weights import load_mask, load_sr
from vs_skipsr.pipeline import upscale_window
from vs_skipsr.tokens import build_partition, token_coords

ort = pytest.importorskip("onnxruntime")

GRID = (2, 8, 8)  # 128 tokens; tiny windows (2, 4, 4): 4 regular, up to 18 shifted windows
ATOL = 1e-5


@pytest.fixture(scope="module")
def sr_net(sr_weights: Path) -> SRTransformer:
    return load_sr(sr_weights)


@pytest.fixture(scope="module")
def mask_net(mask_weights: Path) -> MaskNet:
    return load_mask(mask_weights)


@pytest.fixture(scope="module")
def sr_session(sr_net: SRTransformer):
    return ort.InferenceSession(onnx_bytes(sr_net), providers=["CPUExecutionProvider"])


@pytest.fixture(scope="module")
def mask_session(mask_net: MaskNet):
    return ort.InferenceSession(onnx_bytes(mask_net), providers=["CPUExecutionProvider"])


def _window(net: SRTransformer, k: int, *, seed: int, valid: int | None = None):
    """SR inputs for ``k`` kept tokens of GRID (the first ``valid`` real, the rest bucket
    padding pointing at token 0, as the pipeline pads)."""
    cfg = net.config
    g = torch.Generator().manual_seed(seed)
    total = GRID[0] * GRID[1] * GRID[2]
    n_real = k if valid is None else valid
    index = torch.randperm(total, generator=g)[:n_real].sort().values
    index = torch.cat((index, torch.zeros(k - n_real, dtype=torch.long)))  # [K]
    coords = token_coords(index, grid=GRID)  # [K, 3]
    parts = [
        build_partition(coords, grid=GRID, window=cfg.window, shift=s, valid=n_real).part
        for s in ((0, 0, 0), cfg.shift)
    ]
    base = torch.rand(k, cfg.base_dim, generator=g)
    state = torch.randn(k, cfg.token_dim, generator=g) * cfg.noise_std
    return base, state, coords, parts


@pytest.mark.parametrize(
    ("k", "valid"),
    [(1, None), (3, None), (64, None), (128, None), (64, 41)],
    ids=["K=1", "K=3", "K=half", "K=all", "K=64-padded"],
)
@pytest.mark.parametrize("t", [1.0, 0.5])
def test_sr_onnx_matches_torch_at_any_kept_count(sr_net, sr_session, k, valid, t):
    base, state, coords, (part0, part1) = _window(sr_net, k, seed=k, valid=valid)
    tt = torch.tensor([t])
    with torch.no_grad():
        ref = sr_net(base, state, coords, tt, part0, part1)
    feeds = dict(zip(SR_INPUTS, (base, state, coords, tt, part0, part1), strict=True))
    (out,) = sr_session.run(None, {n: v.numpy() for n, v in feeds.items()})
    assert out.shape == tuple(ref.shape)
    err = float(np.abs(out - ref.numpy()).max())
    print(f"K={k} valid={valid} t={t}: max |ort - torch| = {err:.2e}")
    assert err < ATOL
    r_hat = state - tt * ref  # the net's own output, without the state it passes through
    assert float(r_hat.abs().max()) > 1e-3  # random weights: the comparison is not 0 == 0


@pytest.mark.parametrize("shape", [(1, 3, 8, 8), (3, 3, 24, 40), (5, 3, 37, 53)])
def test_mask_onnx_matches_torch_at_any_size(mask_net, mask_session, shape):
    lr = torch.rand(shape, generator=torch.Generator().manual_seed(sum(shape)))
    with torch.no_grad():
        ref = mask_net(lr)
    (out,) = mask_session.run(None, {MASK_INPUTS[0]: lr.numpy()})
    err = float(np.abs(out - ref.numpy()).max())
    print(f"mask {shape}: max |ort - torch| = {err:.2e}")
    assert out.shape == tuple(ref.shape)
    assert err < ATOL


def test_onnx_files_are_valid_opset_18_with_fp32_io(sr_net, mask_net, tmp_path):
    for dtype in ("fp32", "fp16", "bf16"):
        sr_path, mask_path = tmp_path / f"sr-{dtype}.onnx", tmp_path / f"mask-{dtype}.onnx"
        export_sr_onnx(sr_net, sr_path, dtype=dtype)
        export_mask_onnx(mask_net, mask_path, dtype=dtype)
        for path in (sr_path, mask_path):
            model = onnx.load(str(path))
            onnx.checker.check_model(model)
            assert {o.version for o in model.opset_import if o.domain in ("", "ai.onnx")} == {18}
            io_types = {
                v.name: v.type.tensor_type.elem_type
                for v in (*model.graph.input, *model.graph.output)
            }
            ints = {"coords", "part0", "part1"}
            for name, elem in io_types.items():
                want = onnx.TensorProto.INT64 if name in ints else onnx.TensorProto.FLOAT
                assert elem == want, (path.name, name)
            assert not [n for n in model.graph.node if n.domain not in ("", "ai.onnx")]
    assert not list(tmp_path.glob("*.tmp"))  # written atomically


def test_export_is_deterministic_and_leaves_the_model_alone(sr_net):
    before = {k: v.clone() for k, v in sr_net.state_dict().items()}
    a, b = onnx_bytes(sr_net, dtype="fp16"), onnx_bytes(sr_net, dtype="fp16")
    assert a == b  # the engine cache key hashes these bytes
    assert all(v.dtype == torch.float32 for v in sr_net.state_dict().values())
    assert all(torch.equal(before[k], v) for k, v in sr_net.state_dict().items())


def test_fp16_onnx_is_close_to_fp32_torch(sr_net):
    """The graph TensorRT builds for --fp16, run by onnxruntime's CPU kernels."""
    session = ort.InferenceSession(
        onnx_bytes(sr_net, dtype="fp16"), providers=["CPUExecutionProvider"]
    )
    base, state, coords, (part0, part1) = _window(sr_net, 64, seed=5)
    tt = torch.ones(1)
    with torch.no_grad():
        ref = sr_net(base, state, coords, tt, part0, part1)
    feeds = dict(zip(SR_INPUTS, (base, state, coords, tt, part0, part1), strict=True))
    (out,) = session.run(None, {n: v.numpy() for n, v in feeds.items()})
    err = float(np.abs(out - ref.numpy()).max())
    print(f"fp16 ONNX vs fp32 torch: {err:.2e} (|ref| max {float(ref.abs().max()):.2f})")
    assert err < 5e-3


def test_onnxruntime_backend_upscales_a_window_like_torch(sr_net, mask_net):
    g = torch.Generator().manual_seed(7)
    lr = torch.rand(2, 3, 40, 56, generator=g)  # x2 -> 80x112: a 2x5x7 token grid
    kwargs = {"scale": 2, "scorer": "learned", "skip_ratio": 0.5, "steps": 2, "seed": 3}
    torch_runner = TorchBackend(device="cpu").load(sr=sr_net, mask=mask_net)
    ort_runner = OnnxRuntimeBackend(device="cpu").load(sr=sr_net, mask=mask_net)
    assert ort_runner.name == "onnxruntime" and ort_runner.has_mask
    ref = upscale_window(lr, runner=torch_runner, **kwargs)
    out = upscale_window(lr, runner=ort_runner, **kwargs)
    assert torch.equal(out.keep, ref.keep)
    assert 0 < out.stats.kept < out.stats.total
    err = float((out.frames - ref.frames).abs().max())
    print(
        f"upscale_window onnxruntime vs torch: max {err:.2e}, kept {out.stats.kept}/{out.stats.total}"
    )
    assert err < ATOL
