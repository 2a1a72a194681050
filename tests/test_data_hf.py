"""The hf: data source end to end: scoring from a saved dataset, and rows held to the image limits (issue 23)."""

from __future__ import annotations

import io
import struct
import tracemalloc
import zlib
from pathlib import Path

import numpy as np
import pytest
from conftest import run_limited
from PIL import Image, ImageFile

from snapvit_core.cli import main
from snapvit_core.data import load_images, load_knn_splits, to_rgb
from snapvit_core.data.hf import decode_row, list_hf_split
from snapvit_core.errors import SnapViTError

datasets = pytest.importorskip("datasets")

CONFIG_32 = {"input_size": (3, 32, 32), "interpolation": "bicubic", "mean": (0.5,) * 3, "std": (0.25,) * 3}


def png_of_zeros(side: int, bits: int) -> bytes:
    """A valid all-black greyscale PNG of side x side at 8 or 16 bits, compressed row by row (small)."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)

    compressor = zlib.compressobj(9)
    row = b"\0" * (1 + bits // 8 * side)  # filter byte + samples
    idat = b"".join(compressor.compress(row) for _ in range(side)) + compressor.flush()
    header = struct.pack(">IIBBBBB", side, side, bits, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def _png(seed: int) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 255, (24, 24, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "PNG")
    return buffer.getvalue()


def save_dataset(path: Path, rows: list[bytes], labels: list[int]) -> Path:
    features = datasets.Features({"img": datasets.Image(), "label": datasets.ClassLabel(names=["a", "b"])})
    images = [{"bytes": data, "path": None} for data in rows]
    datasets.Dataset.from_dict({"img": images, "label": labels}, features=features).save_to_disk(str(path))
    return path


@pytest.fixture(scope="module")
def bombs(tmp_path_factory) -> Path:
    """8 good rows, a 16-bit 13000 x 13000 PNG (~8 GB decoded on the original code, under PIL's bomb
    limit) and an 8-bit 14000 x 14000 one (over PIL's limit: DecompressionBombError on open)."""
    rows = [_png(i) for i in range(8)] + [png_of_zeros(13000, 16), png_of_zeros(14000, 8)]
    return save_dataset(tmp_path_factory.mktemp("hf") / "bombs", rows, [0, 1] * 5)


@pytest.fixture
def no_large_decode(monkeypatch):
    """Fail the test if a large image is decoded: the refusal must come from the header alone."""
    original = ImageFile.ImageFile.load

    def load(self):
        if max(self.size) > 4000:
            raise AssertionError(f"decoded a {self.size} image")
        return original(self)

    monkeypatch.setattr(ImageFile.ImageFile, "load", load)


def test_cli_scores_from_a_saved_hf_dataset(capsys, tmp_path):
    """Item 1: every hf: dataset failed with TypeError ('int' object is not subscriptable)."""
    saved = save_dataset(tmp_path / "saved", [_png(i) for i in range(6)], [0, 1] * 3)
    out = tmp_path / "s.safetensors"
    code = main(["score", "--data", f"hf:{saved}", "--samples", "4", "--batch-size", "2", "--out", str(out)])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert out.is_file() and "4 images from hf" in captured.out


@pytest.mark.timeout(120)
@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
def test_oversized_rows_are_skipped_from_their_header(bombs, no_large_decode):
    """Item 2: hf rows get the declared-size check folder files get, before a pixel is decoded."""
    too_large = {"too large to decode safely": 2}
    eager = load_images(f"hf:{bombs}", None)
    assert len(eager) == 8 and eager.skipped == too_large and eager.labels.tolist() == [0, 1] * 4
    lazy = load_images(f"hf:{bombs}", None, lazy=True)
    assert len(lazy) == 8 and lazy.skipped == too_large and lazy.labels.tolist() == [0, 1] * 4
    assert all(image.size == (24, 24) for image in lazy.images)
    splits = load_knn_splits(f"hf:{bombs}", CONFIG_32, test_fraction=0.5, stream=True)
    assert len(splits.train) + len(splits.test) == 8 and sum(splits.skipped.values()) == 2
    listing = list_hf_split(str(bombs), None, None, 0, 0.2)
    for row in (8, 9):  # reached directly: one clear error, not a DecompressionBombError or 8 GB
        with pytest.raises(SnapViTError, match=f"Row {row} .*too large to decode safely"):
            decode_row(row, listing.table, listing.image_column)


def test_wide_images_are_shrunk_without_a_float64_copy():
    """Item 2: a 16-bit image was rescaled through full-size float64 arrays (8 bytes a pixel, three times)."""
    image = Image.fromarray(np.arange(3000 * 3000, dtype=np.uint32).reshape(3000, 3000).astype(np.uint16))
    assert image.mode == "I;16"
    tracemalloc.start()
    try:
        rgb = to_rgb(image)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert rgb.size == (1024, 1024) and rgb.mode == "RGB"
    assert peak < 3000 * 3000 * 8, f"{peak >> 20} MB of numpy arrays: a float64 copy of the 9 MP image"


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_evaluate_on_hf_bombs_stays_within_memory(bombs):
    """Item 2: the issue's evaluate --data hf:... peaked at 7.8 GB; here the process may not pass ~5.5 GB
    of address space (importing torch, datasets and scipy alone maps ~4.2 GB)."""
    argv = ["-m", "snapvit_core", "evaluate", "--data", f"hf:{bombs}", "--metrics", "knn", "--k", "3"]
    done = run_limited([*argv, "--mlp-sparsity", "0", "--head-sparsity", "0"], 5632 << 20)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "kNN top-1" in done.stdout and "Traceback" not in done.stderr
