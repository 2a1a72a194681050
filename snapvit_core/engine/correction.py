"""Optional SparseGPT-style weight correction of a pruned ViT (DESIGN section 6).

Pruning removes input columns of two layers per block: ``attn.proj`` loses the removed heads' columns
and fc2 (``mlp_output``) loses the removed neurons' columns. This module updates the columns that stay
so each layer's output on calibration images changes as little as possible.

For one layer with full-width weight W (out, n) and inputs X (n, rows) the problem is
``min ||W X - W'_K X_K||`` over the kept columns K. It is solved with the SparseGPT / OBS column
elimination: H = X X^T (SparseGPT's factor 2/N cancels against the relative damping), damped, inverted
with Cholesky, and the pruned columns are eliminated one at a time, each pushing its error into the
columns not yet processed. Because the elastic engine sorts units by score, the pruned columns are a
suffix; the elimination runs on a permutation that puts them first, so their error flows into the kept
columns. This is the published algorithm (same damping and failure modes); in exact arithmetic it
equals the closed form ``W'_K = W_K + W_S H_SK H_KK^-1`` (tested).

Blocks are corrected in order, and block b is calibrated on the activations produced by the already
corrected blocks 0..b-1, as in SparseGPT. The tokens entering block 0 and the arguments the model passes
its blocks (RoPE for DINOv3, masks for transformers layers) are captured through the adapter
(``ViTAdapter.first_block_call``), so every family the adapter supports is corrected the same way.
"""

from __future__ import annotations

import copy
import logging
import math
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass

import torch
from torch import nn

from snapvit_core.engine.adapter import BlockCall, ViTAdapter
from snapvit_core.engine.elastic import ElasticViT
from snapvit_core.errors import CancelledError, SnapViTError

log = logging.getLogger(__name__)

DAMPING_STRATEGIES = ("mean", "max", "percentile")  # statistic of diag(H) that the damping fraction scales

Progress = Callable[[float, str], None]  # (fraction done, message); may raise CancelledError


@dataclass(frozen=True)
class CorrectionConfig:
    """Settings of the weight correction; defaults are the published ones."""

    samples: int = 1000  # calibration images used (published: 1000); extra images are ignored
    damping: str = "mean"  # statistic of diag(H) scaled by damping_fraction: mean, max or percentile
    damping_fraction: float = 0.01  # damping = fraction * statistic (published: 0.01 of the mean)
    percentile: float = 95.0  # which percentile of diag(H) the "percentile" strategy uses
    block_size: int = 128  # columns eliminated per lazy-update block (speed only, same result)
    batch_size: int = 64  # images per forward pass
    max_retries: int = 4  # after a failed Cholesky the damping is multiplied by 10, at most this often

    def __post_init__(self) -> None:
        if self.damping not in DAMPING_STRATEGIES:
            raise SnapViTError(
                f"Unknown damping strategy {self.damping!r}.",
                f"Use one of: {', '.join(DAMPING_STRATEGIES)}.",
            )
        for name, minimum in (("samples", 1), ("block_size", 1), ("batch_size", 1), ("max_retries", 0)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
                raise SnapViTError(f"{name} must be a whole number >= {minimum}, got {value!r}.")
        fraction = self.damping_fraction
        if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0 < fraction < math.inf:
            raise SnapViTError(
                f"damping_fraction must be a positive number, got {fraction!r}.",
                "The published value is 0.01 (of the mean Hessian diagonal); 0.1 with damping='max' for DINOv3.",
            )
        percentile = self.percentile
        if isinstance(percentile, bool) or not isinstance(percentile, (int, float)) or not 0 < percentile <= 100:
            raise SnapViTError(f"percentile must be a number in (0, 100], got {percentile!r}.", "The default is 95.")


@dataclass(frozen=True)
class LayerCorrection:
    """What the correction did to one layer. Errors are ||W X - W' X_K||^2 / ||W X||^2 on the calibration data."""

    layer: str  # module name, e.g. blocks.3.mlp.fc2
    kept_columns: int
    total_columns: int
    damping: float  # absolute value added to diag(H)
    damping_fraction: float  # the fraction that succeeded (config value x 10 ** retries)
    retries: int  # failed Cholesky attempts before it succeeded
    error_before: float  # truncation only
    error_after: float  # after the correction


@dataclass(frozen=True)
class CorrectionReport:
    """Per-layer results of ``correct_pruned_model``; only layers that lost columns are listed."""

    layers: tuple[LayerCorrection, ...]
    samples: int  # calibration images used
    seconds: float  # wall time
    messages: tuple[str, ...] = ()  # warnings such as Cholesky retries

    def to_dict(self) -> dict:
        return {
            "layers": [asdict(layer) for layer in self.layers],
            "samples": self.samples,
            "seconds": self.seconds,
            "messages": list(self.messages),
        }


def damping_value(diagonal: torch.Tensor, config: CorrectionConfig, fraction: float) -> float:
    """The damping added to diag(H): ``fraction`` times the configured statistic of ``diagonal``."""
    if config.damping == "mean":
        statistic = diagonal.mean()
    elif config.damping == "max":
        statistic = diagonal.max()
    else:
        statistic = torch.quantile(diagonal, config.percentile / 100.0)
    return fraction * float(statistic)


def eliminate_columns(weight: torch.Tensor, hessian: torch.Tensor, keep: int, block_size: int) -> torch.Tensor:
    """SparseGPT column elimination of the suffix ``weight[:, keep:]``; returns the updated kept columns.

    Args:
        weight: (out, n) full-width weight.
        hessian: (n, n) damped, positive definite H = X X^T + damping * I.
        keep: the first ``keep`` columns stay; the rest are removed.
        block_size: columns per lazy-update block.

    Returns:
        (out, keep) weight, in float64.

    Raises:
        torch.linalg.LinAlgError: when a Cholesky factorisation fails (H not positive definite enough).
    """
    n = weight.shape[1]
    # Pruned columns first, so each one's error is pushed into the columns after it: the kept ones.
    order = torch.cat([torch.arange(keep, n), torch.arange(keep)]).to(weight.device)
    work = weight.to(torch.float64)[:, order].clone()  # (out, n)
    hessian = hessian.to(torch.float64)[order][:, order]
    inverse = torch.cholesky_inverse(torch.linalg.cholesky(hessian))
    upper = torch.linalg.cholesky(inverse, upper=True)  # (n, n) upper factor of H^-1, as in SparseGPT
    pruned = n - keep
    for start in range(0, pruned, block_size):
        end = min(start + block_size, pruned)
        columns = work[:, start:end].clone()  # (out, b)
        errors = torch.zeros_like(columns)
        local = upper[start:end, start:end]
        for i in range(end - start):
            error = columns[:, i] / local[i, i]  # the whole column is removed, so its target value is 0
            columns[:, i:] -= error[:, None] * local[i, i:][None, :]
            errors[:, i] = error
        # Lazy batch update of everything after this block (the remaining pruned and all kept columns).
        work[:, end:] -= errors @ upper[start:end, end:]
    return work[:, pruned:]


def reconstruction_error(
    weight: torch.Tensor, new_kept: torch.Tensor, gram: torch.Tensor, reference: float | None = None
) -> float:
    """||W X - W'_K X_K||^2 / ||W X||^2 from the Gram matrix G = X X^T (no activations needed).

    Args:
        weight: (out, n) original full-width weight.
        new_kept: (out, k) weight of the first k columns after pruning (k <= n).
        gram: (n, n) undamped X X^T.
        reference: ||W X||^2 when the caller already has it (see ``output_energy``).
    """
    weight = weight.to(torch.float64)
    keep = new_kept.shape[1]
    reference = output_energy(weight, gram) if reference is None else reference
    if reference <= 0:
        return 0.0
    kept_change = weight[:, :keep] - new_kept.to(torch.float64)
    if not kept_change.any():  # plain truncation: only the removed columns' block of G matters
        removed = weight[:, keep:]
        return float(((removed @ gram[keep:, keep:]) * removed).sum() / reference)
    difference = torch.cat([kept_change, weight[:, keep:]], dim=1)  # (out, n); pruned columns keep W
    return float(((difference @ gram) * difference).sum() / reference)


def output_energy(weight: torch.Tensor, gram: torch.Tensor) -> float:
    """||W X||^2 = sum of (W G) * W, in float64 (one matrix product; einsum took the same time)."""
    weight = weight.to(torch.float64)
    return float(((weight @ gram) * weight).sum())


def correct_layer(
    weight: torch.Tensor, gram: torch.Tensor, keep: int, config: CorrectionConfig, name: str
) -> tuple[torch.Tensor, LayerCorrection, list[str]]:
    """Correct one layer, raising the damping tenfold after each failed Cholesky.

    Args:
        weight: (out, n) full-width weight of the unpruned layer.
        gram: (n, n) float64 X X^T of the layer's full-width inputs on the calibration data.
        keep: number of leading columns that stay.
        config: damping settings and retry limit.
        name: layer name for the report and messages.

    Returns:
        The (out, keep) corrected weight in ``weight``'s dtype, the report row, and retry messages.
    """
    hessian = gram.clone()
    diagonal = hessian.diagonal()
    # A channel silent on every calibration image has no row in H; SparseGPT sets its diagonal to 1.
    # Its weight is left as it is: with no evidence about it there is nothing to correct.
    diagonal[diagonal == 0] = 1.0
    messages: list[str] = []
    fraction = config.damping_fraction
    for retries in range(config.max_retries + 1):
        damping = damping_value(diagonal, config, fraction)
        damped = hessian + damping * torch.eye(hessian.shape[0], dtype=hessian.dtype, device=hessian.device)
        try:
            kept = eliminate_columns(weight, damped, keep, config.block_size)
            if torch.isfinite(kept).all():
                break
        except torch.linalg.LinAlgError:
            pass
        if retries == config.max_retries:
            raise SnapViTError(
                f"Weight correction failed for {name}: the Cholesky factorisation of its Hessian failed even "
                f"with damping fraction {fraction:g} ({config.max_retries} retries).",
                "Use more calibration images, a larger damping_fraction, or damping='max'.",
            )
        fraction *= 10.0
        message = f"Cholesky failed for {name}; retried with damping {fraction:g}"
        log.warning(message)
        messages.append(message)
    corrected = kept.to(weight.dtype)
    reference = output_energy(weight, gram)  # shared by both errors: the costly product for fc2 layers
    if not torch.isfinite(corrected).all():  # finite in float64 but overflowing a half-precision weight
        raise SnapViTError(f"Weight correction for {name} produced values too large for {weight.dtype}.")
    row = LayerCorrection(
        layer=name,
        kept_columns=keep,
        total_columns=weight.shape[1],
        damping=damping,
        damping_fraction=fraction,
        retries=retries,
        error_before=reconstruction_error(weight, weight[:, :keep], gram, reference),
        error_after=reconstruction_error(weight, corrected, gram, reference),
    )
    return corrected, row, messages


def _shadow(module: nn.Module) -> nn.Module:
    """A structural copy sharing every tensor, so hooks can be added without touching ``module``."""
    memo = {id(t): t for t in (*module.parameters(), *module.buffers())}
    return copy.deepcopy(module, memo).eval()


def _gram_of_input(layer: nn.Linear, gram: torch.Tensor) -> torch.utils.hooks.RemovableHandle:
    """Accumulate X X^T of ``layer``'s input into ``gram`` on every forward (all tokens are rows)."""

    def accumulate(module: nn.Module, args: tuple[torch.Tensor, ...]) -> None:
        rows = args[0].reshape(-1, args[0].shape[-1]).to(torch.float64)  # (N * T, n)
        gram.add_(rows.T @ rows)

    return layer.register_forward_pre_hook(accumulate)


def _input_gram(
    pruned_block: nn.Module,
    pruned_parent: nn.Module,
    full_parent: nn.Module,
    full_layer: nn.Linear,
    stream: Iterable[tuple[torch.Tensor, BlockCall]],
) -> torch.Tensor:
    """X X^T of ``full_layer``'s full-width input when ``full_parent`` sees what ``pruned_parent`` sees.

    ``pruned_parent`` is the pruned block's attention or MLP; its input (which depends on the already
    corrected layers before it) is fed to the unpruned ``full_parent``, whose ``full_layer`` is hooked.
    """

    def forward_full(module: nn.Module, args: tuple, kwargs: dict) -> None:
        full_parent(*args, **kwargs)

    gram = torch.zeros(
        full_layer.in_features, full_layer.in_features, dtype=torch.float64, device=full_layer.weight.device
    )
    handles = [
        _gram_of_input(full_layer, gram),
        pruned_parent.register_forward_pre_hook(forward_full, with_kwargs=True),
    ]
    try:
        for x, call in stream:
            call.replay(pruned_block, x)
    finally:
        for handle in handles:
            handle.remove()
    return gram


def correct_pruned_model(
    full_model: nn.Module,
    pruned_model: nn.Module,
    calibration_images: torch.Tensor,
    config: CorrectionConfig | None = None,
    progress: Progress | None = None,
    cancel: Callable[[], bool] | None = None,
) -> CorrectionReport:
    """Correct ``pruned_model``'s proj and fc2 weights in place so each layer's output changes least.

    ``pruned_model`` must be a prefix truncation of ``full_model`` (what ``ElasticViT.prune_to`` returns,
    of ``ElasticViT.full``): block b keeps the first heads and neurons. Corrected layers get new
    Parameter objects, so tensors shared with ``full_model`` are never written. If anything fails or
    is cancelled, the original Parameters are put back: the model is never left half-corrected.

    Args:
        full_model: the unpruned, reordered model; read only (hooks go on a tensor-sharing copy).
        pruned_model: the truncated model to correct.
        calibration_images: (N, 3, S, S) preprocessed images; the first ``config.samples`` are used.
        config: settings; default: the published ones.
        progress: called as ``progress(fraction done, message)`` after each step; may raise CancelledError.
        cancel: polled before each batch; returning True raises CancelledError.

    Returns:
        The per-layer report (layers that lost no columns are not listed).
    """
    config = config or CorrectionConfig()
    if not isinstance(calibration_images, torch.Tensor) or calibration_images.ndim != 4 or len(calibration_images) == 0:
        raise SnapViTError(
            f"Calibration images must be a non-empty (N, 3, S, S) tensor, got "
            f"{getattr(calibration_images, 'shape', type(calibration_images).__name__)}.",
            "Preprocess the images with the backbone's transform and stack them.",
        )
    start = time.perf_counter()
    images = calibration_images[: config.samples]
    full, pruned = ViTAdapter(_shadow(full_model)), ViTAdapter(pruned_model)
    if full.num_blocks != pruned.num_blocks:
        raise SnapViTError(f"The pruned model has {pruned.num_blocks} blocks, the full model {full.num_blocks}.")
    names = {id(module): name for name, module in pruned_model.named_modules()}
    device = next(pruned_model.parameters()).device
    originals = [(b.proj, b.proj.weight, b.mlp_output, b.mlp_output.weight) for b in pruned.blocks]
    rows: list[LayerCorrection] = []
    messages: list[str] = []
    steps, done = 3 * pruned.num_blocks, 0
    was_training = pruned_model.training
    pruned_model.eval()

    def report_step(message: str) -> None:
        nonlocal done
        done += 1
        if progress is not None:
            progress(done / steps, message)

    def batches() -> Iterator[tuple[torch.Tensor, BlockCall]]:
        """(tokens entering the current block, the model's call of its blocks) per batch."""
        for x, call in zip(stream, calls):
            if cancel is not None and cancel():
                raise CancelledError("weight correction")
            yield x, call

    try:
        with torch.no_grad():
            stream: list[torch.Tensor] = []  # activations entering the current block, one (b, T, D) per batch
            calls: list[BlockCall] = []  # per batch, how the model calls its blocks
            for i in range(0, len(images), config.batch_size):
                x, call = pruned.first_block_call(images[i : i + config.batch_size].to(device))
                stream.append(x)
                calls.append(call)
            for index, (source, target) in enumerate(zip(full.blocks, pruned.blocks)):
                block = target.module
                # Attention first: the MLP's calibration inputs must come from the corrected proj.
                for full_parent, full_layer, pruned_parent, pruned_layer in (
                    (source.attention, source.proj, target.attention, target.proj),
                    (source.mlp, source.mlp_output, target.mlp, target.mlp_output),
                ):
                    name = names[id(pruned_layer)]
                    keep = pruned_layer.in_features
                    if keep == full_layer.in_features:
                        report_step(f"{name}: nothing pruned")
                        continue
                    gram = _input_gram(block, pruned_parent, full_parent, full_layer, batches())
                    weight, row, retry_messages = correct_layer(full_layer.weight.detach(), gram, keep, config, name)
                    pruned_layer.weight = nn.Parameter(weight, requires_grad=False)
                    rows.append(row)
                    messages.extend(retry_messages)
                    report_step(f"corrected {name}: error {row.error_before:.3g} -> {row.error_after:.3g}")
                stream = [call.replay(block, x) for x, call in batches()]
                report_step(f"propagated block {index}")
    except BaseException:
        for proj, proj_weight, fc2, fc2_weight in originals:
            proj.weight, fc2.weight = proj_weight, fc2_weight
        raise
    finally:
        pruned_model.train(was_training)
    seconds = time.perf_counter() - start
    log.info("Weight correction of %d layers on %d images took %.1f s", len(rows), len(images), seconds)
    return CorrectionReport(tuple(rows), len(images), round(seconds, 3), tuple(messages))


def correct_elastic(
    elastic: ElasticViT,
    mlp_sparsity: float,
    head_sparsity: float,
    calibration_images: torch.Tensor,
    config: CorrectionConfig | None = None,
    progress: Progress | None = None,
    cancel: Callable[[], bool] | None = None,
) -> tuple[nn.Module, CorrectionReport]:
    """A corrected, standalone model at (mlp_sparsity, head_sparsity); ``elastic`` is only read.

    The correction works on a standalone truncation (``ElasticViT.prune_to``), so the engine's later
    truncations stay exact. Arguments as in ``correct_pruned_model``.
    """
    model = elastic.prune_to(mlp_sparsity, head_sparsity)
    report = correct_pruned_model(elastic.full, model, calibration_images, config, progress, cancel)
    return model, report
