"""The ``embedded`` source: the embedded backbone's cluttered-digits dataset (fixed split, offline)."""

from __future__ import annotations

import hashlib
import json
from collections import Counter

import numpy as np
import torch
from PIL import Image

from snapvit_core.data.sets import ImageSet, KnnSplits
from snapvit_core.data.spec import _subset
from snapvit_core.errors import SnapViTError


def _embedded_set(split: str, limit: int | None, seed: int) -> ImageSet:
    from snapvit_core.engine import embedded

    images, labels = embedded.load_embedded_split(split)
    keep = _subset(len(labels), limit, seed)
    pil = [Image.fromarray(images[i].permute(1, 2, 0).numpy()) for i in keep]
    return ImageSet(pil, np.asarray(labels)[keep], embedded.EMBEDDED_CLASS_NAMES, f"embedded ({split})")


def _is_embedded_config(data_config: dict) -> bool:
    from snapvit_core.engine import embedded

    try:
        reference = embedded.read_embedded_config()["preprocessing"]
    except SnapViTError:
        return False
    size = reference["input_size"]
    return (
        tuple(data_config.get("input_size", ())) == tuple(size)
        and np.allclose(data_config.get("mean", ()), reference["mean"])
        and np.allclose(data_config.get("std", ()), reference["std"])
    )


def _embedded_knn_splits(data_config: dict, limit: int | None, seed: int) -> KnnSplits:
    """Fast path: the embedded images are already at the model's size; normalise the uint8 tensors."""
    from snapvit_core.engine import embedded

    tensors = {}
    digest = hashlib.blake2b(json.dumps(data_config, sort_keys=True, default=str).encode(), digest_size=16)
    for split in ("train", "test"):
        images, labels = embedded.load_embedded_split(split)
        keep = torch.as_tensor(_subset(len(labels), limit, seed))
        kept = images[keep].contiguous()
        digest.update(f"{split}{tuple(kept.shape)}".encode())
        digest.update(kept.numpy().tobytes())
        tensors[split] = (embedded.normalize_images(kept), torch.as_tensor(labels)[keep].long())
        digest.update(tensors[split][1].numpy().tobytes())
    return KnnSplits(
        *tensors["train"],
        *tensors["test"],
        embedded.EMBEDDED_CLASS_NAMES,
        "embedded",
        Counter(),
        source_digest=digest.hexdigest(),
    )
