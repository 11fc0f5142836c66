"""The SR transformer: a timestep-conditioned velocity net over kept p x p tokens.

Read top to bottom: configuration and presets, embedders, rotary positions, the block, the
final layer, the model. It is trained as rectified flow on the residual r = HR - base, where
base is the bicubic upsample: the state at time t is x_t = t * noise + (1 - t) * r and the net
predicts the velocity v = noise - r, parameterised through its estimate of r: v = (x_t - r_hat) / t.
One Euler step from t = 1 gives r_hat directly; N steps reuse the same kept tokens and
partitions.

Tokens carry their original (t, y, x) grid coordinates, so a kept token sees its neighbours
where they really are whatever was dropped around it, and attention runs inside 3D windows
over kept tokens only (see ``attention.py``). Nothing in the net mixes tokens except attention,
so the output for a kept token depends only on kept tokens of its windows.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from functools import cache
from types import ModuleType

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..optional import optional_module, triton_module, works_here
from .attention import Attend, RotatingAttend, padded_window_attention

__all__ = [
    "PRESETS",
    "BaseFeatures",
    "BlockModulation",
    "Modulation",
    "SRConfig",
    "SRTransformer",
    "euler_update",
    "mlp",
    "random_sr",
    "randomize_",
    "residual_norm",
]


@dataclass(frozen=True, kw_only=True)
class SRConfig:
    """Sizes of the SR net. ``window`` is (frames, token rows, token cols) of one attention
    window; the shifted partition is offset by half of it."""

    patch: int = 16
    channels: int = 3
    dim: int = 192
    depth: int = 6
    heads: int = 6
    mlp_ratio: float = 2.0
    window: tuple[int, int, int] = (5, 8, 8)
    noise_std: float = 0.25
    rope_base: float = 64.0
    # how a token's feature becomes its p x p residual: "linear" (one projection, DiT's final
    # layer) or "conv" (a few convs on a sub-grid of p/head_cell cells that also read the
    # token's base pixels; see ConvHead). Weights saved before the conv head say "linear".
    head: str = "linear"
    head_width: int = 48
    head_cell: int = 4
    # output pixels of base context each side of a token that the net reads (a multiple of
    # head_cell; conv head only): the base input is then a (p + 2 halo)^2 patch, so the head
    # decodes a token's border cells from their LR neighbourhood instead of zero padding
    halo: int = 0

    @property
    def token_dim(self) -> int:
        return self.channels * self.patch * self.patch

    @property
    def base_patch(self) -> int:
        """Side of the base patch the net reads: the token plus its halo."""
        return self.patch + 2 * self.halo

    @property
    def base_dim(self) -> int:
        return self.channels * self.base_patch * self.base_patch

    @property
    def shift(self) -> tuple[int, int, int]:
        return tuple(w // 2 for w in self.window)  # type: ignore[return-value]

    def to_dict(self) -> dict[str, object]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, object]) -> SRConfig:
        d = dict(d)
        d["window"] = tuple(d["window"])  # type: ignore[arg-type]
        return cls(**d)  # type: ignore[arg-type]


PRESETS: dict[str, SRConfig] = {
    # shipped default: small enough for a CPU demo, trained on real imagery
    "default": SRConfig(head="conv", halo=8, head_width=64),
    # unit tests: a few thousand parameters, same code paths
    "tiny": SRConfig(
        dim=32,
        depth=2,
        heads=2,
        window=(2, 4, 4),
        mlp_ratio=2.0,
        head="conv",
        head_width=8,
        halo=8,
    ),
    # DESIGN.md's measured GPU shape: 12 blocks, width 384
    "large": SRConfig(dim=384, depth=12, heads=6, mlp_ratio=4.0, head="conv", halo=8),
    # production scale (SeedVR2-3B shape), random weights, benchmarks only
    "seedvr2_3b": SRConfig(
        dim=2560, depth=32, heads=20, mlp_ratio=4.0, window=(4, 8, 8), head="conv", halo=8
    ),
}


# --- embedders -------------------------------------------------------------------------------


def timestep_embedding(t: Tensor, dim: int, max_period: float = 10000.0) -> Tensor:
    """Sinusoidal embedding of t in [0, 1] (scaled by 1000 like DiT): [B] -> [B, dim]."""
    half = dim // 2
    freqs = torch.exp(
        -math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half
    )
    args = (t.float() * 1000.0)[:, None] * freqs[None]  # [B, half]
    return torch.cat((torch.cos(args), torch.sin(args)), dim=-1)


class TimestepEmbedder(nn.Module):
    def __init__(self, dim: int, freq_dim: int = 128) -> None:
        super().__init__()
        self.freq_dim = freq_dim
        self.mlp = nn.Sequential(nn.Linear(freq_dim, dim), nn.SiLU(), nn.Linear(dim, dim))

    def forward(self, t: Tensor) -> Tensor:  # [B] -> [B, C]
        # the sinusoid is computed in fp32 (t * 1000 needs it); cast to the net's dtype so a
        # half-precision net (torch fp16/bf16, or an ONNX exported in fp16/bf16) runs
        return self.mlp(timestep_embedding(t, self.freq_dim).to(self.mlp[0].weight.dtype))


# --- rotary positions over (t, y, x) ---------------------------------------------------------


def rope_split(head_dim: int) -> tuple[int, int, int]:
    """Rotation pairs given to t, y, x: rows and columns get equal shares, time the rest."""
    pairs = head_dim // 2
    yx = pairs // 3
    return pairs - 2 * yx, yx, yx


def rope_tables(coords: Tensor, head_dim: int, base: float) -> tuple[Tensor, Tensor]:
    """cos/sin [K, 1, D/2] from integer coords [K, 3]; relative by construction."""
    parts = []
    for axis, n in enumerate(rope_split(head_dim)):
        if n == 0:
            continue
        freqs = base ** (-torch.arange(n, dtype=torch.float32, device=coords.device) / n)
        parts.append(coords[:, axis : axis + 1].float() * freqs[None])  # [K, n]
    ang = torch.cat(parts, dim=1)[:, None, :]  # [K, 1, D/2]
    return torch.cos(ang), torch.sin(ang)


def apply_rope(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Rotate [K, H, D] by the tables (half-split pairs), in fp32 whatever x's precision."""
    if not _lean_kernels():
        x1, x2 = x.float().chunk(2, dim=-1)  # [K, H, D/2] each
        out = torch.cat((x1 * cos - x2 * sin, x1 * sin + x2 * cos), dim=-1)
        return out.to(x.dtype)
    # the same sums in four kernels that write each half of the output in place: the form
    # above made nine, and its fp32 copy, cat and cast moved ~3x the bytes (the net is bound
    # by memory traffic, not matmuls; per block, at every kept count)
    x1, x2 = x.chunk(2, dim=-1)
    out = torch.empty_like(x, memory_format=torch.contiguous_format)
    o1, o2 = out.chunk(2, dim=-1)
    prod = torch.mul(x1, cos)  # fp32: a bf16 x promotes against the fp32 table
    torch.addcmul(prod, x2, sin, value=-1, out=o1)
    torch.mul(x1, sin, out=prod)
    torch.addcmul(prod, x2, cos, out=o2)
    return out


# --- the block -------------------------------------------------------------------------------


def modulate(x: Tensor, shift: Tensor, scale: Tensor) -> Tensor:
    # one fused kernel for x * (1 + scale) + shift: a small net on a GPU is launch-bound,
    # and every elementwise kernel saved is saved in each block
    return torch.addcmul(shift, x, 1 + scale)


def norm_modulate(norm: nn.LayerNorm, x: Tensor, shift: Tensor, scale: Tensor) -> Tensor:
    """``modulate(norm(x), shift, scale)``: the plain form, which training, the export and
    torch.compile run. Inference takes the lean path (:meth:`SRTransformer.velocity`), where
    the modulation is the layer norm's own affine (:class:`BlockModulation`)."""
    return modulate(norm(x), shift, scale)


class WindowAttention(nn.Module):
    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(
        self, x: Tensor, rope: tuple[Tensor, Tensor], attend: Attend | RotatingAttend
    ) -> Tensor:
        n, c = x.shape  # [K, C]
        h, d = self.heads, c // self.heads
        qkv = self.qkv(x).reshape(n, 3, h, d)
        if isinstance(attend, RotatingAttend):  # it rotates q and k with a kernel of its own
            return self.proj(attend(qkv[:, 0], qkv[:, 1], qkv[:, 2], rope=rope).reshape(n, c))
        # q and k rotated together: one set of rotary kernels instead of two
        qk = apply_rope(qkv[:, :2].reshape(n, 2 * h, d), *rope).reshape(n, 2, h, d)
        q, k = qk.unbind(1)  # [K, H, D]
        out = attend(q, k, qkv[:, 2])  # [K, H, D]
        return self.proj(out.reshape(n, c))


class Block(nn.Module):
    """Pre-norm transformer block with adaLN-Zero timestep modulation (DiT)."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.attn = WindowAttention(dim, heads)
        self.norm2 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(
            nn.Linear(dim, hidden), nn.GELU(approximate="tanh"), nn.Linear(hidden, dim)
        )
        self.ada = nn.Sequential(nn.SiLU(), nn.Linear(dim, 6 * dim))

    def forward(
        self, x: Tensor, temb: Tensor, rope: tuple[Tensor, Tensor], attend: Attend | RotatingAttend
    ) -> Tensor:
        s1, g1, a1, s2, g2, a2 = self.ada(temb).chunk(6, dim=-1)  # [1, C] each
        x = torch.addcmul(x, a1, self.attn(norm_modulate(self.norm1, x, s1, g1), rope, attend))
        x = torch.addcmul(x, a2, self.mlp(norm_modulate(self.norm2, x, s2, g2)))  # [K, C]
        return x

    def modulation(self, temb: Tensor) -> BlockModulation:
        """This block's share of :class:`Modulation` for one timestep's embedding [1, C]."""
        s1, g1, a1, s2, g2, a2 = self.ada(temb).chunk(6, dim=-1)
        return BlockModulation(
            norm1=(s1.reshape(-1), (1 + g1).reshape(-1)),
            gate1=a1,
            norm2=(s2.reshape(-1), (1 + g2).reshape(-1)),
            gate2=a2,
        )


class FinalLayer(nn.Module):
    def __init__(self, dim: int, out_dim: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.linear = nn.Linear(dim, out_dim)
        self.ada = nn.Sequential(nn.SiLU(), nn.Linear(dim, 2 * dim))

    def forward(self, x: Tensor, temb: Tensor) -> Tensor:
        shift, scale = self.ada(temb).chunk(2, dim=-1)
        return self.linear(norm_modulate(self.norm, x, shift, scale))

    def decode(self, normed: Tensor) -> Tensor:
        """:meth:`forward` from tokens its norm and modulation have already been applied to."""
        return self.linear(normed)


class ConvHead(nn.Module):
    """Decodes a token's feature into its p x p residual with convs instead of one projection.

    A linear head can only emit residuals from a fixed dim-wide subspace of patch space, and
    it learned slowly: x4 detail is a nonlinear function of a few LR pixels. Here the feature
    is spread over a (p/cell)^2 sub-grid (cell = 4: one LR pixel at x4), joined with the
    token's own base pixels (space-to-depth), and three convs decode each cell.

    With a halo of h cells the base pixels come with h cells of the neighbours' base around
    them, and h unpadded 3x3 convs (the stem) reduce that to the token's grid: each cell then
    sees a (2h+1)^2 LR neighbourhood whatever the token border (held-out x4 gain after the
    same 7 CPU minutes: +0.42 dB with an 8-pixel halo, +0.28 without; the 16-px block edges
    did not shrink, since a token's feature still differs from its neighbour's). The halo is
    base (the LR input), never another token's output, so a kept token still depends only on
    kept tokens and the LR, and skipped tokens stay exact.
    """

    def __init__(
        self, *, dim: int, patch: int, channels: int, width: int, cell: int, halo: int = 0
    ) -> None:
        super().__init__()
        if patch % cell or halo % cell:
            raise ValueError(f"SRConfig head_cell={cell} must divide patch={patch} and halo={halo}")
        self.patch, self.channels, self.width, self.cell = patch, channels, width, cell
        self.grid = patch // cell
        self.halo_cells = halo // cell
        self.base_patch = patch + 2 * halo
        self.norm = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.ada = nn.Sequential(nn.SiLU(), nn.Linear(dim, 2 * dim))
        self.to_grid = nn.Linear(dim, width * self.grid * self.grid)
        pix = channels * cell * cell
        self.stem: nn.Module | None = None
        if self.halo_cells:
            layers: list[nn.Module] = []
            for i in range(self.halo_cells):
                layers += [
                    nn.Conv2d(pix if i == 0 else width, width, 3),
                    nn.GELU(approximate="tanh"),
                ]
            self.stem = nn.Sequential(*layers)
        self.convs = nn.Sequential(
            nn.Conv2d(width + (width if self.stem is not None else pix), width, 3, padding=1),
            nn.GELU(approximate="tanh"),
            nn.Conv2d(width, width, 3, padding=1),
            nn.GELU(approximate="tanh"),
            nn.Conv2d(width, pix, 1),
        )
        # the lean form's reordered and split weights, with what they were made from
        self._split: tuple[tuple[object, ...], tuple[Tensor, ...]] | None = None

    def zero_output_(self) -> None:
        nn.init.zeros_(self.ada[-1].weight)
        nn.init.zeros_(self.ada[-1].bias)
        nn.init.zeros_(self.convs[-1].weight)
        nn.init.zeros_(self.convs[-1].bias)

    def pixels(self, centered: Tensor) -> Tensor:
        """The head's view of the tokens' base: space-to-depth cells of ``centered`` (base
        patches with their halo, minus 0.5, in the net's dtype, [K, c·(p + 2 halo)²]; a view
        with a row stride is fine), through the stem, which consumes the halo:
        [K, width or c·cell², g, g]. It does not depend on the flow's state or time, so a
        window's steps compute it once."""
        k, c, cell, bp = centered.shape[0], self.channels, self.cell, self.base_patch
        if _channels_last():
            # oneDNN runs these small-grid convs ~1.5x faster on channels-last inputs (the
            # head is half of the CPU's dense SR time); cuDNN's bf16 kernels are NHWC, and
            # fed NCHW it transposed every conv's input and output: 12 layout kernels, 14%
            # of a dense 1080p x 5 call's kernel time with CUDA graphs and 26% compiled
            # (scripts/profile_sr.py, H100). The weights need no conversion.
            # The space-to-depth is written straight into that layout: one copy, where
            # pixel_unshuffle and then a channels-last copy made two.
            gb = bp // cell
            pix = (
                centered.reshape(k, c, gb, cell, gb, cell)
                .permute(0, 2, 4, 1, 3, 5)
                .reshape(k, gb, gb, c * cell * cell)
                .permute(0, 3, 1, 2)
            )  # [K, c·cell², Gb, Gb], channels-last
        else:
            pix = F.pixel_unshuffle(centered.reshape(k, c, bp, bp), cell)  # [K, c·cell², Gb, Gb]
        return pix if self.stem is None else self.stem(pix)

    def forward(self, x: Tensor, temb: Tensor, pix: Tensor) -> Tensor:
        """``pix``: what :meth:`pixels` made of the same tokens' base."""
        shift, scale = self.ada(temb).chunk(2, dim=-1)
        return self.decode(norm_modulate(self.norm, x, shift, scale), pix)

    def decode(self, normed: Tensor, pix: Tensor | None) -> Tensor:
        """:meth:`forward` from tokens its norm and modulation have already been applied to."""
        if pix is None:
            raise ValueError("a conv head decodes with its tokens' base pixels; got none")
        k = normed.shape[0]
        g, c, p = self.grid, self.channels, self.patch
        feat = self.to_grid(normed).reshape(k, self.width, g, g)
        if _channels_last():
            feat = feat.contiguous(memory_format=torch.channels_last)
        out = self.convs(torch.cat((feat, pix), dim=1))  # [K, c*cell², g, g]
        return F.pixel_shuffle(out, self.cell).reshape(k, c * p * p)

    def cells(self, base: Tensor, *, fused: bool = False) -> Tensor:
        """The lean form's view of the tokens' base (``base``: patches with their halo in the
        net's dtype, [K, c·(p + 2 halo)²]): base - 0.5 as space-to-depth cells, [K, Gb·Gb·c·cell²]
        contiguous, in one pass where centring and then the layout copy of :meth:`pixels`
        took two over the window's largest tensor. Its rows, viewed [K, c·cell², Gb, Gb], are
        the channels-last input of the stem; the embedding reads them with its base columns
        in the same order (:meth:`SRTransformer.base_features`). ``fused``: one Triton pass
        (torch's strided subtraction into this layout reads at a fraction of the bandwidth on
        a GPU). Inference only."""
        k, c, cell, bp = base.shape[0], self.channels, self.cell, self.base_patch
        if fused:
            return _triton_module("head_triton").cells(base, channels=c, patch=bp, cell=cell)
        gb = bp // cell
        src = base.reshape(k, c, gb, cell, gb, cell).permute(0, 2, 4, 1, 3, 5)
        out = torch.empty((k, gb, gb, c, cell, cell), dtype=base.dtype, device=base.device)
        return torch.sub(src, 0.5, out=out).view(k, c * bp * bp)

    def pixel_term(self, cells: Tensor, *, fused: bool = False) -> Tensor:
        """The first conv's share of :meth:`decode` that reads the base pixels, from
        :meth:`cells` through the stem: it does not change over a window's steps, so the
        lean form computes it once a window (:meth:`decode_split`). ``fused`` (CUDA, where
        :func:`fused_head_works`): each conv's bias and GELU as one Triton pass
        (``head_triton.py``, as are the cells and the velocity with ``fused``), and the first
        conv's bias left to :meth:`decode_split`'s pass. Inference only."""
        k, gb = cells.shape[0], self.base_patch // self.cell
        pix = cells.view(k, gb, gb, -1).permute(0, 3, 1, 2)  # channels-last
        *_, w_pix, bias = self._split_weights()
        if self.stem is not None:
            for conv in self.stem[::2]:
                pix = _conv_gelu(pix, conv, fused=fused)
        return F.conv2d(pix, w_pix, None if fused else bias, padding=1)

    def decode_split(self, normed: Tensor, term: Tensor, *, fused: bool = False) -> Tensor:
        """:meth:`decode` with the first conv split in two (the feature's half here, the base
        pixels' half from :meth:`pixel_term`): a step then neither concatenates the two inputs
        nor runs the half of that conv, and ``to_grid``'s rows come in cell-major order, so its
        output is already the channels-last layout the convs take (no copy). Together the
        concatenation, the layout copy and that half conv were ~14% of the shipped model's
        dense 8-step GPU time (H200 profile). The last (1x1) conv runs as a linear on the
        channels-last rows (its bias in the matmul) and its rows [K·g·g, c·cell²] come back
        as they are: the reader does the pixel shuffle (:meth:`in_patch_order`), so no copy is
        made of them. ``fused``: see :meth:`pixel_term`. The same sums, rounded in other
        places."""
        w_grid, b_grid, w_feat, _, bias = self._split_weights()
        k = normed.shape[0]
        g, w = self.grid, self.width
        feat = F.linear(normed, w_grid, b_grid).reshape(k, g, g, w).permute(0, 3, 1, 2)
        first = F.conv2d(feat, w_feat, None, padding=1)
        term = _strided_like(term, first)
        x = _bias_gelu_(first, bias, add=term) if fused else self.convs[1](first.add_(term))
        x = _conv_gelu(x, self.convs[2], fused=fused)
        last = self.convs[4]
        return F.linear(
            x.permute(0, 2, 3, 1).reshape(k * g * g, w), last.weight.view(-1, w), last.bias
        )

    def in_patch_order(self, rows: Tensor) -> Tensor:
        """:meth:`decode_split`'s rows as each token's residual in patch order, [K, c, g,
        cell, g, cell] (a view: [K, c·p²] once reshaped)."""
        g, c, cell = self.grid, self.channels, self.cell
        return rows.view(-1, g, g, c, cell, cell).permute(0, 3, 1, 4, 2, 5)

    def _split_weights(self) -> tuple[Tensor, ...]:
        """(to_grid's weight and bias in cell-major row order, the first conv's feature and
        base-pixel halves and its bias), made again whenever a parameter they come from is
        replaced or changed in place (a move to another device or dtype, a training step)."""
        conv = self.convs[0]
        params = (self.to_grid.weight, self.to_grid.bias, conv.weight, conv.bias)
        key = _params_key(params)
        if self._split is None or self._split[0] != key:
            gg, w = self.grid * self.grid, self.width
            with torch.no_grad():
                grid_w = self.to_grid.weight.reshape(w, gg, -1).transpose(0, 1).reshape(gg * w, -1)
                grid_b = self.to_grid.bias.reshape(w, gg).t().reshape(-1)
                self._split = (
                    key,
                    (
                        grid_w.contiguous(),
                        grid_b.contiguous(),
                        conv.weight[:, :w].contiguous(),
                        conv.weight[:, w:].contiguous(),
                        conv.bias,
                    ),
                )
        return self._split[1]


def _params_key(params: Sequence[Tensor]) -> tuple[tuple[int, int, torch.dtype], ...]:
    """What a weight derived from ``params`` is made again for: a parameter replaced, changed
    in place, moved or cast."""
    return tuple((t.data_ptr(), t._version, t.dtype) for t in params)


def _strided_like(t: Tensor, like: Tensor) -> Tensor:
    """``t`` with ``like``'s strides (a copy only where they differ): an add of two
    tensors laid out differently takes torch's slow strided kernel (or is refused by the
    fused pass)."""
    if t.stride() == like.stride():
        return t
    return torch.empty_like(like).copy_(t)


def _triton_module(name: str) -> ModuleType:
    """``vs_skipsr.models.<name>``, one of the net's Triton kernel modules (imported on first
    use: Triton is optional, and a runner takes them only where its check passed)."""
    return triton_module(f"vs_skipsr.models.{name}")


def _bias_gelu_(x: Tensor, bias: Tensor, *, add: Tensor | None = None) -> Tensor:
    return _triton_module("head_triton").bias_gelu_(x, bias, add=add)


def _conv_gelu(x: Tensor, conv: nn.Conv2d, *, fused: bool) -> Tensor:
    """GELU(conv(x)) of one of the head's 3x3 convs; ``fused``: its bias and GELU as one
    Triton pass over the conv's output, in place."""
    if fused:
        return _bias_gelu_(F.conv2d(x, conv.weight, None, padding=conv.padding), conv.bias)
    return F.gelu(conv(x), approximate="tanh")


def _channels_last() -> bool:
    """Whether the head runs its convs channels-last: always, outside export tracing (an
    exported graph keeps the plain layout; its runtime picks its own)."""
    return not (torch.jit.is_tracing() or torch.onnx.is_in_onnx_export())


def _lean_kernels() -> bool:
    """Whether the net takes its in-place, fewer-kernel forms (rotary positions, embedding
    input, norm + modulation, velocity, base features shared by a window's steps): in eager
    inference only. The net is bound by memory traffic, not matmuls: these forms cut the
    bytes of a dense 1080p x 5 call in bf16 from 16.4 to 10.1 GB (scripts/count_sr_bytes.py).
    Training needs autograd, which out= kernels lack; an export keeps the plain graph for its
    runtime to fuse, and torch.compile fuses the plain forms itself."""
    return not (
        torch.is_grad_enabled()
        or torch.jit.is_tracing()
        or torch.onnx.is_in_onnx_export()
        or torch.compiler.is_compiling()
    )


# --- the model -------------------------------------------------------------------------------


@dataclass(frozen=True)
class BaseFeatures:
    """The part of the net's work that depends only on a window's base and coords, which all
    of its flow steps share: the embedding of the base half of the input (its share of the
    embedding matmul, bias included: each step adds the state half's), the conv head's stem
    output through the base pixels' half of its first conv, the rotary tables. At several
    steps this is computed once instead of once a step: the base half is 80% of the embedding's FLOPs (3(p+2h)² of its 3(p+2h)² + 3p² inputs),
    the stem's convs ~26% of the net's; and the window keeps a [K, dim] embedding instead of
    the [K, 3(p+2h)² + 3p²] input (16 MB instead of 313 MB for a 1080p x 5 window in bf16)."""

    embedded_base: Tensor  # [K, dim] in the net's dtype: embed's base columns @ (base - 0.5) + bias
    # [K, width, g, g]: ConvHead.pixel_term (without the first conv's bias where the head's
    # passes are fused: decode_split adds it), or None for a linear head
    pixels: Tensor | None
    rope: tuple[Tensor, Tensor]  # cos, sin [K, 1, D/2]


@dataclass(frozen=True)
class BlockModulation:
    """One block's adaLN modulation: (shift, 1 + scale) of each norm, [C] each, as the
    layer norm's own affine takes them (with one timestep for all tokens, as in inference,
    norm and modulation are then one kernel and the normalised tokens never make a round
    trip through memory; it differs from :func:`norm_modulate` only by that rounding); the
    gates [1, C]."""

    norm1: tuple[Tensor, Tensor]
    gate1: Tensor
    norm2: tuple[Tensor, Tensor]
    gate2: Tensor


@dataclass(frozen=True)
class Modulation:
    """Everything one timestep sets in the net: the timestep embedding through every
    block's and the head's adaLN. It depends on t alone, and a window's N steps run at the
    fixed times 1, 1 - 1/N, ..., so a runner makes the table once
    (:meth:`SRTransformer.modulation`) instead of once a step: ~40 of a step's ~165 kernels
    (shipped model), each a few microseconds on a [1, C] vector, which do not shrink with the
    tokens skipping drops (H200 profile of 20-frame 1920x816 windows at 8 steps)."""

    blocks: tuple[BlockModulation, ...]
    head: tuple[Tensor, Tensor]  # (shift, 1 + scale) of the head's norm


def residual_norm(
    x: Tensor,
    y: Tensor,
    gate: Tensor,
    affine: tuple[Tensor, Tensor],
    eps: float,
    *,
    fused: bool = False,
) -> tuple[Tensor, Tensor]:
    """x + gate * y, and its layer norm with the affine (shift, 1 + scale): the residual
    update of a block and the norm after it, which always follow each other. ``fused``: as
    one Triton kernel (``residual_norm_triton.py``; CUDA, where :func:`fused_norm_works`):
    torch's two took a quarter of the shipped model's GPU time, the norm ~6x slower than
    its bytes allow; the same update to the bit, the norm to rounding."""
    if fused:
        module = _triton_module("residual_norm_triton")
        return module.residual_norm(x, y, gate, affine[1], affine[0], eps=eps)
    x = torch.addcmul(x, gate, y)
    return x, F.layer_norm(x, (x.shape[1],), affine[1], affine[0], eps)


def mlp(layers: nn.Sequential, h: Tensor, *, fused: bool = False) -> Tensor:
    """A block's MLP (linear, tanh GELU, linear) on ``h`` [K, C]. ``fused``: the first
    linear's bias and GELU as cuBLASLt's epilogue of its matmul (``torch._addmm_activation``;
    CUDA, where :func:`fused_mlp_works`), so the [K, hidden] activations are written once
    instead of written, read and written again: torch's separate GELU took 0.20 of a dense
    720p x 20 call's 6.07 ms (H200, twenty-second session). The epilogue takes the GELU of the
    float32 accumulator, before the one rounding: torch's numbers to rounding. Not on the CPU,
    where that function's GELU is the exact one, not the net's tanh form."""
    if not fused:
        return layers(h)
    first, _, second = layers
    return second(torch._addmm_activation(first.bias, h, first.weight.t(), use_gelu=True))


@cache
def fused_mlp_works(device: torch.device, dtype: torch.dtype, *, channels: int) -> bool:
    """Whether :func:`mlp`'s fused form runs here (CUDA, half precision) with the net's GELU:
    in float32 it must be torch's tanh GELU to float32 rounding (the exact GELU, which the
    epilogue could have been, is farther off at the values tried: a CPU test shows the
    tolerance tells them apart), and in ``dtype`` as near
    the float32 MLP as torch's own ``dtype`` MLP is (their roundings differ, so not the same
    bits: one rounding of the GELU's input fewer); once a process, a runner asks at load,
    before any capture."""
    if not _half_on_cuda_with(device, dtype):
        return False

    def check() -> None:
        gen = torch.Generator().manual_seed(0)
        layers = nn.Sequential(
            nn.Linear(channels, 2 * channels),
            nn.GELU(approximate="tanh"),
            nn.Linear(2 * channels, channels),
        )
        h = 2 * torch.randn(37, channels, generator=gen)
        with torch.no_grad():
            for p in layers.parameters():
                p.copy_(torch.randn(p.shape, generator=gen) / channels**0.5)
        with torch.inference_mode():
            exact = layers.to(device)
            x = h.to(device)
            ref = exact(x)
            got = mlp(exact, x, fused=True)
            if not torch.allclose(got, ref, rtol=1e-4, atol=1e-5):
                err = float((got - ref).abs().max())
                raise RuntimeError(f"float32 differs from torch's tanh-GELU MLP by {err}")
            half = layers.to(device, dtype)
            x = x.to(dtype)
            err_fused, err_torch = (
                float((y.float() - ref).pow(2).mean().sqrt())
                for y in (mlp(half, x, fused=True), half(x))
            )
        if not err_fused <= 1.25 * err_torch + 1e-6:
            raise RuntimeError(
                f"{dtype} is {err_fused:.2e} (RMS) from the float32 MLP, torch's {err_torch:.2e}"
            )

    return works_here(check, what="cuBLASLt GELU epilogue in the MLP")


def _half_on_cuda_with(device: torch.device, dtype: torch.dtype, module: str | None = None) -> bool:
    """Where the net's fused kernels may run at all: CUDA, half precision, and their Triton
    ``module`` importable (Triton installed) where they have one."""
    if device.type != "cuda" or dtype == torch.float32:
        return False
    return module is None or optional_module(module) is not None


@cache
def fused_norm_works(device: torch.device, dtype: torch.dtype, *, channels: int) -> bool:
    """Whether :func:`residual_norm`'s Triton kernel runs here (CUDA, half precision, Triton
    installed) and gives torch's numbers on a small problem of rows of ``channels``, once a
    process; a runner asks at load, before any capture."""
    if not _half_on_cuda_with(device, dtype, "vs_skipsr.models.residual_norm_triton"):
        return False

    def check() -> None:
        gen = torch.Generator().manual_seed(0)
        x, y = (torch.randn(37, channels, generator=gen).to(device, dtype) for _ in range(2))
        gate, shift, scale = (
            torch.randn(channels, generator=gen).to(device, dtype) for _ in range(3)
        )
        got = residual_norm(x, y, gate, (shift, scale), 1e-6, fused=True)
        want = residual_norm(x, y, gate, (shift, scale), 1e-6)
        for g, w in zip(got, want, strict=True):
            err = float((g.float() - w.float()).abs().max())
            if not err < 0.05:  # bf16 rounding of values within [-10, 10]
                raise RuntimeError(f"differs from torch's by {err}")

    return works_here(check, what="Triton residual norm")


@cache
def fused_head_works(device: torch.device, dtype: torch.dtype, *, channels: int) -> bool:
    """Whether the conv head's Triton passes (``head_triton.py``: bias + GELU, cells and the
    velocity; see :meth:`ConvHead.pixel_term`) run here (CUDA, half precision, Triton
    installed) and give torch's numbers on small problems of ``channels`` channels, once a
    process; a runner asks at load, before any capture."""
    if not _half_on_cuda_with(device, dtype, "vs_skipsr.models.head_triton"):
        return False

    def check() -> None:
        gen = torch.Generator().manual_seed(0)
        x, add = (
            (4 * torch.randn(3, channels, 4, 4, generator=gen))
            .to(device, dtype)
            .contiguous(memory_format=torch.channels_last)
            for _ in range(2)
        )
        bias = torch.randn(channels, generator=gen).to(device, dtype)
        want = F.gelu((x + add) + bias[:, None, None], approximate="tanh")
        got = _bias_gelu_(x.clone(), bias, add=add)
        if not torch.allclose(got.float(), want.float(), rtol=2.0**-6, atol=1e-2):
            err = float((got.float() - want.float()).abs().max())
            raise RuntimeError(f"bias + GELU differs from torch's by {err}")
        head = ConvHead(dim=8, patch=8, channels=3, width=channels, cell=4, halo=4)
        base = torch.rand(5, 3 * 16 * 16, generator=gen).to(device, dtype)
        if not torch.equal(head.cells(base, fused=True), head.cells(base)):
            raise RuntimeError("cells differ from torch's")
        state = torch.randn(5, 3 * 8 * 8, generator=gen).to(device)
        rows = torch.randn(5 * 2 * 2, 3 * 4 * 4, generator=gen).to(device, dtype)
        t = torch.full((1,), 0.75, device=device)
        got = _triton_module("head_triton").head_velocity(
            state, rows, t, noise_std=0.25, channels=3, patch=8, cell=4
        )
        want = torch.add(state, head.in_patch_order(rows).reshape(5, -1), alpha=-0.25) / 0.75
        if not torch.allclose(got, want, rtol=1e-6, atol=1e-6):
            raise RuntimeError(
                f"velocity differs from torch's by {float((got - want).abs().max())}"
            )

    return works_here(check, what="Triton conv-head passes")


def euler_update(state: Tensor, v: Tensor, *, steps: int) -> Tensor:
    """One Euler step down the flow, state - v / steps, as one kernel (a pass over the [K,
    3p²] float32 state costs as much as a block's norm). Here, not with the flow's other
    parts (``backends.base``), because :meth:`SRTransformer.velocity` can end with it."""
    return torch.add(state, v, alpha=-1.0 / steps)


def _time_divisor(t: Tensor) -> Tensor:
    """t as the velocity's divisor [B, 1], clamped away from 0."""
    return t.float().reshape(-1, 1).clamp_min(1e-3)


class SRTransformer(nn.Module):
    """Velocity net over kept tokens: (base patches with their halo, state patches, coords,
    t) -> velocity. ``base`` is [K, 3 (p+2 halo)²], ``state`` and the velocity [K, 3p²]."""

    def __init__(self, config: SRConfig) -> None:
        super().__init__()
        if config.dim % config.heads or (config.dim // config.heads) % 2:
            raise ValueError(
                f"SRConfig dim={config.dim}, heads={config.heads}: dim must split into heads "
                "of an even size (rotary positions rotate pairs)"
            )
        self.config = config
        if config.halo and config.head == "linear":
            raise ValueError(f"SRConfig halo={config.halo} needs head='conv'")
        d = config.token_dim
        self.embed = nn.Linear(config.base_dim + d, config.dim)
        self.t_embed = TimestepEmbedder(config.dim)
        self.blocks = nn.ModuleList(
            Block(config.dim, config.heads, config.mlp_ratio) for _ in range(config.depth)
        )
        if config.head == "linear":
            self.final: nn.Module = FinalLayer(config.dim, d)
        elif config.head == "conv":
            self.final = ConvHead(
                dim=config.dim,
                patch=config.patch,
                channels=config.channels,
                width=config.head_width,
                cell=config.head_cell,
                halo=config.halo,
            )
        else:
            raise ValueError(f"SRConfig head={config.head!r}: expected 'linear' or 'conv'")
        # the embedding's base columns in the conv head's cell order (_cell_columns)
        self._cells: tuple[tuple[object, ...], Tensor] | None = None
        self.initialize_weights()

    def initialize_weights(self) -> None:
        """Xavier linears, then zero every modulation gate and the output layer: a fresh
        block is the identity and a fresh net predicts v = 0, which keeps early training
        stable (adaLN-Zero)."""

        def _xavier(m: nn.Module) -> None:
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)

        self.apply(_xavier)
        nn.init.normal_(self.t_embed.mlp[0].weight, std=0.02)
        nn.init.normal_(self.t_embed.mlp[2].weight, std=0.02)
        for blk in self.blocks:
            nn.init.zeros_(blk.ada[-1].weight)
            nn.init.zeros_(blk.ada[-1].bias)
        if isinstance(self.final, ConvHead):
            self.final.zero_output_()
        else:
            nn.init.zeros_(self.final.ada[-1].weight)
            nn.init.zeros_(self.final.ada[-1].bias)
            nn.init.zeros_(self.final.linear.weight)
            nn.init.zeros_(self.final.linear.bias)

    @property
    def head_dim(self) -> int:
        return self.config.dim // self.config.heads

    def forward_attend(
        self,
        base: Tensor,
        state: Tensor,
        coords: Tensor,
        t: Tensor,
        attends: Sequence[Attend | RotatingAttend],
        *,
        fused_norm: bool = False,
        fused_head: bool = False,
        fused_mlp: bool = False,
    ) -> Tensor:
        """The net with attention supplied per partition (block i uses attends[i % len]);
        ``fused_norm``, ``fused_head``, ``fused_mlp`` (inference only): see
        :func:`residual_norm`, :meth:`ConvHead.pixel_term`, :func:`mlp`."""
        if _lean_kernels():
            features = self.base_features(base, coords, fused_head=fused_head)
            return self.velocity(
                features,
                state,
                t,
                attends,
                fused_norm=fused_norm,
                fused_head=fused_head,
                fused_mlp=fused_mlp,
            )
        cfg = self.config
        dt = self.embed.weight.dtype
        x = torch.cat(((base - 0.5), state / cfg.noise_std), dim=1)  # [K, 2*3p²]
        x = self.embed(x.to(dt))  # [K, C]
        rope = rope_tables(coords, self.head_dim, cfg.rope_base)  # [K, 1, D/2] x2
        pix = self.final.pixels(base.to(dt) - 0.5) if isinstance(self.final, ConvHead) else None
        out = self._decode(x, t, rope, pix, attends)
        r_hat = out.float() * cfg.noise_std  # [K, 3p²] predicted residual
        return (state.float() - r_hat) / _time_divisor(t)  # [K, 3p²]

    @torch.inference_mode()
    def base_features(
        self, base: Tensor, coords: Tensor, *, fused_head: bool = False
    ) -> BaseFeatures:
        """What every flow step of a window computes the same from its base and coords (see
        :class:`BaseFeatures`); :meth:`velocity` takes it, once per step. With a conv head
        the embedding reads the head's space-to-depth cells (:meth:`ConvHead.cells`) with its
        base columns reordered to match, so base - 0.5 is made once, in the head's layout.
        ``fused_head``: see :meth:`ConvHead.pixel_term`. Inference only."""
        cfg = self.config
        w = self.embed.weight  # [C, base_dim + token_dim]
        base = base.to(w.dtype)  # cast first, as the plain form does
        pix = None
        if isinstance(self.final, ConvHead):
            # [K, base_dim]: base - 0.5, cell by cell
            cells = self.final.cells(base, fused=fused_head)
            embedded = torch.addmm(self.embed.bias, cells, self._cell_columns().t())
            pix = self.final.pixel_term(cells, fused=fused_head)
        else:
            embedded = torch.addmm(self.embed.bias, base - 0.5, w[:, : cfg.base_dim].t())
        return BaseFeatures(
            embedded_base=embedded,
            pixels=pix,
            rope=rope_tables(coords, self.head_dim, cfg.rope_base),
        )

    def _cell_columns(self) -> Tensor:
        """The embedding's base columns [C, base_dim] in :meth:`ConvHead.cells`' order
        (cell row, cell column, channel, row and column in the cell), made again whenever
        the embedding's weight changes (see :meth:`ConvHead._split_weights`)."""
        w = self.embed.weight
        key = _params_key((w,))
        if self._cells is None or self._cells[0] != key:
            head, cfg = self.final, self.config
            gb, cell = head.base_patch // head.cell, head.cell
            with torch.no_grad():
                cols = w[:, : cfg.base_dim].reshape(-1, cfg.channels, gb, cell, gb, cell)
                cols = cols.permute(0, 2, 4, 1, 3, 5).reshape(w.shape[0], cfg.base_dim)
            self._cells = (key, cols.contiguous())
        return self._cells[1]

    @torch.inference_mode()
    def modulation(self, t: Tensor) -> Modulation:
        """The modulation of every block and the head at time ``t`` ([1]). Inference only."""
        temb = self.t_embed(t.reshape(-1))  # [1, C]
        shift, scale = self.final.ada(temb).chunk(2, dim=-1)
        return Modulation(
            blocks=tuple(blk.modulation(temb) for blk in self.blocks),
            head=(shift.reshape(-1), (1 + scale).reshape(-1)),
        )

    @torch.inference_mode()
    def velocity(
        self,
        features: BaseFeatures,
        state: Tensor,
        t: Tensor,
        attends: Sequence[Attend | RotatingAttend],
        *,
        modulation: Modulation | None = None,
        fused_norm: bool = False,
        fused_head: bool = False,
        fused_mlp: bool = False,
        euler_steps: int | None = None,
    ) -> Tensor:
        """:meth:`forward_attend` from the window's :meth:`base_features` (the same numbers to
        rounding): only the state's share of the embedding and what depends on the state and
        time is run; ``modulation``: :meth:`modulation` of the same ``t``, made beforehand;
        ``fused_norm``, ``fused_head``, ``fused_mlp``: see :func:`residual_norm`,
        :meth:`ConvHead.pixel_term`, :func:`mlp`. With ``euler_steps`` N: the state after one
        Euler step of an N-step flow instead (``euler_update`` of the velocity; with the
        head's passes fused, in the velocity's own pass). Inference only."""
        cfg = self.config
        w = self.embed.weight
        x = torch.addmm(  # embedded base + (state / noise_std) @ the state columns, one kernel
            features.embedded_base,
            state.to(w.dtype),
            w[:, cfg.base_dim :].t(),
            alpha=1.0 / cfg.noise_std,
        )
        mod = modulation if modulation is not None else self.modulation(t)
        out = self._decode_modulated(
            x,
            mod,
            features.rope,
            features.pixels,
            attends,
            fused_norm=fused_norm,
            fused_head=fused_head,
            fused_mlp=fused_mlp,
        )
        # (state - out * noise_std) / t in two kernels instead of four fp32 passes (one with
        # fused_head); the same numbers where noise_std is a power of two (0.25 in every preset:
        # the product is exact). A conv head's rows are read in patch order where they lie
        # (ConvHead.in_patch_order): state and the velocity are viewed in that shape
        if isinstance(self.final, ConvHead):
            if fused_head and t.numel() == 1:
                return _triton_module("head_triton").head_velocity(
                    state,
                    out,
                    t,
                    noise_std=cfg.noise_std,
                    channels=cfg.channels,
                    patch=cfg.patch,
                    cell=cfg.head_cell,
                    euler_steps=euler_steps,
                )
            out = self.final.in_patch_order(out)
        velocity = torch.empty(state.shape, dtype=torch.float32, device=state.device)
        torch.add(
            state.float().reshape(out.shape),
            out,
            alpha=-cfg.noise_std,
            out=velocity.view(out.shape),
        )
        velocity.div_(_time_divisor(t))
        if euler_steps is None:
            return velocity
        return euler_update(state, velocity, steps=euler_steps)

    def _decode_modulated(
        self,
        x: Tensor,
        mod: Modulation,
        rope: tuple[Tensor, Tensor],
        pix: Tensor | None,
        attends: Sequence[Attend | RotatingAttend],
        *,
        fused_norm: bool,
        fused_head: bool,
        fused_mlp: bool,
    ) -> Tensor:
        """:meth:`_decode` with the modulation given, each residual update joined to the norm
        after it (:func:`residual_norm`, one fused kernel where ``fused_norm``), the MLP's
        GELU in its first matmul where ``fused_mlp`` (:func:`mlp`) and the conv head's split
        form (:meth:`ConvHead.decode_split`): its numbers to rounding."""
        blocks = self.blocks
        shift, scale = mod.blocks[0].norm1
        h = F.layer_norm(x, (x.shape[1],), scale, shift, blocks[0].norm1.eps)
        for i, (blk, m) in enumerate(zip(blocks, mod.blocks, strict=True)):
            if i + 1 < len(blocks):
                after, eps = mod.blocks[i + 1].norm1, blocks[i + 1].norm1.eps
            else:
                after, eps = mod.head, self.final.norm.eps
            attended = blk.attn(h, rope, attends[i % len(attends)])
            x, h = residual_norm(x, attended, m.gate1, m.norm2, blk.norm2.eps, fused=fused_norm)
            y = mlp(blk.mlp, h, fused=fused_mlp)
            x, h = residual_norm(x, y, m.gate2, after, eps, fused=fused_norm)
        if isinstance(self.final, ConvHead):
            return self.final.decode_split(h, pix, fused=fused_head)  # pix: the pixel term
        return self.final.decode(h)

    def _decode(
        self,
        x: Tensor,
        t: Tensor,
        rope: tuple[Tensor, Tensor],
        pix: Tensor | None,
        attends: Sequence[Attend | RotatingAttend],
    ) -> Tensor:
        """Embedded tokens [K, C] -> the head's output [K, 3p²] (the residual / noise_std):
        velocity from the residual prediction (x0-parameterisation), so the net never has to
        copy the noise through its C-wide bottleneck, and one step from t = 1 lands on it."""
        temb = self.t_embed(t.reshape(-1))  # [1, C], or [K, C] for per-token t (training)
        for i, blk in enumerate(self.blocks):
            x = blk(x, temb, rope, attends[i % len(attends)])  # [K, C]
        if isinstance(self.final, ConvHead):
            return self.final(x, temb, pix)
        return self.final(x, temb)

    def forward(
        self, base: Tensor, state: Tensor, coords: Tensor, t: Tensor, part0: Tensor, part1: Tensor
    ) -> Tensor:
        """Exportable form: windows as padded index tensors [nW, L] (-1 = padding).

        base: [K, 3(p+2·halo)²], state: [K, 3p²] float; coords: [K, 3] int64; t: [1] float.
        Returns the velocity [K, 3p²] (float32); (state - t * velocity) is the residual estimate.
        """
        attends = (
            lambda q, k, v: padded_window_attention(q, k, v, part0),
            lambda q, k, v: padded_window_attention(q, k, v, part1),
        )
        return self.forward_attend(base, state, coords, t, attends)


def randomize_(model: nn.Module, *, seed: int = 0, std: float = 0.02) -> nn.Module:
    """Every weight of ``model`` drawn from N(0, std), in place, on the model's device: for
    benchmarks, engine shapes and tests, where a fresh net's zero-initialised output layers
    would make every output 0."""
    g = None
    with torch.no_grad():
        for p in model.parameters():
            if g is None:
                g = torch.Generator(device=p.device).manual_seed(seed)
            p.copy_(torch.randn(p.shape, generator=g, device=p.device, dtype=p.dtype) * std)
    return model


def random_sr(
    preset: str,
    *,
    seed: int = 0,
    std: float = 0.02,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
) -> SRTransformer:
    """A preset's net with random weights (see :func:`randomize_`), built on ``device``."""
    with torch.device(device or "cpu"):
        net = SRTransformer(PRESETS[preset])
    if dtype is not None:
        net = net.to(dtype)
    randomize_(net, seed=seed, std=std)
    return net.eval()
