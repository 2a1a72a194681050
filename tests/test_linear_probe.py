"""Linear probe (DINOv1's linear evaluation on frozen features): accuracy, protocol, determinism, bad input."""

from __future__ import annotations

import math
import os
import runpy
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from conftest import LargestTensor
from torch import nn

from snapvit_core.errors import SnapViTError
from snapvit_core.evaluation.linear_probe import (
    DEFAULT_BATCH_SIZE,
    INIT_STD,
    LinearProbe,
    linear_probe_predict,
    linear_probe_top1,
    make_linear_head,
)

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def clustered(n_per_class: int, classes: int, dim: int = 16, noise: float = 0.3, seed: int = 0):
    """Gaussian clusters around fixed centres of norm ~10 (like LayerNorm'd embeddings); ``seed`` only changes
    the noise."""
    centres = F.normalize(torch.randn(classes, dim, generator=torch.Generator().manual_seed(123)), dim=1) * 10
    generator = torch.Generator().manual_seed(seed)
    labels = torch.arange(classes).repeat_interleave(n_per_class)
    features = centres[labels] + noise * 10 * torch.randn(len(labels), dim, generator=generator) / math.sqrt(dim)
    return features, labels


def test_separable_clusters_reach_full_accuracy():
    train, train_labels = clustered(60, 5)
    test, test_labels = clustered(20, 5, seed=1)
    assert linear_probe_top1(train, train_labels, test, test_labels) == 1.0


def test_random_labels_stay_near_chance():
    generator = torch.Generator().manual_seed(0)
    train, test = torch.randn(600, 32, generator=generator), torch.randn(1000, 32, generator=generator)
    train_labels = torch.randint(0, 10, (600,), generator=generator)
    test_labels = torch.randint(0, 10, (1000,), generator=generator)
    assert linear_probe_top1(train, train_labels, test, test_labels, epochs=20) < 0.16  # chance: 0.10 +- 0.01


def test_same_seed_is_bit_identical_and_other_seeds_train_other_heads():
    train, train_labels = clustered(40, 6, noise=1.2)
    test, test_labels = clustered(30, 6, noise=1.2, seed=1)
    first = linear_probe_top1(train, train_labels, test, test_labels, epochs=10, seed=7)
    assert linear_probe_top1(train, train_labels, test, test_labels, epochs=10, seed=7) == first
    state = torch.get_rng_state()
    heads = [LinearProbe(epochs=10, seed=seed).fit(train, train_labels) for seed in (7, 7, 8)]
    assert torch.equal(torch.get_rng_state(), state)  # its own generator: the caller's global RNG is untouched
    assert torch.equal(heads[0].weight, heads[1].weight) and torch.equal(heads[0].bias, heads[1].bias)
    assert not torch.equal(heads[0].weight, heads[2].weight)  # another init and other shuffles
    assert 0.0 <= linear_probe_top1(train, train_labels, test, test_labels, epochs=10, seed=8) <= 1.0


@pytest.mark.parametrize(
    "options, message",
    [
        ({"epochs": 0}, "from 1 to 10000"),
        ({"epochs": 10_001}, "from 1 to 10000"),
        ({"epochs": 2.0}, "from 1 to 10000"),
        ({"epochs": True}, "from 1 to 10000"),
        ({"lr": 0.0}, "finite number > 0"),
        ({"lr": -0.1}, "finite number > 0"),
        ({"lr": float("nan")}, "finite number > 0"),
        ({"lr": float("inf")}, "finite number > 0"),
        ({"lr": "0.1"}, "finite number > 0"),
        ({"batch_size": 0}, "batch_size must be an integer >= 1"),
        ({"batch_size": 2.5}, "batch_size must be an integer >= 1"),
        ({"seed": -1}, "from 0 to 2\\*\\*63 - 1"),
        ({"seed": 2**63}, "from 0 to 2\\*\\*63 - 1"),
        ({"num_classes": 2}, "largest train label \\+ 1 \\(3\\)"),
    ],
)
def test_invalid_settings_are_clear_errors(options, message):
    features, labels = torch.randn(6, 4), torch.tensor([0, 1, 2, 0, 1, 2])
    with pytest.raises(SnapViTError, match=message):
        linear_probe_top1(features, labels, features, labels, **options)


def test_invalid_inputs_are_clear_errors():
    features, labels = torch.randn(6, 4), torch.tensor([0, 1, 2, 0, 1, 2])
    cases = [
        ((features[:, 0], labels, features, labels), "2-D float tensor"),
        ((features.long(), labels, features, labels), "2-D float tensor"),
        ((features, labels.float(), features, labels), "1-D integer tensor"),
        ((features, labels[:5], features, labels), "6 train features but 5 train labels"),
        ((features, labels - 1, features, labels), "must be >= 0"),
        ((features[:0], labels[:0], features, labels), "at least one train image"),
        ((features, labels, features[:0], labels[:0]), "at least one test image"),
        ((features, labels, torch.randn(6, 5), labels), "differ in width: 4 vs 5"),
    ]
    for args, message in cases:
        with pytest.raises(SnapViTError, match=message):
            linear_probe_top1(*args)
    with pytest.raises(SnapViTError, match="diverged"):
        linear_probe_top1(features * float("inf"), labels, features, labels, epochs=1)


def test_float16_features_and_non_contiguous_views_work():
    train, train_labels = clustered(50, 4, dim=32, noise=1.0)
    test, test_labels = clustered(25, 4, dim=32, noise=1.0, seed=1)
    reference = linear_probe_top1(train, train_labels, test, test_labels, epochs=20)
    half = linear_probe_top1(train.half(), train_labels, test.half(), test_labels, epochs=20)
    assert abs(half - reference) <= 0.03  # fp16 storage rounding only
    bf16 = linear_probe_top1(train.bfloat16(), train_labels, test.bfloat16(), test_labels, epochs=20)
    assert abs(bf16 - reference) <= 0.05
    wide = torch.zeros(train.shape[0], 64)
    wide[:, ::2] = train
    view = wide[:, ::2]  # strided columns
    assert not view.is_contiguous()
    transposed = test.t().contiguous().t()  # column-major rows
    assert not transposed.is_contiguous()
    assert linear_probe_top1(view, train_labels, transposed, test_labels, epochs=20) == reference


def test_head_init_is_n_0_001_with_zero_bias_and_leaves_the_global_rng_alone():
    state = torch.get_rng_state()
    head = make_linear_head(768, 1000, generator=torch.Generator().manual_seed(0))
    assert torch.equal(torch.get_rng_state(), state)
    assert isinstance(head, nn.Linear) and head.weight.shape == (1000, 768)
    weight = head.weight.detach()
    assert abs(float(weight.std()) - INIT_STD) < 0.0002  # 768,000 draws: std of the std ~ 8e-6
    assert abs(float(weight.mean())) < 0.0002
    assert torch.equal(head.bias, torch.zeros(1000))
    again = make_linear_head(768, 1000, generator=torch.Generator().manual_seed(0))
    assert torch.equal(head.weight, again.weight)


def test_defaults_follow_dino_linear_scaling_and_cosine_schedule():
    probe = LinearProbe()
    assert (probe.epochs, probe.batch_size, probe.seed) == (100, DEFAULT_BATCH_SIZE, 0)
    assert probe.base_lr == pytest.approx(0.001 * DEFAULT_BATCH_SIZE / 256)
    assert LinearProbe(batch_size=1024).base_lr == pytest.approx(0.004)
    assert LinearProbe(lr=0.03, batch_size=1024).base_lr == 0.03
    # torch's CosineAnnealingLR(T_max=epochs, eta_min=0), stepped once per epoch
    parameter = nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([parameter], lr=probe.base_lr, momentum=0.9)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=probe.epochs, eta_min=0)
    for epoch in range(probe.epochs):
        assert probe.lr_at(epoch) == pytest.approx(optimizer.param_groups[0]["lr"], rel=1e-9, abs=1e-15)
        optimizer.step()
        scheduler.step()


def test_training_equals_dinos_autograd_loop_weight_for_weight():
    """nn.Linear + CrossEntropyLoss + torch.optim.SGD + CosineAnnealingLR, fed the same draws (init, then one
    permutation per epoch), with a partial last batch: the hand-written step gives the same head."""
    train, train_labels = clustered(23, 5, dim=12, noise=1.0)  # 115 rows: batches 32, 32, 32, 19
    probe = LinearProbe(epochs=6, batch_size=32, seed=3)
    head = probe.fit(train, train_labels)

    generator = torch.Generator().manual_seed(3)
    reference = nn.Linear(12, 5)
    with torch.no_grad():
        reference.weight.normal_(0.0, 0.01, generator=generator)
        reference.bias.zero_()
    optimizer = torch.optim.SGD(reference.parameters(), lr=0.001 * 32 / 256, momentum=0.9, weight_decay=0)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=6, eta_min=0)
    for _ in range(6):
        order = torch.randperm(115, generator=generator)
        for start in range(0, 115, 32):
            index = order[start : start + 32]
            loss = nn.CrossEntropyLoss()(reference(train[index]), train_labels[index])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        scheduler.step()
    torch.testing.assert_close(head.weight, reference.weight, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(head.bias, reference.bias, rtol=1e-5, atol=1e-7)


def test_close_to_scikit_learn_logistic_regression():
    from sklearn.linear_model import LogisticRegression

    train, train_labels = clustered(300, 6, dim=24, noise=2.0)  # enough rows that C hardly matters
    test, test_labels = clustered(200, 6, dim=24, noise=2.0, seed=1)
    ours = linear_probe_top1(train, train_labels, test, test_labels)
    sklearn = LogisticRegression(C=1.0, max_iter=2000).fit(train.numpy(), train_labels.numpy())
    theirs = sklearn.score(test.numpy(), test_labels.numpy())
    assert 0.6 < theirs < 0.95  # a problem with errors to disagree on (measured: 0.829 both)
    assert abs(ours - theirs) <= 0.02, (ours, theirs)


def test_train_features_are_never_copied_whole():
    """Records every tensor the probe creates: the largest is a batch, a permutation or the labels, never (N, D)."""
    rows, dim = 8_000, 64
    train = torch.randn(rows, dim).half()
    labels = torch.randint(0, 10, (rows,))
    with LargestTensor() as recorded:
        head = LinearProbe(epochs=1).fit(train, labels)
        predicted = linear_probe_predict(head, train, chunk_size=1000)
    assert predicted.shape == (rows,)
    bound = max(DEFAULT_BATCH_SIZE * dim * 4, rows * 8, 1000 * dim * 4)  # float batch, int64 labels/order, chunk
    assert recorded.largest <= bound < train.numel() * train.element_size()


WORKER = """
import sys, torch
from snapvit_core.runtime import distributed
from snapvit_core.evaluation.linear_probe import linear_probe_top1

torch.set_num_threads(1)
distributed.init_from_env("cpu")
generator = torch.Generator().manual_seed(0)
train, test = torch.randn(300, 16, generator=generator), torch.randn(100, 16, generator=generator)
train_labels = (train[:, 0] > 0).long() + 2 * (train[:, 1] > 0).long()
test_labels = (test[:, 0] > 0).long() + 2 * (test[:, 1] > 0).long()
value = linear_probe_top1(train, train_labels, test, test_labels, epochs=30, seed=5)  # quadrants
values = distributed.all_gather_floats([value], distributed.world_size())
if distributed.is_main():
    torch.save({"world_size": distributed.world_size(), "values": values}, sys.argv[1])
"""


@pytest.mark.slow
def test_two_gloo_processes_give_the_single_process_value(tmp_path, monkeypatch):
    worker = tmp_path / "worker.py"
    worker.write_text(textwrap.dedent(WORKER))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "0"]
    command += ["--rdzv_backend", "c10d", "--rdzv_endpoint", "localhost:0", str(worker), str(tmp_path / "two.pt")]
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    monkeypatch.setattr(sys, "argv", [str(worker), str(tmp_path / "one.pt")])
    runpy.run_path(str(worker), run_name="__main__")  # the same script in this (single) process
    two = torch.load(tmp_path / "two.pt", weights_only=True)
    one = torch.load(tmp_path / "one.pt", weights_only=True)
    assert two["world_size"] == 2 and one["world_size"] == 1
    assert two["values"] == [one["values"][0]] * 2 and 0.5 < one["values"][0] <= 1.0  # chance: 0.25


def test_a_cancelled_probe_stops_within_an_epoch():
    """The filler cancels a probe when a viewer moves on: training polls ``cancel`` every epoch."""
    from snapvit_core.errors import CancelledError

    generator = torch.Generator().manual_seed(0)
    features, labels = torch.randn(64, 8, generator=generator), torch.arange(64) % 4
    polls = []

    def cancel() -> bool:
        polls.append(1)
        return len(polls) > 3

    with pytest.raises(CancelledError):
        LinearProbe(epochs=100).top1(features, labels, features, labels, cancel=cancel)
    assert len(polls) == 4  # the fourth epoch's poll stopped it
    assert LinearProbe(epochs=5).top1(features, labels, features, labels, cancel=lambda: False) >= 0.0
