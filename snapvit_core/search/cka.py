"""Linear CKA between a ViT's prunable components: the search's initial covariance (DESIGN section 4).

Components are the B MLP blocks (fc1 output at the CLS token, (N, M)) followed by the B*H heads
(the CLS-token slice of each head's input to attn.proj, (N, head_dim)), in the search's order
``[block 0 .. B-1, block 0 head 0 .. block B-1 head H-1]``. All (B + B*H)^2 similarities are computed
with matrix products, never a python loop over pairs.
"""

from __future__ import annotations

import torch
from torch import nn

from snapvit_core.engine.adapter import MLP_GLU_PACKED, ViTAdapter

PD_EPSILON = 1e-4  # smallest eigenvalue kept by the positive-definite repair


def _cls_token(tokens: torch.Tensor, model: nn.Module) -> torch.Tensor:
    """(N, T, C) -> (N, C): the class token, or the token mean for models without one."""
    if getattr(model, "cls_token", None) is None:
        return tokens.mean(dim=1)
    return tokens[:, 0]


@torch.inference_mode()
def collect_component_features(
    model: nn.Module, images: torch.Tensor, batch_size: int = 256
) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """CLS-token activations of every MLP block and every head on ``images``.

    Returns:
        ``mlp``: B tensors (N, M), fc1 outputs (the value half for GLU MLPs), and ``heads``: B*H
        tensors (N, head_dim), block-major; all float32 on the images' device.
    """
    adapter = ViTAdapter(model)
    mlp_parts: list[list[torch.Tensor]] = [[] for _ in adapter.blocks]
    head_parts: list[list[torch.Tensor]] = [[] for _ in adapter.blocks]
    handles = []
    for index, block in enumerate(adapter.blocks):
        hidden = block.mlp_hidden
        packed = block.mlp_kind == MLP_GLU_PACKED

        def on_fc1(module, args, output, i=index, m=hidden, packed=packed):
            cls = _cls_token(output, model)
            mlp_parts[i].append((cls[:, :m] if packed else cls).float())

        def on_proj(module, args, i=index):
            head_parts[i].append(_cls_token(args[0], model).float())  # (n, H * d)

        handles.append(block.fc1.register_forward_hook(on_fc1))
        handles.append(block.proj.register_forward_pre_hook(on_proj))
    try:
        model.eval()
        for start in range(0, images.shape[0], batch_size):
            model.forward_features(images[start : start + batch_size])  # the head is not needed
    finally:
        for handle in handles:
            handle.remove()
    mlp = [torch.cat(parts) for parts in mlp_parts]
    heads = []
    for block, parts in zip(adapter.blocks, head_parts):
        stacked = torch.cat(parts).reshape(-1, block.num_heads, block.head_dim)  # (N, H, d)
        heads.extend(stacked.unbind(dim=1))
    return mlp, heads


def linear_cka_matrix(features: list[torch.Tensor]) -> torch.Tensor:
    """(C, C) linear CKA between C feature matrices that share their N rows (samples).

    CKA(i, j) = HSIC(i, j) / sqrt(HSIC(i, i) HSIC(j, j)) with HSIC(i, j) = ||X_i^T X_j||_F^2 for
    column-centred X (the 1/(N-1)^2 factors cancel). Whichever of two equivalent forms needs less
    memory is used: one (F, F) cross-covariance of all F stacked feature columns, summed in blocks
    by an indicator matmul, or C centred (N, N) Gram matrices flattened into one (C, N*N) @ (N*N, C)
    product. A component with zero variance gets CKA 0 with every other and 1 with itself.
    """
    widths = [int(f.shape[1]) for f in features]
    count, samples, total = len(features), int(features[0].shape[0]), sum(widths)
    stacked = torch.cat([f.to(torch.float64) for f in features], dim=1)  # (N, F)
    stacked = stacked - stacked.mean(dim=0, keepdim=True)
    if total * total <= count * samples * samples:
        owner = torch.repeat_interleave(torch.arange(count), torch.tensor(widths)).to(stacked.device)  # (F,)
        indicator = torch.nn.functional.one_hot(owner, count).to(stacked.dtype)  # (F, C)
        cross = stacked.T @ stacked  # (F, F)
        hsic = indicator.T @ cross.square() @ indicator  # (C, C): sum of squares per block pair
    else:
        grams = torch.stack([x @ x.T for x in stacked.split(widths, dim=1)])  # (C, N, N), centred
        flat = grams.reshape(count, -1)
        hsic = flat @ flat.T
    norms = hsic.diagonal().clamp(min=0.0).sqrt()
    alive = norms > 1e-12 * norms.max().clamp(min=1e-300)
    safe = torch.where(alive, norms, torch.ones_like(norms))
    cka = hsic / safe[:, None] / safe[None, :]
    cka = torch.where(alive[:, None] & alive[None, :], cka, torch.zeros_like(cka))
    cka.fill_diagonal_(1.0)
    return (0.5 * (cka + cka.T)).clamp(-1.0, 1.0)


def make_positive_definite(matrix: torch.Tensor, epsilon: float = PD_EPSILON) -> torch.Tensor:
    """Nearest-correlation-style repair: clip eigenvalues to >= ``epsilon``, then rescale to unit diagonal.

    The rescaling D^-1/2 M D^-1/2 is a congruence, so the result stays positive definite.
    """
    symmetric = 0.5 * (matrix + matrix.T).to(torch.float64)
    values, vectors = torch.linalg.eigh(symmetric)
    if values.min() >= epsilon:
        return symmetric
    repaired = (vectors * values.clamp(min=epsilon)) @ vectors.T
    scale = repaired.diagonal().rsqrt()
    repaired = repaired * scale[:, None] * scale[None, :]
    return 0.5 * (repaired + repaired.T)


def component_cka(model: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """(B + B*H, B + B*H) positive-definite linear CKA matrix of the model's MLP blocks and heads."""
    mlp, heads = collect_component_features(model, images)
    return make_positive_definite(linear_cka_matrix(mlp + heads))
