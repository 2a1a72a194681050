"""Cost metrics of a (pruned) ViT: parameters, analytic FLOPs, torch-counted FLOPs, latency.

FLOPs follow DESIGN section 7 (one multiply-add = 2 FLOPs, matmuls only), per block:
2*N*D*3A (qkv) + 4*N^2*A (attention) + 2*N*A*D (proj) + 4*N*D*M (MLP; 6*N*D*M for SwiGLU),
A = kept heads * head width, N = tokens incl. prefix tokens; plus the patch embedding and, for
SigLIP2, the (unpruned) attention-pool head. Norms, activations, softmax and RoPE are not counted
(neither does torch's FlopCounterMode).
"""

from __future__ import annotations

import copy
import logging
import statistics
import time
from dataclasses import asdict, dataclass

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from snapvit_core.engine.adapter import MLP_STANDARD, ViTAdapter


def count_parameters(model: nn.Module) -> int:
    """Number of parameters in the embedding path (classification heads excluded)."""
    heads = {id(p) for name in ("head", "head_dist") for p in _child_parameters(model, name)}
    return sum(p.numel() for p in model.parameters() if id(p) not in heads)


def _child_parameters(model: nn.Module, name: str) -> list[nn.Parameter]:
    child = getattr(model, name, None)
    return list(child.parameters()) if isinstance(child, nn.Module) else []


def analytic_flops(model: nn.Module) -> int:
    """FLOPs of one image's embedding forward, from the current (possibly pruned) widths."""
    adapter = ViTAdapter(model)
    shape = adapter.shape()
    tokens, width = shape.num_tokens, shape.embed_dim
    total = 0
    for block in adapter.blocks:
        attn_width = block.num_heads * block.head_dim
        hidden = block.mlp_hidden
        mlp_factor = 4 if block.mlp_kind == MLP_STANDARD else 6  # gated MLPs have a third matmul
        total += 2 * tokens * width * 3 * attn_width  # qkv projection
        total += 4 * tokens * tokens * attn_width  # q @ k^T and attn @ v
        total += 2 * tokens * attn_width * width  # output projection
        total += mlp_factor * tokens * width * hidden  # fc1 (+ gate) and fc2
    patches = (shape.image_size // shape.patch_size) ** 2
    total += 2 * patches * (3 * shape.patch_size**2) * width  # patch embedding convolution
    if adapter.attention_pool is not None:
        total += _attention_pool_flops(adapter.attention_pool, tokens)
    return int(total)


def _attention_pool_flops(pool: nn.Module, tokens: int) -> int:
    """A latent attention pool (timm AttentionPoolLatent): L latent queries attend to the N tokens."""
    latents = int(getattr(pool, "latent_len", 1))
    q, kv, proj = pool.q, pool.kv, pool.proj
    total = 2 * latents * q.in_features * q.out_features  # latent queries
    total += 2 * tokens * kv.in_features * kv.out_features  # keys and values of every token
    total += 4 * latents * tokens * q.out_features  # q @ k^T and attn @ v
    total += 2 * latents * proj.in_features * proj.out_features
    mlp = getattr(pool, "mlp", None)
    if mlp is not None:
        total += 2 * latents * sum(m.in_features * m.out_features for m in mlp.modules() if isinstance(m, nn.Linear))
    return total


def counted_flops(model: nn.Module, image_size: int | None = None) -> int:
    """FLOPs of one image's embedding forward as torch's FlopCounterMode counts them.

    Runs on a meta-device copy, so it costs no compute and allocates no weights.
    """
    adapter = ViTAdapter(model)
    size = image_size or adapter.shape().image_size
    # Frozen: torch's module tracker trips over parameters that need grad under no_grad (SigLIP2 latent).
    meta_model = copy.deepcopy(model).to("meta").requires_grad_(False)
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        ViTAdapter(meta_model).embed(torch.empty(1, 3, size, size, device="meta"))
    return int(counter.get_total_flops())


@dataclass(frozen=True)
class LatencyReport:
    """Measured forward latency of the embedding path."""

    median_ms: float  # batch-1 median latency
    iqr_ms: float  # batch-1 inter-quartile range
    throughput_per_s: float  # images/s at ``batch_size`` (median)
    batch_size: int  # batch of the throughput measurement
    device: str  # e.g. "cpu" or "cuda:0 (NVIDIA H100)"
    dtype: str  # e.g. "float32"
    threads: int  # torch intra-op threads during the measurement
    repeats: int  # timed runs behind the batch-1 median

    def to_dict(self) -> dict:
        return asdict(self)


def measure_latency(
    model: nn.Module,
    image_size: int | None = None,
    batch_size: int = 32,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    min_run_time: float = 0.3,
    threads: int | None = None,
) -> LatencyReport:
    """Median batch-1 latency (with IQR) and batch-N throughput of the embedding forward.

    Uses ``torch.utils.benchmark`` (warm-up, CUDA synchronisation, adaptive repeats). The model is
    moved to ``device``/``dtype`` in place; pass a copy if that matters to the caller.

    Returns:
        A LatencyReport; its fields state device, dtype, threads and repetitions.
    """
    # torch.utils.benchmark pulls in cpp_extension, which warns about CUDA_HOME on CPU-only
    # machines that have a CUDA toolkit; the warning is irrelevant to timing.
    logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)
    from torch.utils import benchmark

    device = torch.device(device)
    adapter = ViTAdapter(model)
    size = image_size or adapter.shape().image_size
    model.to(device=device, dtype=dtype).eval()
    threads = threads or torch.get_num_threads()

    def timed(batch: int):  # -> benchmark.Measurement
        images = torch.randn(batch, 3, size, size, device=device, dtype=dtype)
        with torch.inference_mode():
            adapter.embed(images)  # warm-up (allocator, kernels)
        timer = benchmark.Timer(
            stmt="with torch.inference_mode(): adapter.embed(images)",
            globals={"adapter": adapter, "images": images, "torch": torch},
            num_threads=threads,
        )
        return timer.blocked_autorange(min_run_time=min_run_time)

    single = timed(1)
    many = timed(batch_size)
    name = str(device)
    if device.type == "cuda":
        name += f" ({torch.cuda.get_device_name(device)})"
    return LatencyReport(
        median_ms=single.median * 1e3,
        iqr_ms=single.iqr * 1e3,
        throughput_per_s=batch_size / many.median,
        batch_size=batch_size,
        device=name,
        dtype=str(dtype).removeprefix("torch."),
        threads=threads,
        repeats=len(single.times) * single.number_per_run,
    )


def paired_rounds(
    models: list[nn.Module],
    image_size: int,
    device: str,
    repeats: int = 15,
    budget_s: float | None = None,
    max_repeats: int = 50,
    batch: int = 1,
) -> list[list[float]]:
    """Per-round wall times (s) of an embedding forward of ``batch`` images through each model, one per round.

    2 warm-up rounds, then ``repeats`` rounds. Interleaving means a load spike on a shared machine
    slows every model alike, so per-round ratios - the speed-up - stay meaningful. With
    ``budget_s``, the number of rounds grows from ``repeats`` up to ``max_repeats`` while the timed
    rounds fit in about that many seconds.
    """
    adapters = [ViTAdapter(model) for model in models]
    dtype = next(models[0].parameters()).dtype
    images = torch.randn(batch, 3, image_size, image_size, device=device, dtype=dtype)
    times: list[list[float]] = [[] for _ in models]
    warm_up, rounds, round_index = 2, repeats, 0
    cuda = str(device).startswith("cuda")
    with torch.inference_mode():
        while round_index < warm_up + rounds:
            for adapter, samples in zip(adapters, times):
                if cuda:
                    torch.cuda.synchronize()
                start = time.perf_counter()
                adapter.embed(images)
                if cuda:
                    torch.cuda.synchronize()
                if round_index >= warm_up:  # the first rounds warm the allocator and kernels
                    samples.append(time.perf_counter() - start)
            round_index += 1
            if budget_s is not None and round_index == warm_up + 1:  # one timed round tells the cost
                per_round = sum(samples[0] for samples in times)
                rounds = max(repeats, min(max_repeats, int(budget_s / max(per_round, 1e-9))))
    return times


def median_speedup(pruned_s: list[float], unpruned_s: list[float]) -> float:
    """Median over rounds of unpruned / pruned time: each ratio compares two forwards run back to back."""
    return statistics.median(u / p for u, p in zip(unpruned_s, pruned_s))
