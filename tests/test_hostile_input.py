"""Hostile scores files and images: bounded time and memory, one clear refusal (issue 16, items 1-3)."""

from __future__ import annotations

import io
import struct
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import torch

from snapvit_core.errors import SnapViTError
from snapvit_core.files import safe_unpickle as _safe_unpickle
from snapvit_core.scoring.scores_io import load_scores, load_scores_bytes

ROOT = Path(__file__).resolve().parents[1]


def _zip(path: Path, pickle_bytes: bytes, storages: dict[str, bytes] | None = None) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("a/data.pkl", pickle_bytes)
        archive.writestr("a/version", b"3\n")
        for key, data in (storages or {}).items():
            archive.writestr(f"a/data/{key}", data)
    return path


def _shared_list_pickle(depth: int = 60, pop: bool = True) -> bytes:
    """The issue's recipe: list i holds list i-1 twice, 60 levels deep (2**60 nodes when expanded).

    With ``pop=False`` the lists stay on the stack instead of being POPped (an opcode torch files
    never use), so only the sharing check can refuse it.
    """
    step = b"0" if pop else b""
    body = b"".join(
        step + b"](h" + bytes([i - 1]) + b"h" + bytes([i - 1]) + b"eq" + bytes([i]) for i in range(1, depth + 1)
    )
    return b"\x80\x02]q\x00" + body


def _str(text: str) -> bytes:
    data = text.encode()
    return b"X" + struct.pack("<I", len(data)) + data


def _tensor(key: str, numel: int, size: tuple[int, ...], stride: tuple[int, ...]) -> bytes:
    """_rebuild_tensor_v2(('storage', FloatStorage, key, 'cpu', numel), 0, size, stride, False, OrderedDict())."""
    ints = lambda values: b"(" + b"".join(b"J" + struct.pack("<i", v) for v in values) + b"t"  # noqa: E731
    return (
        b"ctorch._utils\n_rebuild_tensor_v2\n("
        + b"("
        + _str("storage")
        + b"ctorch\nFloatStorage\n"
        + _str(key)
        + _str("cpu")
        + b"J"
        + struct.pack("<i", numel)
        + b"tQ"
        + b"J\x00\x00\x00\x00"
        + ints(size)
        + ints(stride)
        + b"\x89ccollections\nOrderedDict\n)RtR"
    )


def _scores_pickle(mlp: bytes, heads: bytes) -> bytes:
    return b"\x80\x02}(" + _str("mlp_scores") + mlp + _str("head_scores") + heads + b"u."


@pytest.mark.timeout(30)
@pytest.mark.parametrize("pop", [True, False], ids=["issue-recipe", "no-pop"])
@pytest.mark.parametrize("use", ["persistent id", "tensor size", "num_blocks", "metadata"])
def test_self_referencing_list_is_refused_fast(tmp_path, use, pop):
    """Item 1: a < 1 KB pickle sharing one list 60 levels deep; used anywhere, it must not be expanded."""
    shared = _shared_list_pickle(pop=pop)
    refusal = "opcode POP" if pop else "shares one container"
    payloads = {
        "persistent id": shared + b"Q.",
        "tensor size": b"\x80\x02ctorch._utils\n_rebuild_tensor_v2\n(" + shared[2:] + b"tR.",
        "num_blocks": b"\x80\x02}(" + _str("num_blocks") + shared[2:] + b"u.",
        "metadata": b"\x80\x02}(" + _str("metadata") + shared[2:] + b"u.",
    }
    path = _zip(tmp_path / "hang.pt", payloads[use])
    assert path.stat().st_size < 1024
    with pytest.raises(SnapViTError, match=refusal):
        load_scores(path)
    with pytest.raises(SnapViTError, match=refusal):
        load_scores_bytes(path.read_bytes(), "upload.pt")


@pytest.mark.timeout(150)  # generous for a loaded CI machine (importing torch); the hang took many minutes
def test_cli_plan_on_the_hang_file_exits_2_quickly(tmp_path):
    path = _zip(tmp_path / "hang.pt", _shared_list_pickle() + b"Q.")
    argv = ["plan", "--scores", str(path), "--mlp-sparsity", ".5", "--head-sparsity", ".3"]
    result = subprocess.run(
        [sys.executable, "-m", "snapvit_core", *argv], capture_output=True, text=True, timeout=140, cwd=ROOT
    )
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr
    assert "opcode POP" in result.stderr, result.stderr  # refused while reading the file, not by argparse


@pytest.mark.timeout(30)
@pytest.mark.parametrize("count", [1, 2])
def test_stride_zero_tensor_is_refused_without_materialising(tmp_path, count):
    """Item 2: a 1-element storage viewed as 16384 x 16384 (1 GB as float32) is refused, not expanded."""
    big = _tensor("0", 1, (16384, 16384), (0, 0))
    small = _tensor("1", 2, (1, 2), (2, 1)) if count == 1 else _tensor("1", 1, (16384, 16384), (0, 0))
    path = _zip(tmp_path / "s0.pt", _scores_pickle(big, small), {"0": b"\0" * 4, "1": b"\0" * 4 * (3 - count)})
    assert path.stat().st_size < 2048
    for load in (lambda: load_scores(path), lambda: load_scores_bytes(path.read_bytes(), "s0.pt")):
        with pytest.raises(SnapViTError, match="larger than its storage"):
            load()


def test_tensor_larger_than_any_scores_is_refused(tmp_path):
    rows, cols = _safe_unpickle.MAX_BLOCKS + 1, 2
    data = b"\0" * (4 * rows * cols)
    mlp = _tensor("0", rows * cols, (rows, cols), (cols, 1))
    path = _zip(tmp_path / "rows.pt", _scores_pickle(mlp, _tensor("1", 2, (1, 2), (2, 1))), {"0": data, "1": b"\0" * 8})
    with pytest.raises(SnapViTError, match="model checkpoint"):
        load_scores(path)


def test_compressed_and_oversized_zips_are_refused_before_reading(tmp_path, monkeypatch):
    buffer = io.BytesIO()
    torch.save({"mlp_scores": torch.rand(3, 8), "head_scores": torch.rand(3, 2)}, buffer)
    with zipfile.ZipFile(buffer) as source, zipfile.ZipFile(tmp_path / "z.pt", "w", zipfile.ZIP_DEFLATED) as out:
        for info in source.infolist():
            out.writestr(info.filename, source.read(info))
    with pytest.raises(SnapViTError, match="compressed"):
        load_scores(tmp_path / "z.pt")
    (tmp_path / "ok.pt").write_bytes(buffer.getvalue())
    monkeypatch.setattr(_safe_unpickle, "MAX_STORAGE_BYTES", 64)  # the 3 x 8 floats are 96 bytes
    with pytest.raises(SnapViTError, match="MB of tensors"):
        load_scores(tmp_path / "ok.pt")


def test_refusal_does_not_quote_torchs_unsafe_advice(tmp_path):
    """A call torch refuses (REDUCE on an enum instance) reads as a refusal, without 'weights_only=False'."""
    enum = b"csrc.models.enums\nModelType\n(" + _str("x") + b"tR"
    path = _zip(tmp_path / "call.pt", b"\x80\x02" + enum + b"(" + _str("touch x") + b"tR.")
    with pytest.raises(SnapViTError) as info:
        load_scores(path)
    assert "refused" in str(info.value) and "weights_only=False" not in str(info.value)


def test_safetensors_header_declaring_a_huge_tensor_is_refused_before_reading(tmp_path):
    import json

    header = {
        "mlp_scores": {"dtype": "F32", "shape": [1 << 20, 1 << 20], "data_offsets": [0, 8]},
        "head_scores": {"dtype": "F32", "shape": [1, 2], "data_offsets": [8, 16]},
        "__metadata__": {"snapvit": json.dumps({"format": "snapvit-explorer-scores", "format_version": 1})},
    }
    raw = json.dumps(header).encode()
    path = tmp_path / "huge.safetensors"
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + b"\0" * 16)
    with pytest.raises(SnapViTError, match="larger than any scores tensor"):
        load_scores(path)


def test_opcodes_torch_does_not_read_are_corrupt_not_code(tmp_path):
    """A LONG4 (a 10,000-digit integer) or a protocol-4 FRAME: malformed for a torch file, said so up front."""
    big = 10**10_000
    body = big.to_bytes((big.bit_length() + 8) // 8, "little", signed=True)
    long4 = b"\x8b" + struct.pack("<i", len(body)) + body
    for pickled in (b"\x80\x02}(" + _str("seed") + long4 + b"u.", b"\x80\x04\x95\x02\x00\x00\x00\x00\x00\x00\x00}."):
        with pytest.raises(SnapViTError, match="corrupt: pickle opcode (LONG4|FRAME)"):
            load_scores(_zip(tmp_path / "op.pt", pickled))
