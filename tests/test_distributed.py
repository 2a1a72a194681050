"""torchrun equivalence: 2 gloo processes give the single-process scores, kNN and search (issue 17 item 3).

One torchrun launch runs every library check (tests/distributed_worker.py); the CLI test launches
``torchrun -m snapvit_core score`` itself. The helpers in ``snapvit_core.runtime.distributed`` are also checked
to be the identity without a process group.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from snapvit_core.runtime import distributed

ROOT = Path(__file__).resolve().parents[1]
WORKER = ROOT / "tests" / "distributed_worker.py"


def torchrun(*args: str, nproc: int = 2, timeout: int = 300, check: bool = True) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(nproc), "--master_port", "0"]
    command += ["--rdzv_backend", "c10d", "--rdzv_endpoint", "localhost:0", *args]
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0 or not check, done.stdout[-3000:] + done.stderr[-3000:]
    return done


def test_helpers_are_the_identity_without_a_process_group():
    assert not distributed.is_distributed() and distributed.world_size() == 1 and distributed.is_main()
    assert distributed.shard_range(7) == range(7)
    rows = torch.arange(6.0).reshape(3, 2)
    assert distributed.all_gather_rows(rows, 3) is not None and torch.equal(distributed.all_gather_rows(rows, 3), rows)
    assert distributed.all_gather_floats([0.5, 0.25], 2) == [0.5, 0.25]
    assert not distributed.init_from_env("cpu")  # WORLD_SIZE unset: stays single-process


@pytest.mark.slow
def test_two_gloo_processes_equal_one(tmp_path):
    sys.path.insert(0, str(WORKER.parent))
    import distributed_worker

    single = distributed_worker.run()
    torchrun(str(WORKER), str(tmp_path / "two.pt"))
    double = torch.load(tmp_path / "two.pt", weights_only=True)
    assert double["world_size"] == 2 and single["world_size"] == 1
    for key in ("mlp", "heads", "per_image_mlp", "per_image_heads"):  # scores: within 1e-6 relative
        torch.testing.assert_close(double[key], single[key], rtol=1e-6, atol=1e-30)
    for key in ("train_features", "test_features"):  # kNN features gathered in order, padding dropped
        assert double[key].shape == single[key].shape
        torch.testing.assert_close(double[key], single[key])
    assert double["top1"] == single["top1"]
    assert double["explorer_knn"] == single["explorer_knn"]
    assert double["explorer_linear"] == single["explorer_linear"] is not None  # linear probe: identical
    assert double["fitness"] == single["fitness"] and len(single["fitness"]) == 12  # search: identical
    assert torch.equal(double["multipliers"], single["multipliers"])
    assert double["best_fitness"] == single["best_fitness"]


@pytest.mark.slow
def test_torchrun_cli_evaluate_knn_and_linear_equal_one_process():
    """evaluate --metrics knn,linear under torchrun: one JSON (rank 0), the single process's values."""
    common = ["evaluate", "--model", "embedded", "--scores", "scores/embedded.xnes.safetensors", "--json"]
    common += ["--mlp-sparsity", "0.45", "--head-sparsity", "0.3", "--metrics", "knn,linear", "--limit", "100"]
    two = torchrun("-m", "snapvit_core", *common)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    one = subprocess.run(
        [sys.executable, "-m", "snapvit_core", *common], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
    )
    assert one.returncode == 0, one.stderr
    single, double = json.loads(one.stdout), json.loads(two.stdout)
    assert double["knn_top1"] == single["knn_top1"] and double["linear_top1"] == single["linear_top1"] is not None


@pytest.mark.slow
def test_torchrun_cli_landscape_with_linear_equals_one_process(tmp_path):
    """landscape --metrics knn,linear under torchrun: the same CSV as one process, one JSON report."""
    common = ["landscape", "--model", "embedded", "--method", "magnitude", "--grid", "0.5", "--limit", "60"]
    common += ["--metrics", "knn,linear", "--latency", "none", "--json"]
    two = torchrun("-m", "snapvit_core", *common, "--out", str(tmp_path / "two.csv"), "--cache", str(tmp_path / "c2"))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    one = [sys.executable, "-m", "snapvit_core", *common, "--out", str(tmp_path / "one.csv")]
    one += ["--cache", str(tmp_path / "c1")]
    assert subprocess.run(one, cwd=ROOT, env=env, capture_output=True, timeout=300).returncode == 0
    assert (tmp_path / "two.csv").read_text() == (tmp_path / "one.csv").read_text()
    assert json.loads(two.stdout)["linear_points"] == 4  # one JSON document: rank 0 reports


@pytest.mark.slow
def test_torchrun_cli_score_writes_once_and_equals_one_process(tmp_path):
    common = ["score", "--model", "embedded", "--data", "procedural", "--samples", "6"]  # shipped weights
    common += ["--batch-size", "2"]
    torchrun("-m", "snapvit_core", *common, "--out", str(tmp_path / "two.safetensors"))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    one = [sys.executable, "-m", "snapvit_core", *common, "--out", str(tmp_path / "one.safetensors")]
    assert subprocess.run(one, cwd=ROOT, env=env, capture_output=True, timeout=300).returncode == 0
    from snapvit_core.scoring.scores_io import load_scores

    two, single = load_scores(tmp_path / "two.safetensors"), load_scores(tmp_path / "one.safetensors")
    torch.testing.assert_close(two.mlp, single.mlp, rtol=1e-6, atol=1e-30)
    torch.testing.assert_close(two.heads, single.heads, rtol=1e-6, atol=1e-30)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["one.safetensors", "two.safetensors"]  # no temp files


@pytest.mark.slow
def test_one_ranks_damaged_image_is_the_same_one_line_error_on_every_rank(tmp_path):
    """Issue 23 item 5: rank 1 printed the clean error, rank 0 'unexpected RuntimeError: [gloo] Connection closed'."""
    from PIL import Image

    for i in range(10):
        Image.new("RGB", (24, 24), (25 * i, 0, 0)).save(tmp_path / f"{i}.png")
    for i in (7, 8, 9):  # the last files: in rank 1's contiguous shard of the 8 training images only
        path = tmp_path / f"{i}.png"
        Image.new("RGB", (64, 64), (9, 9, 9)).save(path)
        path.write_bytes(path.read_bytes()[:60])  # the header is intact, the pixels are cut
    argv = ["-m", "snapvit_core", "score", "--data", f"folder:{tmp_path}", "--samples", "10", "--batch-size", "2"]
    done = torchrun(*argv, "--out", str(tmp_path / "s.safetensors"), check=False)
    assert done.returncode != 0
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 2 and errors[0] == errors[1], done.stderr[-3000:]  # one line per rank, the same
    assert "could not be decoded" in errors[0] and "unexpected" not in done.stderr and "gloo" not in done.stderr
    assert "exitcode: 2" in done.stderr  # torchrun reports the children's status
    assert not (tmp_path / "s.safetensors").exists()
