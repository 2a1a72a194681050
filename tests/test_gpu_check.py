"""benchmarks/gpu_check.py: the dry run (tiny sizes, CPU) completes and reports every stage; errors are loud."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


def load_gpu_check():
    spec = importlib.util.spec_from_file_location("gpu_check", ROOT / "benchmarks" / "gpu_check.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_dry_run_reports_every_stage(tmp_path):
    torch.set_num_threads(1)
    out = tmp_path / "gpu.md"
    assert load_gpu_check().main(["--dry-run", "--out", str(out)]) == 0
    report = out.read_text()
    for stage in (
        "CUDA tests",
        "scoring 4 images",
        "search, 6 evaluations",
        "correction on 16",
        "kNN 64 / 16",
        "width alignment",
        "total",
    ):
        assert stage in report, stage
    assert report.count("x |") >= 7 * 3  # FLOPs ratio and two speed-ups at each published pair
    assert report.count(" % |") >= 6 * 5  # alignment: each pruned published pair at N = 1, 8, 16, 32, 64
    assert [p.name for p in tmp_path.iterdir()] == ["gpu.md"]  # written atomically


def test_errors_stop_the_check_loudly(tmp_path, monkeypatch):
    module = load_gpu_check()

    def broken(*args, **kwargs):
        raise RuntimeError("injected failure")

    monkeypatch.setattr(module, "compute_scores", broken)
    with pytest.raises(RuntimeError, match="injected failure"):
        module.main(["--dry-run", "--out", str(tmp_path / "gpu.md")])
    assert not (tmp_path / "gpu.md").exists()


def test_without_cuda_the_real_check_refuses_to_run(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(SystemExit, match="no CUDA device"):
        load_gpu_check().main([])
