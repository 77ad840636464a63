"""Model FLOPs utilisation: the training FLOPs a model's architecture needs per token, over the device's peak.

FLOPs per token (PaLM appendix B, as nanoGPT): ``6 * N + 12 * L * d * T`` — 6 FLOPs per weight of every matrix
multiply (forward 2, backward 4; ``N`` counts the weights of the ``Linear``/``Conv1D`` layers and the LM head, not
the embedding lookups) plus attention's scores and weighted sums (``L`` layers, width ``d``, sequence ``T``), without
the causal mask's saving. Recomputation, optimizer and elementwise work are not counted: it is *model* FLOPs.

Peaks (dense, no sparsity; TFLOPS) for the training precision, from the vendors' datasheets — :data:`GPU_PEAK_TFLOPS`.
A GPU not in the table gets no MFU (``None``) rather than a guess. On a CPU there is no datasheet figure we can trust
(turbo, SMT, AVX-512 clocks, a shared host), so the peak is *measured*: the best of a few square matrix multiplies
in the training dtype with the job's threads (:func:`measured_cpu_peak`) — CPU MFU is against attainable matmul
throughput, an upper bound the training step can approach, not a datasheet number.
"""

from __future__ import annotations

import logging
import time

import torch
from torch import nn

from worker.ml.common import Device

logger = logging.getLogger(__name__)

# name substring (lower case) → (bf16/fp16 tensor-core peak, fp32 peak without TF32), dense TFLOPS.
GPU_PEAK_TFLOPS: dict[str, tuple[float, float]] = {
    "h200": (989.0, 67.0),  # SXM
    "h100 pcie": (756.0, 51.0),
    "h100": (989.0, 67.0),  # SXM
    "a100": (312.0, 19.5),
    "l40s": (362.0, 91.6),
    "l4": (121.0, 30.3),
    "a10g": (70.0, 35.0),  # AWS A10G
    "a10": (125.0, 31.2),
    "rtx 4090": (165.2, 82.6),
    "rtx 3090": (71.0, 35.6),
    "v100": (125.0, 15.7),  # fp16 (no bf16)
    "t4": (65.0, 8.1),  # fp16 (no bf16)
}


def matmul_params(model: nn.Module) -> int:
    """Weights that take part in a matrix multiply per token: every Linear/Conv1D weight plus the LM head's (tied or
    not; embedding lookups and position tables excluded)."""
    total, seen = 0, set()
    for module in model.modules():
        weight = getattr(module, "weight", None)
        is_matmul = isinstance(module, nn.Linear) or type(module).__name__ == "Conv1D"  # transformers' GPT-2 Conv1D
        if is_matmul and weight is not None and id(module) not in seen:
            seen.add(id(module))
            total += weight.numel()
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if head is not None and not isinstance(head, nn.Linear):  # a head that is not a Linear was not counted above
        total += head.weight.numel()
    return total


def flops_per_token(model: nn.Module, seq_len: int) -> float:
    """Training FLOPs per token of ``model`` on sequences of ``seq_len`` tokens: ``6N + 12·L·d·T``."""
    cfg = model.config
    n_layer = getattr(cfg, "n_layer", None) or cfg.num_hidden_layers
    width = getattr(cfg, "n_embd", None) or cfg.hidden_size
    return 6.0 * matmul_params(model) + 12.0 * n_layer * width * seq_len


def gpu_peak_tflops(name: str, dtype: torch.dtype | None) -> float | None:
    """The datasheet peak of the GPU called ``name`` for ``dtype`` (bf16/fp16, else fp32); None if not in the table."""
    lowered = name.lower()
    for key, (half, single) in GPU_PEAK_TFLOPS.items():
        if key in lowered:
            return half if dtype in (torch.bfloat16, torch.float16) else single
    return None


def measured_cpu_peak(dtype: torch.dtype | None, size: int = 1024, repeats: int = 3) -> float:
    """TFLOPS of the best of ``repeats`` ``size``-square matmuls in ``dtype`` (fp32 if None) on this CPU's threads."""
    dt = dtype or torch.float32
    a, b = torch.randn(size, size, dtype=dt), torch.randn(size, size, dtype=dt)
    a @ b  # first call: oneDNN primitive creation
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - start)
    return 2.0 * size**3 / best / 1e12


def peak_tflops(device: Device) -> tuple[float | None, str]:
    """The peak MFU is taken against on ``device`` in its training precision, and where it came from."""
    dtype = device.autocast_dtype
    if device.is_cuda:
        peak = gpu_peak_tflops(device.name, dtype)
        return peak, (f"datasheet {device.name}" if peak else f"{device.name} not in the peak table: no MFU")
    peak = measured_cpu_peak(dtype)
    return peak, f"measured CPU matmul peak ({torch.get_num_threads()} threads, {dtype or torch.float32})"


def mfu(flops_per_tok: float, tokens_per_s: float, peak: float | None) -> float | None:
    """The fraction of ``peak`` TFLOPS that ``tokens_per_s`` at ``flops_per_tok`` is; None without a peak."""
    if not peak:
        return None
    return flops_per_tok * tokens_per_s / (peak * 1e12)
