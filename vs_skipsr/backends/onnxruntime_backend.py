"""The onnxruntime backend: the exported ONNX graphs, run by onnxruntime.

It runs exactly the graphs TensorRT builds from, so it is how the tests check the export's
numbers on a machine without a GPU, and it serves users who have onnxruntime but no torch CUDA
build. The CPU provider always works; with ``device='cuda:N'`` the CUDA provider runs on torch
CUDA tensors bound in place (IO binding), with no host round trip.

Graphs are exported in memory at load (fp32, under a second for the shipped model), so models
over 2 GB (protobuf's limit) are out of scope here: use TensorRT for those.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from ..export import MASK_INPUTS, MASK_OUTPUTS, SR_INPUTS, SR_OUTPUTS, onnx_bytes
from ..models.mask import MaskNet
from ..models.sr import SRTransformer
from ..tokens import Partition
from .base import EulerFlow

__all__ = ["OnnxRuntimeBackend", "OnnxRuntimeRunner", "ort_providers"]

log = logging.getLogger(__name__)

_NP_DTYPES = {torch.float32: np.float32, torch.int64: np.int64}


def ort_providers() -> list[str]:
    """onnxruntime's available execution providers ([] when onnxruntime is not installed)."""
    try:
        import onnxruntime as ort
    except ImportError:
        return []
    return list(ort.get_available_providers())


@dataclass(frozen=True, kw_only=True)
class OnnxRuntimeBackend:
    """onnxruntime on ``device`` ('cpu' or 'cuda:N', which needs the CUDA provider), fp32.
    ``threads``: intra-op threads (0 lets onnxruntime decide)."""

    device: str = "cpu"
    threads: int = 0

    def load(self, *, sr: SRTransformer, mask: MaskNet | None) -> OnnxRuntimeRunner:
        log.info("onnxruntime backend: device=%s threads=%d", self.device, self.threads)
        return OnnxRuntimeRunner(self, sr=sr, mask=mask)


class OnnxRuntimeRunner(EulerFlow):
    """Implements :class:`~vs_skipsr.backends.base.Runner` with two InferenceSessions."""

    def __init__(
        self, spec: OnnxRuntimeBackend, *, sr: SRTransformer, mask: MaskNet | None
    ) -> None:
        import onnxruntime as ort

        self.name = "onnxruntime"
        self.device = torch.device(spec.device)
        self.sr_config = sr.config
        self.has_mask = mask is not None
        self.wants_buckets = False
        self.base_dtype = torch.float32  # the exported graph's input
        if self.device.type == "cuda":
            if "CUDAExecutionProvider" not in ort.get_available_providers():
                raise ValueError(
                    f"onnxruntime backend device={spec.device!r}: this onnxruntime has no "
                    f"CUDAExecutionProvider (it has {ort.get_available_providers()})"
                )
            providers: list[object] = [
                ("CUDAExecutionProvider", {"device_id": self.device.index or 0}),
                "CPUExecutionProvider",
            ]
        else:
            providers = ["CPUExecutionProvider"]
        options = ort.SessionOptions()
        if spec.threads:
            options.intra_op_num_threads = spec.threads
        self._sr = ort.InferenceSession(onnx_bytes(sr), options, providers=providers)
        self._mask = (
            None
            if mask is None
            else ort.InferenceSession(onnx_bytes(mask), options, providers=providers)
        )

    def _run(
        self, session: object, feeds: dict[str, Tensor], out_name: str, out_shape: tuple[int, ...]
    ) -> Tensor:
        if self.device.type == "cpu":
            arrays = {k: v.detach().cpu().contiguous().numpy() for k, v in feeds.items()}
            (out,) = session.run([out_name], arrays)  # type: ignore[attr-defined]
            return torch.from_numpy(out)
        # CUDA: bind torch's buffers in place, the output too (fp32, shape known up front)
        index = self.device.index or 0
        binding = session.io_binding()  # type: ignore[attr-defined]
        keep = []
        for name, x in feeds.items():
            x = x.to(self.device).contiguous()
            keep.append(x)
            binding.bind_input(
                name, "cuda", index, _NP_DTYPES[x.dtype], tuple(x.shape), x.data_ptr()
            )
        out_t = torch.empty(out_shape, dtype=torch.float32, device=self.device)
        binding.bind_output(out_name, "cuda", index, np.float32, out_shape, out_t.data_ptr())
        torch.cuda.current_stream(self.device).synchronize()  # onnxruntime runs on its own stream
        session.run_with_iobinding(binding)  # type: ignore[attr-defined]
        return out_t

    def prepare(
        self, *, grid: tuple[int, int, int], dense: bool = False, steps: int | None = None
    ) -> None:
        """Nothing: a session takes any token count."""

    @torch.inference_mode()
    def mask(self, lr: Tensor) -> Tensor:
        if self._mask is None:
            raise RuntimeError("this runner has no mask net")
        shape = (lr.shape[0], 1, lr.shape[2], lr.shape[3])
        return self._run(self._mask, {MASK_INPUTS[0]: lr.float()}, MASK_OUTPUTS[0], shape)

    @torch.inference_mode()
    def sr(
        self,
        base: Tensor,
        state: Tensor,
        coords: Tensor,
        t: Tensor,
        partitions: tuple[Partition, Partition],
    ) -> Tensor:
        values = (
            base.float(),
            state.float(),
            coords.long(),
            t.float().reshape(1),
            partitions[0].part.long(),
            partitions[1].part.long(),
        )
        feeds = dict(zip(SR_INPUTS, values, strict=True))
        return self._run(self._sr, feeds, SR_OUTPUTS[0], tuple(base.shape))
