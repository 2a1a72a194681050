"""Linear-probe top-1 on frozen embeddings: the paper's second accuracy metric, as pure tensor functions.

SnapViT reports k-NN top-1 (``knn.py``) and linear-probe top-1. Its reference repository trains the probe
"with the same initialization and parameters as the DINOv1 linear evaluation" (``jobs/eval/evaluate-linear.sh``
running facebookresearch/dino's ``eval_linear.py`` protocol on saved features). The protocol here:

* head: ``nn.Linear(D, C)``, weight ~ N(0, 0.01), bias 0 (:func:`make_linear_head`), on the frozen features
  exactly as given (the embedding ``extract_features`` returns; no BatchNorm, no normalisation);
* loss: cross-entropy, mean over the mini-batch; the last, partial batch of an epoch is kept (PyTorch's
  ``DataLoader`` default, ``drop_last=False``);
* SGD, momentum 0.9 (PyTorch's form: the first step's buffer is the gradient), weight decay 0;
* learning rate: ``0.001 x batch_size / 256`` (DINO's default lr and its linear scaling rule), annealed per
  epoch on a cosine down to 0 over all epochs (``CosineAnnealingLR(T_max=epochs, eta_min=0)``, closed form);
* 100 epochs, mini-batches of 256 (:data:`DEFAULT_BATCH_SIZE`) reshuffled every epoch;
* the reported value is the test top-1 of the head after the last epoch.

Batch size: 256 is the SnapViT reference's own setting (``BATCH_SIZE=256``, lr 0.001, which DINO's rule
also gives at 256), so the default is no deviation from the published protocol. DINO's script defaults to
128 per GPU (x 8 GPUs = 1,024 images, lr 0.004); any batch size can be passed, the lr follows the rule.
At 256 a probe on the project's default set (1,257 train x 540 test, 96-dim, 10 classes) stays inside the
0.3 s target on one CPU thread (``benchmarks/bench_linear_probe.py``; times in ``results/code_choices.md``)
because the step is written out by hand (logits, softmax gradient, momentum update: a few kernels on reused
buffers): autograd + ``torch.optim`` pays per-call overhead that dominates at this size;
``tests/test_linear_probe.py`` checks it against that autograd loop, weight for weight.

Deviations from DINO's script (``results/linear.md`` measures (1) and (3)): (1) DINO reports the best
validation top-1 over the epochs, and its validation set is ImageNet's val = the test set, i.e. it picks the
epoch on the test set; here the last epoch is reported (what the SnapViT reference's code returns too:
its "best state" is a ``state_dict()`` that aliases the live weights). (2) DINO's ViT-S/16 features are the
CLS tokens of the last 4 blocks concatenated (ViT-B: last CLS + pooled patch tokens); here the features
are the project's embedding (the final CLS token), as the SnapViT reference uses. (3) The SnapViT
reference feeds batches in one fixed order under bf16 autocast; here they are reshuffled each epoch in fp32
(DINO's ``DistributedSampler``).

Reproducibility: the head's init and every epoch's permutation come from one CPU ``torch.Generator``
seeded with ``seed`` (init first: C x D normals, then one ``randperm(N)`` per epoch), so a seed gives the
same value bit for bit in one process (same device and thread count), and the same draws on any device.
The caller's global RNG is neither used nor advanced.

Scale: everything runs on ``train_features``' device. The train features are never copied: each step
gathers its mini-batch rows (``index_select`` of a permutation slice; float16/bfloat16 rows are cast per
batch), and the test set is scored in chunks of at most :data:`EVAL_CHUNK_ELEMENTS` logits (16 MB), so
the extra memory is the head, one batch and one chunk, plus the N labels and one permutation (int64):
for 100,000 x 768 float32 features and 1,000 classes, 31 MB at the peak (0.10x the features' 307 MB).

torchrun: no collective is used. Every rank holds all features (``extract_features`` all-gathers its
shards) and trains the same head from the same seed, so each rank returns the single-process value (ranks
on the same kind of device and thread count compute the same bits); it is equally fine to call it on one
rank only (nothing waits for the others).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from snapvit_core.errors import SnapViTError
from snapvit_core.runtime.cancel import Cancel, check_cancel

DEFAULT_EPOCHS = 100  # DINO eval_linear.py --epochs; SnapViT reference MAX_EPOCHS=100
DEFAULT_BATCH_SIZE = 256  # SnapViT reference BATCH_SIZE=256 (DINO: 128 per GPU); see the module docstring
DINO_LR = 0.001  # DINO's --lr, for a batch of 256 (linear scaling rule)
LR_REFERENCE_BATCH = 256
MOMENTUM = 0.9
INIT_STD = 0.01  # weight ~ N(0, 0.01), bias 0
MAX_EPOCHS = 10_000
MAX_SEED = 2**63 - 1
EVAL_CHUNK_ELEMENTS = 1 << 22  # test rows per block: this many logits (or input values), 16 MB in float32


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass(frozen=True)
class LinearProbe:
    """Settings of DINOv1's linear evaluation on frozen features (validated on construction).

    Args:
        epochs: passes over the train features (1..10000; published: 100).
        lr: peak learning rate; None = DINO's ``0.001 x batch_size / 256``.
        batch_size: rows per SGD step (>= 1; a batch larger than the train set is full-batch training,
            the lr still follows the nominal batch as in DINO's rule).
        seed: seeds the head's init and the per-epoch shuffles (0 .. 2**63 - 1).
    """

    epochs: int = DEFAULT_EPOCHS
    lr: float | None = None
    batch_size: int = DEFAULT_BATCH_SIZE
    seed: int = 0

    def __post_init__(self) -> None:
        if not _is_int(self.epochs) or not 1 <= self.epochs <= MAX_EPOCHS:
            raise SnapViTError(
                f"Linear probe epochs must be an integer from 1 to {MAX_EPOCHS}, got {self.epochs!r}.",
                f"Use the published {DEFAULT_EPOCHS}.",
            )
        if self.lr is not None:
            lr = self.lr
            if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not math.isfinite(lr) or lr <= 0:
                raise SnapViTError(
                    f"Linear probe lr must be a finite number > 0, got {lr!r}.",
                    f"Leave it unset for DINO's {DINO_LR} x batch_size / {LR_REFERENCE_BATCH}.",
                )
        if not _is_int(self.batch_size) or self.batch_size < 1:
            raise SnapViTError(
                f"Linear probe batch_size must be an integer >= 1, got {self.batch_size!r}.",
                f"Use the published {DEFAULT_BATCH_SIZE}.",
            )
        if not _is_int(self.seed) or not 0 <= self.seed <= MAX_SEED:
            raise SnapViTError(
                f"Linear probe seed must be an integer from 0 to 2**63 - 1, got {self.seed!r}.", "Use e.g. 0."
            )

    def describe(self) -> dict:
        """The settings as JSON-ready values (the lr resolved), for reports and landscape keys."""
        return {"epochs": self.epochs, "lr": self.base_lr, "batch_size": self.batch_size, "seed": self.seed}

    @property
    def base_lr(self) -> float:
        """The peak (first-epoch) learning rate."""
        return float(self.lr) if self.lr is not None else DINO_LR * self.batch_size / LR_REFERENCE_BATCH

    def lr_at(self, epoch: int) -> float:
        """Learning rate of ``epoch`` (0-based): cosine from ``base_lr`` at epoch 0 towards 0 at ``epochs``."""
        return self.base_lr * (1.0 + math.cos(math.pi * epoch / self.epochs)) / 2.0

    def fit(
        self,
        train_features: torch.Tensor,
        train_labels: torch.Tensor,
        num_classes: int | None = None,
        cancel: Cancel | None = None,
    ) -> nn.Linear:
        """Train the head on frozen ``train_features`` (N, D) with int labels (N,); returns it on their device.

        ``num_classes``: None = ``max(train_labels) + 1``. ``cancel``: polled every epoch (raises
        ``CancelledError``), so a newer request never waits for a whole training.
        """
        _check_features(train_features, "train")
        labels = _check_labels(train_labels, train_features.shape[0], "train")
        classes = _num_classes(labels, num_classes)
        device = train_features.device
        labels = labels.to(device=device, dtype=torch.long)
        generator = torch.Generator().manual_seed(self.seed)
        head = make_linear_head(train_features.shape[1], classes, generator=generator).to(device)
        weight, bias = head.weight.data, head.bias.data  # trained in place, no autograd
        weight_buffer, bias_buffer = torch.zeros_like(weight), torch.zeros_like(bias)  # momentum
        weight_grad, bias_grad = torch.empty_like(weight), torch.empty_like(bias)
        count, dim, batch = train_features.shape[0], train_features.shape[1], self.batch_size
        rows = min(batch, count)
        # Step buffers, reused: a batch's rows (float32, and in the features' dtype when that differs) and
        # its logits. Fresh tensors every step would leave the CPU allocator holding freed blocks.
        batch_rows = torch.empty(rows, dim, device=device)
        raw_rows = None if train_features.dtype == torch.float32 else train_features.new_empty(rows, dim)
        logits = torch.empty(rows, classes, device=device)
        minus_one = torch.full((rows, 1), -1.0, device=device)
        first = True
        with torch.no_grad():
            for epoch in range(self.epochs):
                check_cancel(cancel, "linear probe")
                lr = self.lr_at(epoch)
                order = torch.randperm(count, generator=generator).to(device)
                for start in range(0, count, batch):
                    index = order[start : start + batch]
                    size = index.shape[0]
                    x = batch_rows[:size]  # (b, D): this batch's rows only, never the whole set
                    if raw_rows is None:
                        torch.index_select(train_features, 0, index, out=x)
                    else:
                        x.copy_(torch.index_select(train_features, 0, index, out=raw_rows[:size]))
                    # d(mean cross-entropy)/d(logits) = (softmax - one_hot) / b; the softmax written out
                    # (torch's softmax kernel is slow on the CPU for rows as short as C = 10 logits)
                    grad = torch.addmm(bias, x, weight.t(), out=logits[:size])
                    grad.sub_(grad.amax(dim=1, keepdim=True)).exp_()
                    grad.div_(grad.sum(dim=1, keepdim=True))
                    grad.scatter_add_(1, labels.index_select(0, index).unsqueeze(1), minus_one[:size])
                    grad.div_(size)
                    torch.mm(grad.t(), x, out=weight_grad)
                    torch.sum(grad, dim=0, out=bias_grad)
                    if first:  # torch.optim.SGD: the momentum buffer starts as the first gradient
                        weight_buffer.copy_(weight_grad)
                        bias_buffer.copy_(bias_grad)
                        first = False
                    else:
                        weight_buffer.mul_(MOMENTUM).add_(weight_grad)
                        bias_buffer.mul_(MOMENTUM).add_(bias_grad)
                    weight.add_(weight_buffer, alpha=-lr)
                    bias.add_(bias_buffer, alpha=-lr)
        if not (torch.isfinite(weight).all() and torch.isfinite(bias).all()):
            raise SnapViTError(
                f"The linear probe diverged (non-finite weights) at lr {self.base_lr:g}.",
                "Check the features for NaN/inf values, or pass a smaller lr.",
            )
        return head

    def top1(
        self,
        train_features: torch.Tensor,
        train_labels: torch.Tensor,
        test_features: torch.Tensor,
        test_labels: torch.Tensor,
        num_classes: int | None = None,
        cancel: Cancel | None = None,
    ) -> float:
        """Top-1 accuracy (0..1) on the test set of the head trained on the train set (``cancel``: see ``fit``)."""
        _check_features(train_features, "train")
        _check_features(test_features, "test")
        test_labels = _check_labels(test_labels, test_features.shape[0], "test")
        if test_features.shape[0] == 0:
            raise SnapViTError("The linear probe needs at least one test image.", "Check the data source's test split.")
        if test_features.shape[1] != train_features.shape[1]:
            raise SnapViTError(
                f"Train and test features differ in width: {train_features.shape[1]} vs {test_features.shape[1]}.",
                "Embed both splits with the same model.",
            )
        head = self.fit(train_features, train_labels, num_classes, cancel)
        predicted = linear_probe_predict(head, test_features)
        return float((predicted == test_labels.to(predicted.device).long()).float().mean())


def make_linear_head(
    dim: int, num_classes: int, generator: torch.Generator | None = None, device: str | torch.device = "cpu"
) -> nn.Linear:
    """DINO's linear classifier: ``nn.Linear(dim, num_classes)``, weight ~ N(0, 0.01), bias 0.

    The weight is drawn on the CPU from ``generator`` (None: the global RNG) and then moved, so a seed
    gives the same head on every device; ``nn.Linear``'s own init is skipped (it would draw from the
    global RNG).
    """
    if not _is_int(dim) or not _is_int(num_classes) or dim < 1 or num_classes < 1:
        raise SnapViTError(f"A linear head needs dim >= 1 and num_classes >= 1, got {dim!r} and {num_classes!r}.")
    head = nn.Linear(dim, num_classes, device="meta").to_empty(device="cpu")
    with torch.no_grad():
        head.weight.normal_(0.0, INIT_STD, generator=generator)
        head.bias.zero_()
    return head.to(device)


def linear_probe_predict(head: nn.Linear, features: torch.Tensor, chunk_size: int | None = None) -> torch.Tensor:
    """Predicted class (N,) int64 of each row of ``features`` (N, D), scored in chunks on the head's device.

    ``chunk_size``: rows per chunk; None = as many as keep a chunk's logits and float32 rows within
    :data:`EVAL_CHUNK_ELEMENTS` values each.
    """
    if chunk_size is None:
        chunk_size = max(1, EVAL_CHUNK_ELEMENTS // max(head.out_features, head.in_features))
    if chunk_size < 1:
        raise SnapViTError(f"chunk_size must be >= 1, got {chunk_size}.")
    device = head.weight.device
    count = features.shape[0]
    predicted = torch.empty(count, dtype=torch.long, device=device)
    rows = min(chunk_size, count)
    # reused chunk buffers (fresh 16 MB tensors per chunk would leave the CPU allocator holding ~N x C x 4 B)
    logits = torch.empty(rows, head.out_features, device=device)
    direct = features.dtype == torch.float32 and features.device == device
    chunk_rows = None if direct else torch.empty(rows, features.shape[1], device=device)
    with torch.no_grad():
        for start in range(0, count, chunk_size):
            chunk = features[start : start + chunk_size]
            size = chunk.shape[0]
            if chunk_rows is not None:
                chunk = chunk_rows[:size].copy_(chunk)
            torch.addmm(head.bias, chunk, head.weight.t(), out=logits[:size])
            torch.argmax(logits[:size], dim=1, out=predicted[start : start + size])
    return predicted


def linear_probe_top1(
    train_features: torch.Tensor,
    train_labels: torch.Tensor,
    test_features: torch.Tensor,
    test_labels: torch.Tensor,
    *,
    epochs: int = DEFAULT_EPOCHS,
    lr: float | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    seed: int = 0,
    num_classes: int | None = None,
) -> float:
    """Linear-probe top-1 accuracy (0..1): DINOv1's linear evaluation on frozen features.

    Args:
        train_features, test_features: (N, D) and (Q, D) embeddings, any float dtype, any strides; all
            work happens on ``train_features``' device (test rows are moved there chunk by chunk).
        train_labels, test_labels: (N,) and (Q,) integer class ids >= 0.
        epochs, lr, batch_size, seed: see :class:`LinearProbe` (published: 100 epochs, lr 0.001 x
            batch / 256, batch 256).
        num_classes: outputs of the head; None = ``max(train_labels) + 1`` (a test class never seen in
            training counts as an error).

    Same seed, device and thread count: the same value bit for bit. See the module docstring for the
    protocol, its deviations from DINO's script and the torchrun behaviour.
    """
    probe = LinearProbe(epochs=epochs, lr=lr, batch_size=batch_size, seed=seed)
    return probe.top1(train_features, train_labels, test_features, test_labels, num_classes)


def _check_features(features: object, split: str) -> None:
    if not isinstance(features, torch.Tensor) or features.ndim != 2 or not features.is_floating_point():
        shape = tuple(features.shape) if isinstance(features, torch.Tensor) else type(features).__name__
        raise SnapViTError(
            f"The linear probe needs {split} features as a 2-D float tensor (N, D), got {shape}.",
            "Pass the (train, test) embeddings from extract_features / KnnEvaluator.features.",
        )
    if split == "train" and features.shape[0] == 0:
        raise SnapViTError("The linear probe needs at least one train image.", "Check the data source's train split.")
    if features.shape[1] == 0:
        raise SnapViTError(f"The {split} features have no columns (D = 0).", "Check the model's embedding.")


def _check_labels(labels: object, count: int, split: str) -> torch.Tensor:
    if (
        not isinstance(labels, torch.Tensor)
        or labels.ndim != 1
        or labels.is_floating_point()
        or labels.is_complex()
        or labels.dtype == torch.bool
    ):
        raise SnapViTError(
            f"The linear probe needs {split} labels as a 1-D integer tensor.", "Pass int64 class ids (N,)."
        )
    if labels.shape[0] != count:
        raise SnapViTError(
            f"{count} {split} features but {labels.shape[0]} {split} labels.", "Pass one label per feature row."
        )
    if count and int(labels.min()) < 0:
        raise SnapViTError(f"The {split} labels must be >= 0, got {int(labels.min())}.", "Use class ids 0..C-1.")
    return labels


def _num_classes(train_labels: torch.Tensor, num_classes: int | None) -> int:
    seen = int(train_labels.max()) + 1
    if num_classes is None:
        return seen
    if not _is_int(num_classes) or num_classes < seen:
        raise SnapViTError(
            f"num_classes must be an integer >= the largest train label + 1 ({seen}), got {num_classes!r}.",
            "Leave it unset to use the largest train label + 1.",
        )
    return num_classes
