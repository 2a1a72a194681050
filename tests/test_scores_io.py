"""Scores files: safetensors round trip, atomic save, bad inputs, hostile pickles, published import."""

from __future__ import annotations

import enum
import io
import json
import os
import pickle
import struct
import sys
import types
import zipfile
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from snapvit_core.errors import SnapViTError
from snapvit_core.scoring import scores_io
from snapvit_core.scoring.scores import ImportanceScores
from snapvit_core.scoring.scores_io import import_published_scores, load_scores, load_scores_bytes, save_scores

PUBLISHED_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "reference" / "snapvit-scores"
PUBLISHED = [  # file, model_type, mlp shape, head shape, suggested timm backbone
    (
        "deit-3-vit-s-16.imagenet-1k.pt",
        "deit-3-vit-s-16",
        (12, 1536),
        (12, 6),
        "deit3_small_patch16_224.fb_in22k_ft_in1k",
    ),
    ("dino_vitb16.imagenet-1k.pt", "dino_vitb16", (12, 3072), (12, 12), "vit_base_patch16_224.dino"),
    ("dinov3_vitb16.imagenet-1k.pt", "dinov3_vitb16", (12, 3072), (12, 12), "vit_base_patch16_dinov3.lvd1689m"),
]


def make_scores(seed: int = 0) -> ImportanceScores:
    generator = torch.Generator().manual_seed(seed)
    metadata = {
        "backbone": "vit_tiny_patch16_224",
        "backbone_shape": (3, 8, 2),
        "method": "magnitude",
        "data": None,
        "config": {"seed": 0, "ratios": (0.1, 0.2), "pca": True},
    }
    return ImportanceScores(
        torch.rand(3, 8, generator=generator), torch.rand(3, 2, generator=generator), 0.1, 0.25, metadata
    )


def load_both(path: Path) -> list[ImportanceScores]:
    return [load_scores(path), load_scores_bytes(path.read_bytes(), path.name)]


def expect_error(path: Path, *words: str) -> None:
    """Both loaders refuse ``path`` with a SnapViTError naming the file and containing ``words``."""
    for load, name in (
        (lambda: load_scores(path), str(path)),
        (lambda: load_scores_bytes(path.read_bytes(), "up.x"), "up.x"),
    ):
        with pytest.raises(SnapViTError) as info:
            load()
        message = str(info.value)
        assert name in message and "\n" not in message, message
        for word in words:
            assert word in message, message


# --- the project format -------------------------------------------------------------------------


def test_round_trip_keeps_tensors_ratios_and_metadata(tmp_path):
    scores = make_scores()
    path = save_scores(scores, tmp_path / "s.safetensors")
    for loaded in load_both(path):
        assert torch.equal(loaded.mlp, scores.mlp) and torch.equal(loaded.heads, scores.heads)
        assert loaded.mlp.dtype == torch.float32
        assert (loaded.min_mlp_keep_ratio, loaded.min_head_keep_ratio) == (0.1, 0.25)
        extra = {key: loaded.metadata.pop(key) for key in ("library_version", "saved_at")}
        assert loaded.metadata == json.loads(json.dumps(scores.metadata))  # tuples come back as lists
        assert loaded.metadata["backbone_shape"] == [3, 8, 2]
        assert extra["library_version"] and datetime.fromisoformat(extra["saved_at"]).utcoffset().total_seconds() == 0


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX file modes")
def test_saved_file_gets_the_umask_mode_not_the_temp_file_mode(tmp_path):
    previous = os.umask(0o022)
    try:
        path = save_scores(make_scores(), tmp_path / "s.safetensors")
    finally:
        os.umask(previous)
    assert path.stat().st_mode & 0o777 == 0o644  # readable by others, like any file the user saves


def test_file_layout_is_plain_safetensors(tmp_path):
    from safetensors import safe_open

    path = save_scores(make_scores(), tmp_path / "s.safetensors")
    with safe_open(path, framework="pt") as handle:
        assert set(handle.keys()) == {"mlp_scores", "head_scores"}
        document = json.loads(handle.metadata()["snapvit"])
    assert document["format"] == "snapvit-explorer-scores" and document["format_version"] == 1
    assert document["min_head_keep_ratio"] == 0.25 and document["metadata"]["method"] == "magnitude"


def test_save_refuses_other_suffixes_and_unserialisable_metadata(tmp_path):
    with pytest.raises(SnapViTError, match=r"\.safetensors"):
        save_scores(make_scores(), tmp_path / "s.pt")
    with pytest.raises(SnapViTError, match="cannot be saved as JSON"):
        save_scores(make_scores().with_metadata(model=torch.nn.Linear(2, 2)), tmp_path / "s.safetensors")
    assert list(tmp_path.iterdir()) == []
    path = save_scores(make_scores().with_metadata(top1=np.float32(0.5), n=np.int64(3)), tmp_path / "s.safetensors")
    assert load_scores(path).metadata["n"] == 3


def test_failed_save_keeps_the_old_file_and_leaves_no_temp_files(tmp_path, monkeypatch):
    path = save_scores(make_scores(seed=1), tmp_path / "s.safetensors")
    before = path.read_bytes()

    def disk_full(tensors, filename, metadata=None):
        Path(filename).write_bytes(b"half a file")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(scores_io, "save_file", disk_full)
    with pytest.raises(SnapViTError, match="Could not write"):
        save_scores(make_scores(seed=2), path)
    with pytest.raises(SnapViTError):
        save_scores(make_scores(seed=2), tmp_path / "new.safetensors")
    assert path.read_bytes() == before
    assert list(tmp_path.iterdir()) == [path]
    assert torch.equal(load_scores(path).mlp, make_scores(seed=1).mlp)


# --- bad inputs ---------------------------------------------------------------------------------


def test_missing_file_folder_and_empty_file(tmp_path):
    with pytest.raises(SnapViTError, match="does not exist"):
        load_scores(tmp_path / "nope.safetensors")
    with pytest.raises(SnapViTError, match="folder"):
        load_scores(tmp_path)
    (tmp_path / "empty.safetensors").write_bytes(b"")
    with pytest.raises(SnapViTError, match="empty"):
        load_scores(tmp_path / "empty.safetensors")
    with pytest.raises(SnapViTError, match="empty"):
        load_scores_bytes(b"", "up.safetensors")


@pytest.mark.parametrize("cut", [-1, -100, 20, 9])
def test_truncated_safetensors(tmp_path, cut):
    data = save_scores(make_scores(), tmp_path / "s.safetensors").read_bytes()
    bad = tmp_path / "cut.safetensors"
    bad.write_bytes(data[:cut])
    expect_error(bad, "truncated or corrupt")


def test_model_weights_are_not_scores(tmp_path):
    weights = {"blocks.0.attn.qkv.weight": torch.zeros(6, 2), "blocks.0.mlp.fc1.weight": torch.zeros(8, 2)}
    save_file(weights, tmp_path / "model.safetensors", metadata={"format": "pt"})
    expect_error(tmp_path / "model.safetensors", "looks like model weights", "blocks.0.attn.qkv.weight")


def test_score_tensors_without_metadata(tmp_path):
    save_file({"mlp_scores": torch.rand(2, 4), "head_scores": torch.rand(2, 2)}, tmp_path / "bare.safetensors")
    expect_error(tmp_path / "bare.safetensors", "'snapvit' metadata")


def _snapvit_file(path: Path, mlp: torch.Tensor, heads: torch.Tensor, **document) -> Path:
    document = {"format": "snapvit-explorer-scores", "format_version": 1, "min_mlp_keep_ratio": 0.05,
                "min_head_keep_ratio": 0.2, "metadata": {}, **document}  # fmt: skip
    save_file({"mlp_scores": mlp, "head_scores": heads}, path, metadata={"snapvit": json.dumps(document)})
    return path


def test_wrong_shape_dtype_values_and_version(tmp_path):
    expect_error(_snapvit_file(tmp_path / "a.safetensors", torch.rand(8), torch.rand(2, 2)), "2-D", "mlp_scores")
    expect_error(
        _snapvit_file(tmp_path / "b.safetensors", torch.rand(2, 8), torch.ones(2, 2, dtype=torch.int64)), "dtype"
    )
    nan = torch.rand(2, 8)
    nan[0, 0] = float("nan")
    expect_error(_snapvit_file(tmp_path / "c.safetensors", nan, torch.rand(2, 2)), "NaN")
    expect_error(_snapvit_file(tmp_path / "d.safetensors", torch.rand(2, 8), torch.rand(3, 2)), "number of blocks")
    expect_error(
        _snapvit_file(tmp_path / "e.safetensors", torch.rand(2, 8), torch.rand(2, 2), format_version=7), "Upgrade"
    )
    expect_error(
        _snapvit_file(tmp_path / "f.safetensors", torch.rand(2, 8), torch.rand(2, 2), format="other"), "not a scores"
    )
    bad_ratio = _snapvit_file(tmp_path / "g.safetensors", torch.rand(2, 8), torch.rand(2, 2), min_mlp_keep_ratio="x")
    expect_error(bad_ratio, "keep ratios")
    half = _snapvit_file(tmp_path / "h.safetensors", torch.rand(2, 8).half(), torch.rand(2, 2).bfloat16())
    assert load_scores(half).mlp.dtype == torch.float32


@pytest.mark.parametrize(
    "content",
    [
        b"\xff" * 20,
        b"just some text, not scores",
        b"\x89PNG\r\n\x1a\n" + bytes(64),
        pickle.dumps({"mlp_scores": [1.0]}, protocol=2),  # a raw pickle / legacy torch file
    ],
)
def test_other_formats_are_not_scores_files(tmp_path, content):
    path = tmp_path / "x.safetensors"
    path.write_bytes(content)
    expect_error(path, "not a scores file", ".safetensors scores file", "published SnapViT .pt file")


def test_corrupt_header_json(tmp_path):
    header = b'{"mlp_scores": nope'
    path = tmp_path / "x.safetensors"
    path.write_bytes(struct.pack("<Q", len(header)) + header)
    expect_error(path, "not valid JSON")


# --- torch zip checkpoints: built locally --------------------------------------------------------


def _zip(
    path: Path, pickle_bytes: bytes, storages: dict[str, bytes] | None = None, byteorder: bytes = b"little"
) -> Path:
    """A zip laid out like torch's: archive/data.pkl, archive/data/<key>, archive/byteorder."""
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("archive/data.pkl", pickle_bytes)
        archive.writestr("archive/byteorder", byteorder)
        for key, data in (storages or {}).items():
            archive.writestr(f"archive/data/{key}", data)
        archive.writestr("archive/version", b"3\n")
    return path


@pytest.fixture
def authors_package(monkeypatch):
    """A stand-in for the authors' ``src.models.enums`` so torch.save writes their globals."""
    module = types.ModuleType("src.models.enums")
    module.ModelType = enum.Enum("ModelType", {"DEIT": "deit-3-vit-s-16", "OTHER": "my-vit"}, module=module.__name__)
    module.MLPArchitecture = enum.Enum("MLPArchitecture", {"STANDARD": "standard"}, module=module.__name__)
    for name in ("src", "src.models"):
        monkeypatch.setitem(sys.modules, name, types.ModuleType(name))
    monkeypatch.setitem(sys.modules, "src.models.enums", module)
    return module


def _published_dict(enums, mlp, heads, **overrides) -> dict:
    return {
        "mlp_scores": mlp, "head_scores": heads, "model_type": enums.ModelType.DEIT,
        "mlp_architecture": enums.MLPArchitecture.STANDARD, "num_blocks": mlp.shape[0], "hidden_dim": mlp.shape[1],
        "embed_dim": 4 * heads.shape[1], "num_heads": heads.shape[1], "head_dim": 4,
        "min_hidden_dim_keep_ratio": 0.05, "min_head_keep_ratio": 0.2,
        "metadata": {"seed": 42, "ga_loss_types": ["cosine-similarity"], "pair": (1, 2)}, **overrides,
    }  # fmt: skip


def test_torch_saved_published_layout(tmp_path, authors_package):
    mlp, heads = torch.rand(12, 1536), torch.rand(12, 6)  # the shapes of deit-3-vit-s-16, which the file names
    torch.save(_published_dict(authors_package, mlp, heads), tmp_path / "p.pt")
    for loaded in load_both(tmp_path / "p.pt"):
        assert torch.equal(loaded.mlp, mlp) and torch.equal(loaded.heads, heads)
        assert loaded.metadata["published_model_type"] == "deit-3-vit-s-16"
        assert loaded.metadata["mlp_architecture"] == "standard"
        assert loaded.metadata["backbone"] == "deit3_small_patch16_224.fb_in22k_ft_in1k"
        assert loaded.metadata["published_metadata"] == {
            "seed": 42,
            "ga_loss_types": ["cosine-similarity"],
            "pair": [1, 2],
        }
    other = _published_dict(authors_package, mlp, heads, model_type=authors_package.ModelType.OTHER)
    torch.save(other, tmp_path / "o.pt")
    assert "backbone" not in import_published_scores(tmp_path / "o.pt").metadata  # unknown model: no guess


def test_strided_views_other_dtypes_and_big_endian(tmp_path, authors_package):
    base = torch.rand(5, 40)
    mlp = base[1:4, ::2]  # offset + stride into a larger shared storage
    heads = torch.rand(4, 3, dtype=torch.float64).t()  # transposed: non-contiguous
    other = authors_package.ModelType.OTHER  # an architecture without known shapes
    torch.save(_published_dict(authors_package, mlp, heads, head_dim=None, model_type=other), tmp_path / "v.pt")
    loaded = load_scores(tmp_path / "v.pt")
    assert torch.equal(loaded.mlp, mlp) and torch.allclose(loaded.heads, heads.float())
    torch.save(_published_dict(authors_package, mlp.half(), heads.bfloat16(), model_type=other), tmp_path / "h.pt")
    assert torch.equal(load_scores(tmp_path / "h.pt").mlp, mlp.half().float())
    with zipfile.ZipFile(tmp_path / "v.pt") as source:  # the same file written on a big-endian machine
        prefix = source.namelist()[0].split("/")[0]
        pickled = source.read(f"{prefix}/data.pkl")
        dtypes = (
            {"0": ">f4", "1": ">f8"}
            if b"FloatStorage" in pickled.split(b"DoubleStorage")[0]
            else {"0": ">f8", "1": ">f4"}
        )
        storages = {
            key: np.frombuffer(source.read(f"{prefix}/data/{key}"), dtype=dtype.replace(">", "<"))
            .astype(dtype)
            .tobytes()
            for key, dtype in dtypes.items()
        }
    big = import_published_scores(_zip(tmp_path / "big.pt", pickled, storages, byteorder=b"big"))
    assert torch.equal(big.mlp, mlp)


def test_declared_dims_must_match_tensors(tmp_path, authors_package):
    torch.save(
        _published_dict(authors_package, torch.rand(3, 16), torch.rand(3, 4), hidden_dim=1536), tmp_path / "p.pt"
    )
    expect_error(tmp_path / "p.pt", "hidden_dim=1536", "[3, 16]")


def test_checkpoints_that_are_not_scores(tmp_path):
    torch.save({"fc.weight": torch.rand(2, 2), "fc.bias": torch.rand(2)}, tmp_path / "sd.pt")
    expect_error(tmp_path / "sd.pt", "without 'mlp_scores'", "model weights")
    torch.save({f"blocks.{i}.weight": torch.rand(2) for i in range(40)}, tmp_path / "big.pt")
    expect_error(tmp_path / "big.pt", "model checkpoint")
    torch.save(torch.nn.Linear(2, 2), tmp_path / "module.pt")
    expect_error(tmp_path / "module.pt", "refused", "model checkpoint")


def test_broken_zips(tmp_path):
    with zipfile.ZipFile(tmp_path / "plain.zip", "w") as archive:
        archive.writestr("readme.txt", "hi")
    expect_error(tmp_path / "plain.zip", "not a torch checkpoint")
    expect_error(_zip(tmp_path / "garbage.pt", b"\x80\x02garbage"), "corrupt")
    expect_error(_zip(tmp_path / "nostop.pt", pickle.dumps({"a": 1}, protocol=2)[:-1]), "corrupt")
    torch.save({"mlp_scores": torch.rand(3, 8), "head_scores": torch.rand(3, 2)}, tmp_path / "ok.pt")
    data = (tmp_path / "ok.pt").read_bytes()
    (tmp_path / "half.pt").write_bytes(data[: len(data) // 2])
    expect_error(tmp_path / "half.pt", "corrupt")
    with zipfile.ZipFile(tmp_path / "ok.pt") as source:
        prefix = source.namelist()[0].split("/")[0]
        pickled = source.read(f"{prefix}/data.pkl")
        first = source.read(f"{prefix}/data/0")
    expect_error(_zip(tmp_path / "nostorage.pt", pickled, {"0": first}), "missing storage")
    expect_error(_zip(tmp_path / "short.pt", pickled, {"0": first[:10], "1": first}), "corrupt")


# --- hostile pickles ----------------------------------------------------------------------------


def _global(module: str, name: str) -> bytes:
    return b"c" + f"{module}\n{name}\n".encode()


def _str(text: str) -> bytes:
    data = text.encode()
    return b"X" + struct.pack("<I", len(data)) + data


def _call(module: str, name: str, *args: str) -> bytes:
    """GLOBAL module.name, args as a tuple, REDUCE."""
    return _global(module, name) + b"(" + b"".join(_str(a) for a in args) + b"tR"


class _Evil:
    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self):
        return os.system, (self.command,)


def _hostile_payloads(marker: Path) -> dict[str, bytes]:
    touch = f"touch {marker}"
    src = "src.models.enums"
    return {
        "os.system": b"\x80\x02" + _call("os", "system", touch) + b".",
        "posix.system via __reduce__": pickle.dumps(_Evil(touch), protocol=2),
        "builtins.eval": b"\x80\x02" + _call("builtins", "eval", f"__import__('os').system({touch!r})") + b".",
        "builtins.exec": b"\x80\x02" + _call("builtins", "exec", f"import os; os.system({touch!r})") + b".",
        "subprocess.getoutput": b"\x80\x02" + _call("subprocess", "getoutput", touch) + b".",
        "importlib": b"\x80\x02" + _call("importlib", "import_module", "os") + b".",
        "getattr on a placeholder": b"\x80\x02"
        + _global("builtins", "getattr")
        + b"("
        + _call(src, "ModelType", "x")
        + _str("__class__")
        + b"tR.",
        "dunder path in a src global": b"\x80\x04"
        + _str(src)
        + _str("ModelType.__class__.__subclasses__")
        + b"\x93)R.",
        "src module dunder": b"\x80\x02" + _call("src.__builtins__", "eval", "1") + b".",
        "calling a placeholder instance": b"\x80\x02" + _call(src, "ModelType", "x") + b"(" + _str(touch) + b"tR.",
        "INST opcode": b"(" + _str(touch) + b"ios\nsystem\n.",
        "OBJ opcode": b"\x80\x02(" + _global("os", "system") + _str(touch) + b"o.",
        "functools.partial": b"\x80\x02" + _call("functools", "partial", "x") + b".",
        "torch.load": b"\x80\x02" + _call("torch", "load", str(marker)) + b".",
        "numpy": b"\x80\x02" + _call("numpy", "load", str(marker)) + b".",
        "BUILD on a list": b"\x80\x02]}" + _str("append") + _str("x") + b"sb.",
        "NEWOBJ on OrderedDict": b"\x80\x02" + _global("collections", "OrderedDict") + b")\x81.",
    }


def test_hostile_payload_is_really_hostile(tmp_path):
    """Control: the plain unpickler does run the payload, so the refusals below are meaningful."""
    marker = tmp_path / "pwned"
    pickle.loads(_hostile_payloads(marker)["os.system"])
    assert marker.exists()


@pytest.mark.parametrize("variant", list(_hostile_payloads(Path("x"))))
def test_hostile_pickles_are_refused_without_running(tmp_path, variant):
    marker = tmp_path / "pwned"
    path = _zip(tmp_path / "evil.pt", _hostile_payloads(marker)[variant])
    with pytest.raises(SnapViTError) as info:
        load_scores(path)
    assert str(path) in str(info.value)
    assert "refused" in str(info.value) and "trust" in str(info.value)
    with pytest.raises(SnapViTError):
        load_scores_bytes(path.read_bytes(), "evil.pt")
    assert not marker.exists()


def test_hostile_tail_after_real_tensors_and_build_on_tensor(tmp_path):
    """A real scores pickle whose last entry calls os.system; and a BUILD into Tensor.__setstate__."""
    marker = tmp_path / "pwned"
    buffer = io.BytesIO()
    torch.save({"mlp_scores": torch.rand(3, 8), "head_scores": torch.rand(3, 2), "z": 0}, buffer)
    with zipfile.ZipFile(buffer) as source:
        prefix = source.namelist()[0].split("/")[0]
        pickled = source.read(f"{prefix}/data.pkl")
        storages = {key: source.read(f"{prefix}/data/{key}") for key in ("0", "1")}
    assert pickled.endswith(b"K\x00u.")  # ... 'z' BININT1 0, SETITEMS, STOP
    tail = pickled[:-4] + _call("os", "system", f"touch {marker}") + b"u."
    with pytest.raises(SnapViTError, match="refused.*os.system"):
        load_scores(_zip(tmp_path / "tail.pt", tail, storages))
    # a lone tensor followed by BUILD: the plain unpickler would call Tensor.__setstate__(state)
    buffer = io.BytesIO()
    torch.save(torch.rand(3, 8), buffer)
    with zipfile.ZipFile(buffer) as source:
        prefix = source.namelist()[0].split("/")[0]
        pickled = source.read(f"{prefix}/data.pkl")
        storage = source.read(f"{prefix}/data/0")
    build = pickled[:-1] + b"(" + _str(str(marker)) + b"tb."
    with pytest.raises(SnapViTError, match="refused.*__setstate__"):
        load_scores(_zip(tmp_path / "build.pt", build, {"0": storage}))
    assert not marker.exists()


# --- the published files ------------------------------------------------------------------------


def _published(file: str) -> Path:
    path = PUBLISHED_DIR / file
    if not path.is_file():
        pytest.skip(f"{PUBLISHED_DIR} is not present")
    return path


@pytest.mark.parametrize(("file", "model_type", "mlp_shape", "head_shape", "backbone"), PUBLISHED)
def test_published_files(file, model_type, mlp_shape, head_shape, backbone):
    path = _published(file)
    scores = import_published_scores(path)
    assert tuple(scores.mlp.shape) == mlp_shape and tuple(scores.heads.shape) == head_shape
    assert (scores.min_mlp_keep_ratio, scores.min_head_keep_ratio) == (0.05, 0.2)
    assert torch.isfinite(scores.mlp).all() and torch.isfinite(scores.heads).all()
    metadata = scores.metadata
    assert metadata["published_model_type"] == model_type and metadata["backbone"] == backbone
    assert metadata["source_format"] == "snapvit-published-pickle" and metadata["method"] == "snapvit"
    assert metadata["source_file"] == file and metadata["mlp_architecture"] == "standard"
    assert (metadata["num_blocks"], metadata["hidden_dim"], metadata["num_heads"]) == (12, mlp_shape[1], head_shape[1])
    assert metadata["published_metadata"]["seed"] == 42
    json.dumps(metadata)  # plain values only
    with zipfile.ZipFile(path) as archive:  # cross-check against the raw little-endian float32 storages
        prefix = archive.namelist()[0].split("/")[0]
        raw_mlp = np.frombuffer(archive.read(f"{prefix}/data/0"), dtype="<f4").reshape(mlp_shape)
        raw_heads = np.frombuffer(archive.read(f"{prefix}/data/1"), dtype="<f4").reshape(head_shape)
    assert np.array_equal(scores.mlp.numpy(), raw_mlp) and np.array_equal(scores.heads.numpy(), raw_heads)
    for other in load_both(path):
        assert torch.equal(other.mlp, scores.mlp) and other.metadata == metadata


@pytest.mark.parametrize("file", [row[0] for row in PUBLISHED])
def test_published_import_then_save_round_trips(tmp_path, file):
    imported = import_published_scores(_published(file))
    saved = save_scores(imported, tmp_path / "imported.safetensors")
    loaded = load_scores(saved)
    assert torch.equal(loaded.mlp, imported.mlp) and torch.equal(loaded.heads, imported.heads)
    assert (loaded.min_mlp_keep_ratio, loaded.min_head_keep_ratio) == (
        imported.min_mlp_keep_ratio,
        imported.min_head_keep_ratio,
    )
    assert {k: v for k, v in loaded.metadata.items() if k not in ("library_version", "saved_at")} == imported.metadata


def test_import_published_refuses_safetensors(tmp_path):
    path = save_scores(make_scores(), tmp_path / "s.safetensors")
    with pytest.raises(SnapViTError, match="not a published SnapViT .pt file"):
        import_published_scores(path)


def test_published_metadata_naming_another_architecture_is_refused(tmp_path, authors_package):
    """Issue 16 item 12: a file that says deit-3-vit-s-16 but holds ViT-B-shaped scores (even `plan` reads it)."""
    mlp, heads = torch.rand(12, 3072), torch.rand(12, 12)
    payload = _published_dict(authors_package, mlp, heads, embed_dim=768, head_dim=64)
    torch.save(payload, tmp_path / "p.pt")
    expect_error(tmp_path / "p.pt", "names the architecture 'deit-3-vit-s-16'", "[12, 3072]")


def test_check_scores_backbone_compares_canonical_ids():
    from snapvit_core.scoring.scores import canonical_model_id, check_scores_backbone

    scores = make_scores().with_metadata(backbone="vit_base_patch16_224.dino")
    assert canonical_model_id("vit_base_patch16_224") == "vit_base_patch16_224.augreg2_in21k_ft_in1k"
    assert check_scores_backbone(scores, "vit_base_patch16_224.dino") is None
    with pytest.raises(SnapViTError, match="made for 'vit_base_patch16_224.dino'"):
        check_scores_backbone(scores, "vit_base_patch16_224")
    assert "vit_base_patch16_224.dino" in check_scores_backbone(scores, "embedded", allow_other=True)
    unknown = make_scores().with_metadata(backbone=None, model_id=None)
    assert check_scores_backbone(unknown, "embedded") is None  # nothing recorded: nothing to compare
    computed = make_scores().with_metadata(backbone=None, model_id="vit_tiny_patch16_224")
    assert check_scores_backbone(computed, "vit_tiny_patch16_224.augreg_in21k_ft_in1k") is None
