"""The command line: JSON keys (a public interface), exit codes, one-line errors."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
from conftest import ROOT, SHARED_REFERENCE

from snapvit_core.cli import main

PUBLISHED = SHARED_REFERENCE / "snapvit-scores"


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_info_json_keys(capsys):
    code, out, _ = run_cli(capsys, "info", "--model", "vit_small_patch16_224.dino", "--random-init", "--json")
    payload = json.loads(out)
    assert code == 0
    assert {"num_blocks", "num_heads", "head_dim", "embed_dim", "mlp_hidden", "params", "flops"} <= set(payload)
    assert (payload["num_blocks"], payload["num_heads"], payload["embed_dim"]) == (12, 6, 384)


def test_info_embedded_human_readable(capsys):
    code, out, _ = run_cli(capsys, "info")
    assert code == 0 and "blocks" in out and "parameters" in out


def test_evaluate_json_keys_and_monotone_cost(capsys):
    results = []
    for sparsity in ("0", "0.5"):
        code, out, _ = run_cli(
            capsys,
            "evaluate",
            "--method",
            "magnitude",
            "--mlp-sparsity",
            sparsity,
            "--head-sparsity",
            sparsity,
            "--metrics",
            "knn,flops,params,latency",
            "--latency-batch",
            "4",
            "--json",
        )
        assert code == 0
        results.append(json.loads(out))
    keys = {"knn_top1", "params", "flops", "latency_ms", "kept_heads", "kept_neurons", "mlp_sparsity", "head_sparsity"}
    for payload in results:
        assert keys <= set(payload)
        assert 0.0 <= payload["knn_top1"] <= 1.0 and payload["latency_ms"] > 0
        assert len(payload["kept_heads"]) == len(payload["kept_neurons"]) >= 6
    assert results[1]["flops"] < results[0]["flops"] and results[1]["params"] < results[0]["params"]
    assert results[0]["knn_top1"] >= 0.9  # the embedded backbone, unpruned


@pytest.mark.parametrize("value", ["1.0", "-0.2", "abc", "1.5"])
def test_bad_sparsity_exits_with_one_line(capsys, value):
    code, out, err = run_cli(
        capsys, "evaluate", "--metrics", "flops", "--mlp-sparsity", value, "--head-sparsity", "0.1"
    )
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and "[0, 1)" in err


def test_unknown_model_and_missing_data_folder(capsys, tmp_path):
    code, _, err = run_cli(capsys, "info", "--model", "nope_model")
    assert code == 2 and "Unknown model id" in err and err.count("\n") == 1
    code, _, err = run_cli(
        capsys,
        "evaluate",
        "--data",
        f"folder:{tmp_path / 'missing'}",
        "--mlp-sparsity",
        "0.1",
        "--head-sparsity",
        "0.1",
    )
    assert code == 2 and "missing" in err and err.count("\n") == 1


def test_scores_for_another_architecture_are_refused(capsys, tmp_path):
    import torch

    from snapvit_core.scoring.scores import ImportanceScores
    from snapvit_core.scoring.scores_io import save_scores

    path = save_scores(ImportanceScores(torch.rand(12, 1536), torch.rand(12, 6)), tmp_path / "vit_s.safetensors")
    code, _, err = run_cli(
        capsys, "evaluate", "--scores", str(path), "--metrics", "flops", "--mlp-sparsity", "0.1", "--head-sparsity", "0"
    )
    assert code == 2 and "do not fit" in err and "[12, 1536]" in err


@pytest.mark.skipif(not PUBLISHED.is_dir(), reason="../shared/reference not present")
def test_plan_on_published_scores(capsys):
    path = PUBLISHED / "deit-3-vit-s-16.imagenet-1k.pt"
    code, out, _ = run_cli(
        capsys, "plan", "--scores", str(path), "--mlp-sparsity", "0.35", "--head-sparsity", "0.2", "--json"
    )
    payload = json.loads(out)
    assert code == 0 and len(payload["kept_heads"]) == 12 and len(payload["kept_neurons"]) == 12
    assert sum(payload["kept_neurons"]) <= 12 * 1536 - int(12 * 1536 * 0.35)
    assert all(h >= 1 for h in payload["kept_heads"])  # floor(6 * 0.2) = 1 protected head per block
    assert all(n >= int(1536 * 0.05) for n in payload["kept_neurons"])


def test_plan_on_missing_and_corrupt_files(capsys, tmp_path):
    code, _, err = run_cli(
        capsys, "plan", "--scores", str(tmp_path / "nope.safetensors"), "--mlp-sparsity", "0.1", "--head-sparsity", "0"
    )
    assert code == 2 and err.count("\n") == 1
    corrupt = tmp_path / "corrupt.safetensors"
    corrupt.write_bytes(b"\xff" * 20)
    code, _, err = run_cli(capsys, "plan", "--scores", str(corrupt), "--mlp-sparsity", "0.1", "--head-sparsity", "0")
    assert code == 2 and err.count("\n") == 1


def test_module_entry_point_help():
    result = subprocess.run(
        [sys.executable, "-m", "snapvit_core", "evaluate", "--help"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0 and "--mlp-sparsity" in result.stdout and "--scores" in result.stdout


def test_evaluate_with_correction_reports_it(capsys):
    code, out, err = run_cli(
        capsys,
        "evaluate",
        "--mlp-sparsity",
        "0.65",
        "--head-sparsity",
        "0.5",
        "--correct",
        "--correction-samples",
        "64",
        "--damping",
        "max",
        "--damping-fraction",
        "0.1",
        "--limit",
        "200",
        "--json",
    )
    assert code == 0, err
    payload = json.loads(out)
    assert payload["corrected"] is True and payload["correction"]["samples"] == 64
    assert all(layer["error_after"] <= layer["error_before"] + 1e-9 for layer in payload["correction"]["layers"])
    code, _, err = run_cli(
        capsys, "evaluate", "--mlp-sparsity", "0.1", "--head-sparsity", "0", "--correct", "--damping", "median"
    )
    assert code == 2 and "median" in err and err.count("\n") == 1


# --- issue 16: hostile arguments and faults -----------------------------------------------------


def _usage_error(capsys, *argv: str) -> str:
    """argparse refuses ``argv``: exit 2, one line on stderr, nothing on stdout."""
    with pytest.raises(SystemExit) as info:
        main(list(argv))
    out, err = capsys.readouterr()
    assert info.value.code == 2 and out == "" and err.count("\n") == 1 and "Traceback" not in err, err
    return err


@pytest.mark.parametrize("seed", ["-1", str(2**70), "1e3", "abc"])
@pytest.mark.parametrize("command", ["score", "search"])
def test_bad_seeds_are_one_line_usage_errors(capsys, tmp_path, command, seed):
    argv = [command, "--seed", seed, "--out", str(tmp_path / "o.safetensors")]
    if command == "search":
        argv += ["--scores", str(tmp_path / "s.safetensors")]
    assert "--seed" in _usage_error(capsys, *argv)


@pytest.mark.parametrize(
    "option",
    [("--k", "-1"), ("--k", "0"), ("--latency-batch", "-1"), ("--latency-batch", "0"), ("--limit", "0")],
)
def test_evaluate_counts_must_be_positive(capsys, option):
    err = _usage_error(capsys, "evaluate", *option, "--mlp-sparsity", "0.1", "--head-sparsity", "0")
    assert "positive integer" in err and option[0] in err


def test_latency_batch_has_an_upper_bound(capsys):
    err = _usage_error(capsys, "evaluate", "--latency-batch", "1000000", "--mlp-sparsity", "0", "--head-sparsity", "0")
    assert "largest batch" in err


def test_evaluate_says_when_k_is_capped_at_the_bank(capsys):
    code, out, err = run_cli(
        capsys,
        "evaluate",
        "--metrics",
        "knn",
        "--limit",
        "6",
        "--k",
        "500",
        "--mlp-sparsity",
        "0",
        "--head-sparsity",
        "0",
    )
    assert code == 0 and "larger than the kNN bank (6 images); using k=6" in err
    assert "(k=6," in out


def test_unexpected_exception_is_one_line_and_a_log_file(capsys, monkeypatch, tmp_path):
    """The last-resort handler: any non-SnapViTError gives one line naming it and a traceback file."""
    from snapvit_core.cli import info

    def explode(*args, **kwargs):
        raise ValueError("disk said no\nsecond line")

    monkeypatch.setattr(info, "load_backbone", explode)
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path))
    code, out, err = run_cli(capsys, "info")
    assert code == 2 and out == "" and err.count("\n") == 1 and "Traceback" not in err
    assert "ValueError: disk said no second line" in err
    logs = list(tmp_path.glob("snapvit-error-*.log"))
    assert len(logs) == 1 and str(logs[0]) in err
    assert "Traceback" in logs[0].read_text() and "explode" in logs[0].read_text()


def test_unexpected_exception_without_a_writable_temp_folder(capsys, monkeypatch, tmp_path):
    from snapvit_core.cli import info

    monkeypatch.setattr(info, "load_backbone", lambda *a, **k: (_ for _ in ()).throw(MemoryError()))
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path / "missing"))
    code, _, err = run_cli(capsys, "info")
    assert code == 2 and err.count("\n") == 1 and "MemoryError" in err


def _embedded_scores_recorded_for(tmp_path, backbone_id):
    from snapvit_core.engine.backbones import load_backbone
    from snapvit_core.scoring.data_free import magnitude_scores
    from snapvit_core.scoring.scores_io import save_scores

    scores = magnitude_scores(load_backbone("embedded").model).with_metadata(backbone=backbone_id)
    return save_scores(scores, tmp_path / "other.safetensors")


@pytest.mark.parametrize("command", ["evaluate", "export"])
def test_scores_of_another_backbone_with_the_same_shapes(capsys, tmp_path, command):
    """Item 12: refused by default; --allow-other-backbone proceeds with a visible warning."""
    path = _embedded_scores_recorded_for(tmp_path, "vit_small_patch16_224.dino")
    argv = [command, "--scores", str(path), "--mlp-sparsity", "0.3", "--head-sparsity", "0"]
    argv += ["--metrics", "flops"] if command == "evaluate" else ["--out", str(tmp_path / "e")]
    code, out, err = run_cli(capsys, *argv)
    assert code == 2 and out == "" and err.count("\n") == 1
    assert "made for 'vit_small_patch16_224.dino'" in err and "--allow-other-backbone" in err
    code, out, err = run_cli(capsys, *argv, "--allow-other-backbone")
    assert code == 0 and "warning:" in err and "vit_small_patch16_224.dino" in err


@pytest.mark.skipif(not PUBLISHED.is_dir(), reason="../shared/reference not present")
def test_published_dino_scores_on_the_default_vit_b_weights_are_refused(capsys):
    """dino_vitb16 scores have the shapes of vit_base_patch16_224 but not its (augreg) weights."""
    path = PUBLISHED / "dino_vitb16.imagenet-1k.pt"
    argv = ["evaluate", "--model", "vit_base_patch16_224", "--random-init", "--scores", str(path)]
    code, _, err = run_cli(capsys, *argv, "--metrics", "flops", "--mlp-sparsity", "0.3", "--head-sparsity", "0")
    assert code == 2 and "vit_base_patch16_224.dino" in err
    argv[2] = "vit_base_patch16_224.dino"
    code, _, err = run_cli(capsys, *argv, "--metrics", "params", "--mlp-sparsity", "0.3", "--head-sparsity", "0")
    assert code == 0, err


@pytest.mark.parametrize("command", ["score", "search"])
def test_unwritable_out_fails_before_any_work(capsys, tmp_path, monkeypatch, command):
    """A read-only --out folder is found before the (long) pass, not after it."""
    import errno

    from snapvit_core.engine import backbones
    from snapvit_core.files import atomic as _atomic

    def read_only(*args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(_atomic.tempfile, "mkstemp", read_only)
    monkeypatch.setattr(backbones, "load_backbone", lambda *a, **k: pytest.fail("the model was loaded"))
    argv = [command, "--out", str(tmp_path / "ro" / "s.safetensors")]
    if command == "search":
        argv += ["--scores", str(tmp_path / "base.safetensors")]
    code, _, err = run_cli(capsys, *argv)
    assert code == 2 and err.count("\n") == 1 and "Read-only file system" in err


# ---------------------------------------------------------------- issue 15: latency model and search progress


def test_evaluate_latency_model_adds_its_source(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("SNAPVIT_CACHE_DIR", str(tmp_path))
    base = ["evaluate", "--metrics", "flops", "--latency-batch", "4", "--json"]
    code, out, _ = run_cli(capsys, *base, "--mlp-sparsity", "0", "--head-sparsity", "0", "--latency", "model")
    payload = json.loads(out)
    assert code == 0 and payload["latency_source"] == "predicted" and payload["latency_ms"] > 0
    assert payload["latency"]["speedup"] == 1.0 and payload["latency"]["batch_size"] == 4
    assert "per_image_similarity" not in payload
    cached = list((tmp_path / "latency").glob("*.json"))
    assert len(cached) == 1
    code, out, _ = run_cli(capsys, *base, "--mlp-sparsity", "0.5", "--head-sparsity", "0.4", "--latency", "model")
    pruned = json.loads(out)
    assert list((tmp_path / "latency").glob("*.json")) == cached  # the second call loaded the calibration
    assert pruned["flops"] < payload["flops"] and pruned["latency_source"] == "predicted"
    code, out, _ = run_cli(capsys, *base[:-1], "--mlp-sparsity", "0.5", "--head-sparsity", "0.4", "--latency", "model")
    assert code == 0 and "predicted" in out and "latency model" in out
    with pytest.raises(SystemExit) as exit_info:
        main([*base, "--mlp-sparsity", "0", "--head-sparsity", "0", "--latency", "guess"])
    assert exit_info.value.code == 2 and "--latency" in capsys.readouterr().err


def test_evaluate_default_keeps_the_measured_keys(capsys):
    code, out, _ = run_cli(
        capsys, "evaluate", "--metrics", "flops", "--mlp-sparsity", "0.2", "--head-sparsity", "0", "--json"
    )
    payload = json.loads(out)
    assert code == 0 and "latency_source" not in payload and "per_image_similarity" not in payload
    assert payload["latency_ms"] is None and payload["flops"] > 0


def _search_argv(tmp_path) -> list[str]:
    from snapvit_core.engine.backbones import load_backbone
    from snapvit_core.scoring.data_free import magnitude_scores
    from snapvit_core.scoring.scores_io import save_scores

    base = tmp_path / "base.safetensors"
    save_scores(magnitude_scores(load_backbone("embedded", random_init=True).model), base)
    return [
        "search",
        "--random-init",
        "--data",
        "procedural",
        "--eval-images",
        "8",
        "--evaluations",
        "6",
        "--population-size",
        "5",
        "--scores",
        str(base),
        "--out",
        str(tmp_path / "out.safetensors"),
        "--json",
    ]


@pytest.mark.slow
def test_search_shows_progress_by_default_and_quiet_silences_it(capsys, tmp_path):
    argv = _search_argv(tmp_path)
    code, out, err = run_cli(capsys, *argv)
    assert code == 0 and json.loads(out)["evaluations"] == 6
    assert err.count("evaluation ") == 6 and "evaluation 6/6" in err
    code, out, err = run_cli(capsys, *argv, "--quiet")
    assert code == 0 and json.loads(out)["evaluations"] == 6 and "evaluation" not in err
    code, out, err = run_cli(capsys, "-v", *argv)
    assert code == 0 and "evaluation 6/6" in err


def test_damaged_image_with_control_characters_in_its_name_is_one_clean_line(capsys, tmp_path):
    """Issue 23 item 8: a file name holding a newline and a terminal escape made a multi-line, coloured error."""
    from PIL import Image

    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        for i in range(4):
            Image.new("RGB", (16, 16), (60 * i, 0, 0)).save(tmp_path / name / f"{i}.png")
    bad = tmp_path / "a" / "bad\n\x1b[31mred\u202e.png"
    Image.new("RGB", (64, 64), (9, 9, 9)).save(bad, format="PNG")
    bad.write_bytes(bad.read_bytes()[:60])  # the header is intact, the pixels are cut
    argv = ["evaluate", "--data", f"folder:{tmp_path}", "--metrics", "knn", "--k", "2"]
    code, _, err = run_cli(capsys, *argv, "--mlp-sparsity", "0", "--head-sparsity", "0")
    assert code == 2 and err.count("\n") == 1 and "could not be decoded" in err, err
    assert "\x1b" not in err and "\u202e" not in err and "bad\\n\\x1b[31mred\\u202e.png" in err


def test_evaluate_knn_and_linear_on_an_image_folder(capsys, tmp_path):
    """--metrics knn,linear on a folder data source (streamed): both metrics, one feature pass, in 0..1."""
    from PIL import Image

    generator = torch.Generator().manual_seed(0)
    for label, colour in (("red", (200, 30, 30)), ("blue", (30, 30, 200))):
        for split in ("train", "test"):
            (tmp_path / split / label).mkdir(parents=True)
            for i in range(6 if split == "train" else 3):
                noise = torch.randint(0, 40, (24, 24, 3), generator=generator).numpy().astype("uint8")
                pixels = (noise + torch.tensor(colour, dtype=torch.uint8).numpy()).clip(0, 255).astype("uint8")
                Image.fromarray(pixels).save(tmp_path / split / label / f"{i}.png")
    argv = ["evaluate", "--data", f"folder:{tmp_path}", "--metrics", "knn,linear", "--k", "3", "--json"]
    code, out, err = run_cli(capsys, *argv, "--mlp-sparsity", "0.3", "--head-sparsity", "0.2", "--linear-epochs", "20")
    assert code == 0, err
    result = json.loads(out)
    assert 0.0 <= result["knn_top1"] <= 1.0 and 0.0 <= result["linear_top1"] <= 1.0
    assert result["linear_probe"]["epochs"] == 20 and result["data"] == f"folder:{tmp_path}"
