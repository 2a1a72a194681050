"""scripts/train_embedded.py: both objectives are bit-reproducible, and the DINO pieces keep their shapes.

The shipped assets take minutes to train; these tests run a few optimisation steps of the same code
(``max_steps``), twice, and compare the weights byte for byte. A sha256 recorded below is checked too
when the torch build is the one that recorded it (another build may round differently).
"""

from __future__ import annotations

import hashlib
import json
import sys

import pytest
import torch
from conftest import ROOT

from snapvit_core import embedded

sys.path.insert(0, str(ROOT / "scripts"))
import embedded_dino  # noqa: E402
import train_embedded  # noqa: E402

STEPS = 3
# (torch build, threads, CPU) -> objective -> sha256 of the weights after STEPS steps from seed 0. The
# CPU matters: MKL/oneDNN pick other kernels (other summation orders) on AMD and Intel, so a hash is
# checked only on the kind of machine that recorded it (both kinds run this project's CI).
RECORDED = {
    ("2.14.1+cu130", 1, "AuthenticAMD/AVX512"): {
        "supervised": "26b4ac9d5b5d5d298f6f8d6f4c5a57f8c3219662efa2b9f35a19a89eb8b68c81",
        "dino": "b583e6531d01284fa316b090e1db99f2c363b155fc59eaaf1ec103565412b8fc",
    },
    ("2.14.1+cu130", 1, "GenuineIntel/AVX512"): {
        "supervised": "803295ffd58ca36c2e64efe1bb7c5c028ecb13a0a97f38af33867ff20f655def",
        "dino": "ea005ef2ee323feee62a70194001219c266115ba32fec6a7945ac2a6970bad9f",
    },
}


def cpu_kind() -> str:
    """CPU vendor and the vector ISA torch dispatches to, e.g. 'GenuineIntel/AVX512'."""
    vendor = "unknown"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("vendor_id"):
                vendor = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{vendor}/{torch.backends.cpu.get_cpu_capability()}"


@pytest.fixture
def one_thread():
    threads, deterministic = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    yield
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(deterministic)


def weights_hash(model: torch.nn.Module) -> str:
    digest = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().contiguous().numpy().tobytes())
    return digest.hexdigest()


def short_run(objective: str) -> torch.nn.Module:
    args = train_embedded.parse_args(["--objective", objective])
    cfg, architecture = train_embedded.training_setup(args)
    config = {**embedded.read_embedded_config(), "architecture": architecture}
    if objective == "dino":
        return embedded_dino.train_dino(cfg, architecture, config, train_embedded.param_groups, max_steps=STEPS)
    return train_embedded.train(cfg, architecture, config, max_steps=STEPS)


@pytest.mark.parametrize("objective", ["supervised", "dino"])
def test_short_training_is_bit_reproducible(objective, one_thread):
    first, second = weights_hash(short_run(objective)), weights_hash(short_run(objective))
    assert first == second
    recorded = RECORDED.get((torch.__version__, torch.get_num_threads(), cpu_kind()))
    if recorded is not None:
        assert first == recorded[objective]


def test_defaults_keep_the_supervised_asset_and_give_dino_its_own():
    supervised, architecture = train_embedded.training_setup(train_embedded.parse_args([]))
    shipped = embedded.read_embedded_config()
    assert architecture == shipped["architecture"]
    assert {k: v for k, v in vars(supervised).items()} == {
        k: v for k, v in shipped["training"].items() if k in vars(supervised)
    }
    dino, dino_architecture = train_embedded.training_setup(train_embedded.parse_args(["--objective", "dino"]))
    assert isinstance(dino, embedded_dino.DinoConfig) and dino_architecture["num_classes"] == 0


def test_write_assets_names_files_by_model_id(tmp_path):
    model = embedded.build_embedded_architecture()
    config = {**embedded.read_embedded_config(), "model_id": embedded.EMBEDDED_SSL_MODEL_ID}
    weights, config_path = train_embedded.write_assets(model, config, tmp_path)
    assert weights.name == "embedded_ssl_vit.safetensors" and config_path.name == "embedded_ssl_vit.json"
    assert json.loads(config_path.read_text())["model_id"] == "embedded-ssl"
    assert not (tmp_path / embedded.WEIGHTS_FILENAME).exists()


def test_multi_crop_views_and_local_embedding_shapes():
    cfg = embedded_dino.DinoConfig()
    config = embedded.read_embedded_config()
    glyphs, _ = embedded.load_digit_glyphs("test")
    views = embedded_dino.multi_crop(glyphs[:5], torch.Generator().manual_seed(0), cfg, config)
    assert len(views) == 2 + cfg.local_crops
    assert [tuple(v.shape) for v in views[:2]] == [(5, 3, 24, 24)] * 2
    assert all(tuple(v.shape) == (5, 3, cfg.local_size, cfg.local_size) for v in views[2:])
    model = embedded.build_embedded_architecture(
        {**config, "architecture": {**config["architecture"], "num_classes": 0}}
    )
    with torch.no_grad():
        full = embedded_dino.embed_views(model, views[0])
        assert torch.equal(full, model.forward_head(model.forward_features(views[0]), pre_logits=True))
        assert embedded_dino.embed_views(model, views[-1]).shape == (5, 96)
        head = embedded_dino.DinoHead(96, 32, 16, 50)
        logits = head(full)
    assert logits.shape == (5, 50) and float(logits.abs().max()) <= 1.0 + 1e-5  # cosine logits


def test_dino_loss_is_lowest_when_student_matches_the_sharpened_teacher():
    cfg = embedded_dino.DinoConfig(out_dim=8)
    teacher = [torch.tensor([[5.0, 0, 0, 0, 0, 0, 0, 0]])] * 2
    matching = [torch.tensor([[1.0, -1, -1, -1, -1, -1, -1, -1]])] * 4
    other = [torch.tensor([[-1.0, 1, -1, -1, -1, -1, -1, -1]])] * 4
    center = torch.zeros(1, 8)
    assert embedded_dino.dino_loss(matching, teacher, center, cfg) < embedded_dino.dino_loss(
        other, teacher, center, cfg
    )
