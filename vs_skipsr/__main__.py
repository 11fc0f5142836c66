"""Command line: ``python -m vs_skipsr {export,info,bench}``.

- ``export`` writes the ONNX graphs, or builds (and caches) the TensorRT engines a script
  will need, so the first frame of a real encode does not wait for a build.
- ``info`` reports what is cached, which TensorRT module and GPUs are here, onnxruntime's
  providers, and which backends can run on this machine.
- ``bench`` times the SR net against the kept fraction (the full suite is scripts/bench.py).

Progress and messages go to stderr through ``logging``; ``info`` prints its report to stdout.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from .export import (
    EngineCache,
    ProfileSpec,
    default_engine_dir,
    export_mask_onnx,
    export_sr_onnx,
    prepare_engines,
    trt_available,
    trt_runs_on,
    trt_version,
)
from .models.mask import MASK_PRESETS, MaskNet
from .models.sr import PRESETS, SRTransformer, random_sr, randomize_

if TYPE_CHECKING:
    from .backends.torch_backend import TorchBackend, TorchRunner

__all__ = ["main"]

log = logging.getLogger("vs_skipsr")


def _size(text: str) -> tuple[int, int]:
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"size {text!r}: expected WxH, e.g. 1920x1080") from None
    if w < 1 or h < 1:
        raise argparse.ArgumentTypeError(f"size {text!r}: both sides must be positive")
    return w, h


def _fractions(text: str) -> tuple[float, ...]:
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"profiles {text!r}: expected e.g. 0.25,0.5,1.0") from None
    if any(not 0 < v <= 1 for v in values) or list(values) != sorted(set(values)):
        raise argparse.ArgumentTypeError(f"profiles {text!r}: increasing fractions in (0, 1]")
    return values


def _load_models(args: argparse.Namespace) -> tuple[SRTransformer, MaskNet | None]:
    from .models.weights import DEFAULT_MASK_WEIGHTS, DEFAULT_SR_WEIGHTS, load_mask, load_sr

    if args.preset is not None:
        sr = random_sr(args.preset)
        log.info("random-weights SR net, preset %r", args.preset)
    else:
        sr = load_sr(args.sr_weights or DEFAULT_SR_WEIGHTS)
    mask: MaskNet | None = None
    if not args.no_mask:
        if args.mask_weights is not None or (
            args.preset is None and DEFAULT_MASK_WEIGHTS.is_file()
        ):
            mask = load_mask(args.mask_weights or DEFAULT_MASK_WEIGHTS)
        else:
            mask = MaskNet(MASK_PRESETS["default"]).eval()
            randomize_(mask, seed=1)
            log.info("random-weights mask net")
    return sr, mask


def _precision(args: argparse.Namespace) -> str:
    return "bf16" if args.bf16 else "fp16" if args.fp16 else "fp32"


def cmd_export(args: argparse.Namespace) -> int:
    sr, mask = _load_models(args)
    precision = _precision(args)
    out = Path(args.out) if args.out else default_engine_dir()
    if args.backend == "onnx":
        out.mkdir(parents=True, exist_ok=True)
        sr_path = out / f"sr-{precision}.onnx"
        export_sr_onnx(sr, sr_path, dtype=precision)  # type: ignore[arg-type]
        log.info("wrote %s", sr_path)
        if mask is not None:
            mask_path = out / f"mask-{precision}.onnx"
            export_mask_onnx(mask, mask_path, dtype=precision)  # type: ignore[arg-type]
            log.info("wrote %s", mask_path)
        return 0
    trt, why = trt_available()
    if trt is None:
        log.error("export --backend trt: %s", why)
        return 1
    width, height = args.max_size
    spec = ProfileSpec.for_config(
        sr.config,
        frames=args.frames or sr.config.window[0],
        height=height,
        width=width,
        scale=args.scale,
        buckets=args.profiles,
    )
    log.info(
        "engines for windows of %d frames up to %dx%d (x%d): %d tokens, SR profiles K %s",
        spec.frames,
        width,
        height,
        spec.scale,
        spec.total_tokens,
        [r[2] for r in spec.k_ranges()],
    )
    device_index = args.device if torch.cuda.is_available() else None
    records = prepare_engines(
        sr=sr,
        mask=mask,
        spec=spec,
        precision=precision,  # type: ignore[arg-type]
        cache=EngineCache(out),
        device_index=device_index,
    )
    for rec in records.values():
        log.info("%s: %s (%.1f MiB)", rec.name, rec.path, len(rec.data) / 2**20)
    return 0


def _report_engines(directory: Path) -> list[str]:
    lines = [f"engine folder: {directory}"]
    entries = list(EngineCache(directory).entries())
    if not entries:
        lines.append("  (no engines cached)")
    for e in entries:
        m = e.meta
        parts = m.get("parts", {})
        size = e.engine.stat().st_size if e.engine.is_file() else 0
        ok = "ok" if size == m.get("size") else "SIZE MISMATCH (will be rebuilt)"
        lines.append(
            f"  {e.engine.name}: {size / 2**20:.1f} MiB {ok}; key {str(m.get('key', '?'))[:16]}; "
            f"{parts.get('trt_module', '?')} {parts.get('trt_version', '?')}; "
            f"{parts.get('precision', '?')}; gpu {parts.get('gpu', '?')}; "
            f"{m.get('num_profiles', '?')} profile(s); built {m.get('created', '?')}"
        )
    return lines


def cmd_info(args: argparse.Namespace) -> int:
    from .backends.onnxruntime_backend import ort_providers
    from .backends.select import autoselect
    from .backends.tensorrt_backend import tensorrt_unavailable_reason

    lines = _report_engines(Path(args.engine_dir) if args.engine_dir else default_engine_dir())
    trt, why = trt_available()
    lines.append(f"tensorrt: {trt.__name__ + ' ' + trt_version(trt) if trt else why}")
    lines.append(f"torch: {torch.__version__}, CUDA build {torch.version.cuda}")
    if torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            cap = torch.cuda.get_device_capability(i)
            runs = "" if trt is None else f"; {trt.__name__} runs here: {trt_runs_on(trt, cap)}"
            lines.append(f"  cuda:{i} {torch.cuda.get_device_name(i)} sm_{cap[0]}{cap[1]}{runs}")
    else:
        lines.append("  no CUDA device visible to torch")
    providers = ort_providers()
    lines.append(f"onnxruntime providers: {', '.join(providers) if providers else 'not installed'}")
    trt_why = tensorrt_unavailable_reason(args.device)
    backends = {
        "torch cpu": "yes",
        "torch cuda": "yes" if torch.cuda.is_available() else "no (no CUDA device)",
        "onnxruntime cpu": "yes" if providers else "no (not installed)",
        "onnxruntime cuda": "yes"
        if "CUDAExecutionProvider" in providers and torch.cuda.is_available()
        else "no",
        "tensorrt": "yes" if trt_why is None else f"no ({trt_why})",
    }
    lines.append("backends runnable here:")
    lines += [f"  {k}: {v}" for k, v in backends.items()]
    chosen = autoselect(device_index=args.device)
    lines.append(f"auto picks: {chosen}")
    lines += _kernel_report(chosen)
    print("\n".join(lines))
    return 0


def _kernel_report(chosen: object) -> list[str]:
    """Which window attention, residual norms, conv-head passes and MLP GELU the chosen
    backend runs the shipped SR net with, which gather reads the kept tokens and which
    kernels convert the colour on the device. For torch
    the runner is built as skipsr() builds it, so on a GPU this is the kernels' own checks
    (compile and compare, a second or two), not a guess."""
    from .backends.torch_backend import TorchBackend
    from .models.weights import DEFAULT_SR_WEIGHTS, load_sr

    if not isinstance(chosen, TorchBackend):
        exported = "the exported net's"
        index = getattr(chosen, "device_index", None)  # TensorRT's; onnxruntime's is a device
        device = torch.device(f"cuda:{index}" if index is not None else chosen.device)
        return [
            f"window attention there, shipped model: {exported} (windows padded, a key mask)",
            f"residual norms there: {exported} (its runtime fuses what it can)",
            f"conv head's passes there: {exported}",
            f"MLP's GELU there: {exported}",
            _gather_line(device),
            _colour_line(device),
        ]
    runner = chosen.load(sr=load_sr(DEFAULT_SR_WEIGHTS), mask=None)
    norms = "triton (one kernel a residual update and norm)" if runner.fused_norm else "torch's"
    head = (
        "triton (a conv's bias + GELU, the cells, the velocity)" if runner.fused_head else "torch's"
    )
    gelu = "cuBLASLt (its first matmul's epilogue)" if runner.fused_mlp else "torch's"
    return [
        f"window attention there, shipped model: {_attention_form(runner, chosen)}",
        f"residual norms there: {norms}",
        f"conv head's passes there: {head}",
        f"MLP's GELU there: {gelu}",
        _gather_line(runner.device),
        _colour_line(runner.device),
    ]


def _gather_line(device: torch.device) -> str:
    """The kept tokens' gather, which the pipeline runs whatever the backend: decided on a
    CUDA device by its check at first use, made here."""
    from .tokens import triton_gather_works

    if triton_gather_works(device):
        return "kept tokens' gather there: triton (one kernel, in the net's dtype)"
    return "kept tokens' gather there: torch's"


def _colour_line(device: torch.device) -> str:
    """The device colour conversion (device_color), whatever the backend: decided on a CUDA
    device by its check, made here."""
    from .color import triton_color_works

    if triton_color_works(device):
        return "device colour conversion there: triton (three kernels)"
    return "device colour conversion there: torch ops"


def _attention_form(runner: TorchRunner, chosen: TorchBackend) -> str:
    form = runner.attention
    if form == "triton":
        return "triton (the Triton kernel passed its check here)"
    if chosen.device.startswith("cuda"):
        from .models.attention import triton_attention_unavailable

        cfg = runner.sr_config
        why = triton_attention_unavailable(
            runner.device, runner.dtype, head_dim=cfg.dim // cfg.heads
        )
        return f"{form} (Triton: {why or 'failed its check here, see the log'})"
    return f"{form} (the CPU's form: windows grouped by length)" if form == "grouped" else form


def cmd_bench(args: argparse.Namespace) -> int:
    """SR net time against the kept fraction on this machine (torch backend)."""
    from .backends.torch_backend import TorchBackend
    from .benchmark import FRACTIONS, format_table, scaling_table
    from .models.weights import DEFAULT_SR_WEIGHTS, load_sr

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.preset:
        net, label = random_sr(args.preset), f"preset {args.preset} (random weights)"
    else:
        net, label = load_sr(args.sr_weights or DEFAULT_SR_WEIGHTS), "shipped weights"
    dtype = args.dtype or ("bf16" if args.device.startswith("cuda") else "fp32")
    spec = TorchBackend(
        device=args.device, dtype=dtype, attention=args.attention, cuda_graphs=args.cuda_graphs
    )
    runner = spec.load(sr=net, mask=None)
    frames = args.frames or net.config.window[0]
    rows = scaling_table(
        runner,
        size=args.size,
        frames=frames,
        fractions=FRACTIONS,
        reps=args.reps,
        bucketed=args.cuda_graphs,
    )
    dev = runner.device
    where = (
        torch.cuda.get_device_name(dev)
        if dev.type == "cuda"
        else (f"CPU, {torch.get_num_threads()} threads")
    )
    print(f"SR net alone, {label}, {spec}, {where}")
    print(
        f"window of {frames} x {args.size[0]}x{args.size[1]} output, {rows[-1].tokens} tokens,"
        f" one flow step"
    )
    print(format_table(rows))
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m vs_skipsr", description=__doc__.split("\n")[0])
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging (TensorRT's too)")
    sub = p.add_subparsers(dest="command", required=True)

    e = sub.add_parser("export", help="write ONNX graphs or build the TensorRT engines")
    e.add_argument("--backend", choices=("trt", "onnx"), default="trt")
    prec = e.add_mutually_exclusive_group()
    prec.add_argument("--fp16", action="store_true", help="half precision (the usual choice)")
    prec.add_argument("--bf16", action="store_true", help="bfloat16 precision")
    e.add_argument("--sr-weights", type=Path, help="SR weights (default: the shipped ones)")
    e.add_argument("--mask-weights", type=Path, help="mask weights (default: the shipped ones)")
    e.add_argument("--no-mask", action="store_true", help="skip the mask net")
    e.add_argument("--preset", choices=sorted(PRESETS), help="random weights of a preset config")
    e.add_argument("--max-size", type=_size, default=(1920, 1080), help="output WxH to cover")
    e.add_argument("--frames", type=int, default=None, help="frames per window (default: model's)")
    e.add_argument("--scale", type=int, default=2, choices=(2, 3, 4))
    e.add_argument(
        "--profiles",
        type=_fractions,
        default=(0.25, 0.5, 1.0),
        help="kept-token buckets as fractions of a window's tokens",
    )
    e.add_argument("--device", type=int, default=0, help="CUDA device the engines are for")
    e.add_argument("--out", help="folder (default: $SKIPSR_ENGINE_DIR or engines/)")
    e.set_defaults(func=cmd_export)

    i = sub.add_parser("info", help="what is cached and what this machine can run")
    i.add_argument("--engine-dir", help="folder (default: $SKIPSR_ENGINE_DIR or engines/)")
    i.add_argument("--device", type=int, default=0)
    i.set_defaults(func=cmd_info)

    b = sub.add_parser("bench", help="SR net time against the kept fraction (torch backend)")
    b.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    b.add_argument("--dtype", choices=("fp32", "fp16", "bf16"), default=None)
    b.add_argument("--attention", choices=("auto", "padded", "triton", "varlen"), default="auto")
    b.add_argument("--cuda-graphs", action="store_true")
    b.add_argument("--size", type=_size, default=(640, 360), help="output WxH of the window")
    b.add_argument("--frames", type=int, default=None, help="frames per window (default: model's)")
    b.add_argument("--preset", choices=sorted(PRESETS), help="random weights of a preset config")
    b.add_argument("--sr-weights", type=Path, help="SR weights (default: the shipped ones)")
    b.add_argument("--reps", type=int, default=5)
    b.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    b.set_defaults(func=cmd_bench)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        stream=sys.stderr,
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(message)s",
    )
    try:
        return int(args.func(args))
    except (OSError, RuntimeError, ValueError, ImportError) as e:  # WeightsError is a ValueError
        log.error("%s: %s", args.command, e)
        return 1


if __name__ == "__main__":
    sys.exit(main())
