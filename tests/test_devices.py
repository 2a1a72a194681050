"""Device names: one rule set for the command line and the app (devices.py)."""

from __future__ import annotations

import pytest
import torch

from snapvit_core.engine.devices import resolve_device
from snapvit_core.errors import SnapViTError


@pytest.fixture
def gpus(monkeypatch):
    """Pretend PyTorch sees ``count`` CUDA GPUs."""

    def set_count(count: int) -> None:
        monkeypatch.setattr(torch.cuda, "is_available", lambda: count > 0)
        monkeypatch.setattr(torch.cuda, "device_count", lambda: count)

    return set_count


def test_auto_follows_what_pytorch_sees(gpus):
    gpus(0)
    assert resolve_device("auto") == "cpu" and resolve_device("cpu") == "cpu"
    gpus(2)
    assert resolve_device("auto") == "cuda"
    assert resolve_device("cuda") == "cuda" and resolve_device("cuda:1") == "cuda:1"


@pytest.mark.parametrize("name", ["cuda", "cuda:0"])
def test_cuda_without_a_gpu_is_refused(gpus, name):
    gpus(0)
    with pytest.raises(SnapViTError, match="no CUDA GPU is visible"):
        resolve_device(name)


def test_a_gpu_index_out_of_range_is_refused(gpus):
    gpus(1)
    with pytest.raises(SnapViTError, match="sees 1 CUDA GPU"):
        resolve_device("cuda:3")


@pytest.mark.parametrize("name", ["gpu", "cudax", "cuda:", "mps", ""])
def test_unknown_names_list_the_accepted_ones(name):
    with pytest.raises(SnapViTError, match="cpu, cuda, cuda:N or auto"):
        resolve_device(name)
