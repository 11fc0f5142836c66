"""The torch backend: eager (or compiled) PyTorch on the CPU or a CUDA GPU."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from ..models.attention import (
    Attend,
    RotatingAttend,
    grouped_window_attention,
    packed_window_attention,
    padded_window_attention,
    triton_attention_unavailable,
    triton_attention_works,
    varlen_available,
    varlen_window_attention,
)
from ..models.mask import MaskNet
from ..models.sr import (
    ConvHead,
    Modulation,
    SRTransformer,
    fused_head_works,
    fused_mlp_works,
    fused_norm_works,
)
from ..tokens import Partition, add_to_tokens, gather_patches, kept_buckets, padded_tokens
from .base import StaticWindow, euler_flow, step_time
from .cuda_graphs import GraphCache, SRCall, WindowOps

__all__ = ["TorchBackend", "TorchRunner"]

log = logging.getLogger(__name__)

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


@dataclass(frozen=True, kw_only=True)
class TorchBackend:
    """PyTorch on ``device``. ``attention``: 'triton' (one Triton kernel that reads the kept
    tokens in place, CUDA, half precision), 'varlen' (torch's flash varlen, CUDA, half
    precision), 'padded' (windows padded to the longest, runs anywhere) or 'auto' (on CUDA in
    half precision Triton where its check passes, else varlen; on the CPU windows grouped by
    length, each group padded to its own longest; compiled: varlen).
    ``cuda_graphs`` replays the SR net as one CUDA graph per token/window bucket.
    ``compile`` (with cuda_graphs and varlen attention) captures torch.compile's fused kernels
    instead of eager ones: one compile for every token count (dynamic shapes), then the
    graphs as before; fewer, fused kernels is what a small net at small kept counts needs."""

    device: str = "cpu"
    dtype: Literal["fp32", "fp16", "bf16"] = "fp32"
    attention: Literal["auto", "padded", "triton", "varlen"] = "auto"
    cuda_graphs: bool = False
    compile: bool = False

    def load(self, *, sr: SRTransformer, mask: MaskNet | None) -> TorchRunner:
        log.info("torch backend: %s", self)
        return TorchRunner(self, sr=sr, mask=mask)


class TorchRunner:
    def __init__(self, spec: TorchBackend, *, sr: SRTransformer, mask: MaskNet | None) -> None:
        self.name = "torch"
        self.device = torch.device(spec.device)
        self.dtype = DTYPES[spec.dtype]
        self.sr_config = sr.config
        self.sr_net = sr.to(self.device, self.dtype).eval()
        self.mask_net = None if mask is None else mask.to(self.device).eval()
        self.has_mask = mask is not None
        half = self.dtype != torch.float32
        if spec.attention == "varlen" and not (varlen_available(self.device) and half):
            raise ValueError(
                f"attention='varlen' needs CUDA varlen attention and fp16/bf16; "
                f"got device={spec.device}, dtype={spec.dtype}"
            )
        head_dim = sr.config.dim // sr.config.heads
        if spec.attention == "triton":
            why = triton_attention_unavailable(self.device, self.dtype, head_dim=head_dim)
            if why is not None:
                raise ValueError(f"attention='triton': {why}")
        self.attention = _attention_form(spec, self.device, self.dtype, head_dim=head_dim)
        # the residual updates and norms as one Triton kernel (sr.residual_norm): decided
        # here, before any capture, as the attention is
        self.fused_norm = not spec.compile and fused_norm_works(
            self.device, self.dtype, channels=sr.config.dim
        )
        # the conv head's Triton passes (ConvHead.pixel_term), decided the same way
        self.fused_head = (
            not spec.compile
            and isinstance(sr.final, ConvHead)
            and fused_head_works(self.device, self.dtype, channels=sr.config.head_width)
        )
        # the MLP's GELU as its first matmul's epilogue (sr.mlp), decided the same way
        self.fused_mlp = not spec.compile and fused_mlp_works(
            self.device, self.dtype, channels=sr.config.dim
        )
        # packed partitions (order + cu_seqlens), no padded [nW, L] form
        self.packed = self.attention in ("varlen", "triton")
        # data-dependent groups: eager CPU only (a CUDA graph needs static shapes)
        self.use_grouped = self.attention == "grouped"
        self.graphs: GraphCache | None = None
        self._compiled: Callable[..., Tensor] | None = None
        if spec.compile:
            if not (spec.cuda_graphs and self.attention == "varlen"):
                raise ValueError(
                    f"compile=True needs cuda_graphs=True and varlen attention (CUDA, fp16/bf16); "
                    f"got device={spec.device}, dtype={spec.dtype}, cuda_graphs={spec.cuda_graphs}"
                )
            self._compiled = torch.compile(_packed_forward, dynamic=True)
        if spec.cuda_graphs:
            if self.device.type != "cuda":
                raise ValueError(f"cuda_graphs=True needs a CUDA device, not {spec.device!r}")
            window_volume = sr.config.window[0] * sr.config.window[1] * sr.config.window[2]
            self.graphs = GraphCache(
                self._graph_fn,
                device=self.device,
                flow_fn=self._graph_flow_fn,
                window_volume=window_volume,
                with_part=not self.packed,
            )
        # a window's kept tokens, gather, flow and scatter by two graph replays after its sync
        # (packed partitions only: the padded [nW, L] form needs the counts on the host)
        self.static_window: StaticWindow | None = None
        if self.graphs is not None and self.packed:
            self.static_window = self._static_window
        # CUDA wants few distinct shapes: a captured graph needs static ones, and eager cuDNN
        # convs (the head's) build a new plan for every new batch size, so a kept count that
        # changes every window cost more host time than the skipped work saved (py-spy on an
        # H100: the head's convs took 2.5x the samples of a dense run). The pipeline pads K
        # to geometric buckets there; the CPU takes any count as it is.
        self.wants_buckets = self.device.type == "cuda"
        self.base_dtype = self.dtype  # gathered in it: no cast of the patches a window
        self._prepared: set[tuple[tuple[int, int, int], bool, int | None]] = set()
        self._schedules: dict[int, tuple[tuple[Tensor, Modulation], ...]] = {}
        self._ops: WindowOps | None = None

    @torch.inference_mode()
    def prepare(
        self, *, grid: tuple[int, int, int], dense: bool = False, steps: int | None = None
    ) -> None:
        """With CUDA graphs, capture every bucket of ``grid`` now, largest first (see
        GraphCache.prepare): graphs of whole ``steps``-step flows, or of single ``sr`` calls
        without ``steps``; later calls for the same arguments return at once."""
        if self.graphs is None or (grid, dense, steps) in self._prepared:
            return
        self._prepared.add((grid, dense, steps))
        if steps:
            self._schedule(steps)  # before the captures, which read it
        cfg, dev = self.sr_config, self.device
        total = grid[0] * grid[1] * grid[2]
        buckets = [total] if dense else kept_buckets(total)[::-1]

        def calls() -> Iterator[SRCall]:
            for b in buckets:  # example inputs of the pipeline's dtypes, built one at a time
                _, coords, parts = padded_tokens(
                    torch.arange(b, device=dev),
                    bucket=b,
                    grid=grid,
                    window=cfg.window,
                    shift=cfg.shift,
                    static_len=True,
                )
                base = torch.zeros(b, cfg.base_dim, dtype=self.dtype, device=dev)
                state = torch.zeros(b, cfg.token_dim, device=dev)
                yield base, state, coords, torch.ones(1, device=dev), parts

        t0 = time.perf_counter()
        done = self.graphs.prepare(calls(), count=len(buckets), steps=steps)
        if self.static_window is not None and steps:
            done += self.graphs.prepare_windows(
                buckets=buckets,
                grid=grid,
                window=cfg.window,
                shift=cfg.shift,
                steps=steps,
                ops=self._window_ops(),
            )
        log.info(
            "prepared %d CUDA graphs (%s) for token grid %s (%d buckets) in %.2f s",
            done,
            f"{steps}-step flows" if steps else "single calls",
            grid,
            len(buckets),
            time.perf_counter() - t0,
        )

    @torch.inference_mode()
    def _static_window(
        self,
        keep: Tensor,
        base: Tensor,
        *,
        kept: int,
        bucket: int,
        grid: tuple[int, int, int],
        steps: int,
        seed: int,
    ) -> None:
        """The runner's ``static_window`` with CUDA graphs: GraphCache.run_window."""
        cfg = self.sr_config
        assert self.graphs is not None
        self._schedule(steps)  # outside any capture
        self.graphs.run_window(
            keep,
            base,
            torch.full((1,), seed, dtype=torch.long, device=self.device),  # no host copy
            kept=kept,
            bucket=bucket,
            grid=grid,
            window=cfg.window,
            shift=cfg.shift,
            steps=steps,
            ops=self._window_ops(),
        )

    def _window_ops(self) -> WindowOps:
        """The model's share of GraphCache.run_window: the pipeline's gather, noise and scatter
        for this net (made once; a graph captured with them keeps them)."""
        if self._ops is None:
            from ..pipeline import flow_start  # the pipeline imports the backends

            cfg, dev = self.sr_config, self.device

            def gather(frames: Tensor, coords: Tensor, out: Tensor) -> None:
                gather_patches(
                    frames, coords, patch=cfg.patch, halo=cfg.halo, dtype=out.dtype, out=out
                )

            def noise(index: Tensor, seed: Tensor) -> Tensor:
                return flow_start(index, config=cfg, seed=seed)

            def scatter(frames: Tensor, rows: Tensor, coords: Tensor) -> None:
                add_to_tokens(frames, rows, coords, patch=cfg.patch)

            def examples(n: int) -> tuple[Tensor, Tensor]:
                base = torch.zeros(n, cfg.base_dim, dtype=self.dtype, device=dev)
                return base, torch.zeros(n, cfg.token_dim, device=dev)

            self._ops = WindowOps(gather=gather, noise=noise, scatter=scatter, examples=examples)
        return self._ops

    @torch.inference_mode()
    def mask(self, lr: Tensor) -> Tensor:
        if self.mask_net is None:
            raise RuntimeError("this runner has no mask net")
        return self.mask_net(lr.float()).float()

    @torch.inference_mode()
    def sr(
        self,
        base: Tensor,
        state: Tensor,
        coords: Tensor,
        t: Tensor,
        partitions: tuple[Partition, Partition],
    ) -> Tensor:
        # the net reads base in its own precision anyway: casting here halves what a captured
        # graph keeps as its static input (4 x 3p² values a token with the halo)
        base = base.to(self.dtype)
        if self.graphs is not None:
            return self.graphs(base, state, coords, t, partitions)
        return self._eager(base, state, coords, t, partitions)

    @torch.inference_mode()
    def flow(
        self,
        base: Tensor,
        state: Tensor,
        coords: Tensor,
        partitions: tuple[Partition, Partition],
        *,
        steps: int,
    ) -> Tensor:
        """With CUDA graphs the window's whole flow is one graph replay (GraphCache.flow):
        per step a copy of nine inputs, a clone and a cast cost the host more than a small
        net's skipped step costs the GPU. Either way the base's share of the net is computed
        once for all steps (SRTransformer.base_features)."""
        base = base.to(self.dtype)  # once, not once a step
        self._schedule(steps)  # outside any capture
        if self.graphs is not None:
            return self.graphs.flow(base, state, coords, partitions, steps=steps)
        return self._flow(base, state, coords, partitions, steps=steps)

    def _flow(
        self,
        base: Tensor,
        state: Tensor,
        coords: Tensor,
        partitions: tuple[Partition, Partition],
        *,
        steps: int,
    ) -> Tensor:
        """:func:`euler_flow` of the net, its base features computed once (compiled: the
        traced forward each step, as that is what torch.compile fuses)."""
        if self._compiled is not None:
            return euler_flow(self._eager, base, state, coords, partitions, steps=steps)
        attends = self._attends(partitions, rows=base.shape[0])
        features = self.sr_net.base_features(base, coords, fused_head=self.fused_head)
        for t, modulation in self._schedule(steps):  # euler_flow's steps, numbers and all
            state = self.sr_net.velocity(  # the velocity and its Euler step (euler_update)
                features,
                state,
                t,
                attends,
                modulation=modulation,
                fused_norm=self.fused_norm,
                fused_head=self.fused_head,
                fused_mlp=self.fused_mlp,
                euler_steps=steps,
            )
        return state

    def _schedule(self, steps: int) -> tuple[tuple[Tensor, Modulation], ...]:
        """Each step's time [1] and the net's modulation there (SRTransformer.modulation),
        made once a step count: graphs read them as constants. ``flow`` and ``prepare`` ask
        before any capture; made inside one, the tensors would be the graph's, written only
        when it replays, so then they are made for that graph alone and not kept."""
        made = self._schedules.get(steps)
        if made is None:
            with torch.inference_mode():
                times = (
                    torch.full((1,), step_time(i, steps=steps), device=self.device)
                    for i in range(steps)
                )
                made = tuple((t, self.sr_net.modulation(t)) for t in times)
            cuda = self.device.type == "cuda"
            if not (cuda and torch.cuda.is_current_stream_capturing()):
                if cuda:  # written on this stream, read by windows on any
                    torch.cuda.current_stream(self.device).synchronize()
                self._schedules[steps] = made
        return made

    def _partitions(self, flat: tuple[Tensor, ...]) -> tuple[Partition, Partition]:
        """A graph's flat partition inputs (order, cu_seqlens[, part] each) as Partitions."""
        v = self.graphs.window_volume  # type: ignore[union-attr]
        n = 3 if self.graphs.with_part else 2  # type: ignore[union-attr]
        return tuple(  # type: ignore[return-value]
            Partition(
                order=flat[i],
                cu_seqlens=flat[i + 1],
                max_len=v,
                padded=flat[i + 2] if n == 3 else None,
            )
            for i in range(0, len(flat), n)
        )

    def _graph_fn(
        self, base: Tensor, state: Tensor, coords: Tensor, t: Tensor, *flat: Tensor
    ) -> Tensor:
        return self._eager(base, state, coords, t, self._partitions(flat))

    def _graph_flow_fn(
        self, base: Tensor, state: Tensor, coords: Tensor, t: Tensor, *flat: Tensor, steps: int
    ) -> Tensor:
        """The whole flow of a window, for one graph (t is unused: each step's time is a
        constant of the graph)."""
        return self._flow(base, state, coords, self._partitions(flat), steps=steps)

    def _attends(
        self, partitions: tuple[Partition, Partition], *, rows: int
    ) -> tuple[Attend | RotatingAttend, ...]:
        """Attention per partition in the runner's form (triton, varlen, grouped or padded)."""
        if self.attention == "triton":  # (it applies the rotary positions too)
            return tuple(RotatingAttend(p) for p in partitions)
        if self.attention == "varlen":
            covered = tuple(p.cover(rows) for p in partitions)
            return tuple(
                (lambda q, k, v, p=p: varlen_window_attention(q, k, v, p)) for p in covered
            )
        if self.use_grouped:
            return tuple(
                (lambda q, k, v, p=p: grouped_window_attention(q, k, v, p)) for p in partitions
            )
        return tuple(
            (lambda q, k, v, p=p: padded_window_attention(q, k, v, p.part)) for p in partitions
        )

    def _eager(
        self,
        base: Tensor,
        state: Tensor,
        coords: Tensor,
        t: Tensor,
        partitions: tuple[Partition, Partition],
    ) -> Tensor:
        if self._compiled is not None:
            # under the graphs: max_len is the window volume for both
            p0, p1 = (p.cover(base.shape[0]) for p in partitions)
            return self._compiled(
                self.sr_net,
                base,
                state,
                coords,
                t,
                p0.order,
                p0.cu_seqlens,
                p0.inverse,
                p1.order,
                p1.cu_seqlens,
                p1.inverse,
                max_len=p0.max_len,
            )
        attends = self._attends(partitions, rows=base.shape[0])
        return self.sr_net.forward_attend(
            base,
            state,
            coords,
            t,
            attends,
            fused_norm=self.fused_norm,
            fused_head=self.fused_head,
            fused_mlp=self.fused_mlp,
        )


def _attention_form(
    spec: TorchBackend, device: torch.device, dtype: torch.dtype, *, head_dim: int
) -> Literal["triton", "varlen", "grouped", "padded"]:
    """The attention a runner uses for ``spec.attention`` (see :class:`TorchBackend`)."""
    if spec.attention in ("padded", "varlen", "triton"):
        return spec.attention
    half = dtype != torch.float32
    if (
        not spec.compile
        and triton_attention_unavailable(device, dtype, head_dim=head_dim) is None
        and triton_attention_works(device, dtype, head_dim=head_dim)
    ):
        return "triton"
    if half and varlen_available(device):
        return "varlen"
    return "grouped" if device.type == "cpu" else "padded"


def _packed_forward(
    net: SRTransformer,
    base: Tensor,
    state: Tensor,
    coords: Tensor,
    t: Tensor,
    order0: Tensor,
    cu0: Tensor,
    inverse0: Tensor,
    order1: Tensor,
    cu1: Tensor,
    inverse1: Tensor,
    *,
    max_len: int,
) -> Tensor:
    """The net over packed partitions given as plain tensors, for torch.compile to trace."""

    def attend(order: Tensor, cu: Tensor, inverse: Tensor) -> Callable[..., Tensor]:
        return lambda q, k, v: packed_window_attention(
            q, k, v, order=order, cu_seqlens=cu, max_len=max_len, inverse=inverse
        )

    return net.forward_attend(
        base, state, coords, t, (attend(order0, cu0, inverse0), attend(order1, cu1, inverse1))
    )
