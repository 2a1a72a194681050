"""Image decoding limits and folder reading edge cases (issue 16, items 3 and 14)."""

from __future__ import annotations

import logging
import os
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFile

from snapvit_core.data import folder as data_folder
from snapvit_core.data import knn_warnings, load_images, open_image
from snapvit_core.files import image_limits


def _png_16bit(path: Path, side: int) -> Path:
    """A valid all-black 16-bit greyscale PNG of side x side, written row by row (small on disk and in RAM)."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)

    compressor = zlib.compressobj(9)
    row = b"\0" * (1 + 2 * side)  # filter byte + 16-bit samples
    idat = b"".join(compressor.compress(row) for _ in range(side)) + compressor.flush()
    header = struct.pack(">IIBBBBB", side, side, 16, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", idat) + chunk(b"IEND", b""))
    return path


@pytest.fixture
def no_decoding(monkeypatch):
    """Fail the test if any image is decoded: the refusal must come from the header alone."""
    calls = []
    original = ImageFile.ImageFile.load

    def load(self):
        if max(self.size) > 4000:
            calls.append(self.size)
            raise AssertionError(f"decoded a {self.size} image")
        return original(self)

    monkeypatch.setattr(ImageFile.ImageFile, "load", load)
    return calls


@pytest.mark.timeout(60)
@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
def test_wide_png_below_pils_bomb_limit_is_refused_before_decoding(tmp_path, no_decoding):
    """Item 3: a ~300 KB 16-bit 13000 x 13000 PNG (8 GB decoded on main) is refused from its header."""
    path = _png_16bit(tmp_path / "bomb.png", 13000)
    assert path.stat().st_size < 1_000_000
    with Image.open(path) as image:
        assert image.size[0] * image.size[1] < 2 * Image.MAX_IMAGE_PIXELS  # under PIL's bomb *error*
    with pytest.raises(Image.DecompressionBombError, match="13000 x 13000"):
        open_image(path)
    (tmp_path / "cls").mkdir()
    os.replace(path, tmp_path / "cls" / "bomb.png")
    Image.new("RGB", (8, 8), "red").save(tmp_path / "cls" / "ok.png")
    images = load_images(f"folder:{tmp_path}", split=None)
    assert len(images.images) == 1 and images.skipped["too large to decode safely"] == 1
    assert not no_decoding


def test_large_jpeg_is_decoded_at_reduced_size(tmp_path, monkeypatch):
    path = tmp_path / "big.jpg"
    Image.new("RGB", (2400, 1600), "blue").save(path, quality=50)
    monkeypatch.setattr(image_limits, "MAX_PIXELS", 1_000_000)  # 3.8 MP declared: over the limit
    image = open_image(path, max_side=600)  # draft decodes at 1/2 or 1/4 scale: under the limit
    assert max(image.size) == 600 and image.mode == "RGB"
    with pytest.raises(Image.DecompressionBombError):
        open_image(path, max_side=2400)  # no reduction asked for: refused


def test_decoded_bytes_counts_wide_modes():
    assert image_limits.decoded_bytes(Image.new("I;16", (10, 10))) > image_limits.decoded_bytes(
        Image.new("L", (10, 10))
    )


def _folder(root: Path, counts: dict[str, int]) -> Path:
    for name, count in counts.items():
        (root / name).mkdir(parents=True)
        for i in range(count):
            Image.new("RGB", (8, 8), (i * 20 % 255, 0, 0)).save(root / name / f"{i}.png")
    return root


def test_unreadable_class_folder_is_counted_as_skipped(tmp_path, monkeypatch):
    """Item 14: a class folder that cannot be listed is reported, not silently dropped."""
    root = _folder(tmp_path, {"a": 3, "b": 3, "locked": 3})
    (root / "locked").chmod(0)
    if os.geteuid() == 0:  # root reads mode-000 folders: simulate the refusal the OS gives other users
        real = os.scandir

        def scandir(path="."):
            if Path(path).name == "locked":
                raise PermissionError(13, "Permission denied", str(path))
            return real(path)

        monkeypatch.setattr(data_folder.os, "scandir", scandir)
    try:
        images = load_images(f"folder:{root}", split=None)
    finally:
        (root / "locked").chmod(0o755)
    assert len(images.images) == 6
    assert images.skipped["unreadable class folders"] == 1
    assert "unreadable class folders" in images.describe()


def test_knn_warnings():
    assert knn_warnings([0, 0, 0], [0, 0]) and "single class" in knn_warnings([0, 0], [0])[0]
    assert "one image per class" in knn_warnings([0, 1, 2], [0, 1, 2])[0]
    assert knn_warnings(np.array([0, 0, 1, 1]), np.array([0, 1])) == []


@pytest.mark.parametrize(("counts", "words"), [({"only": 6}, "single class"), ({"a": 2, "b": 2}, "one image")])
def test_meaningless_knn_is_warned_about(tmp_path, caplog, counts, words):
    from snapvit_core.data import load_knn_splits

    root = _folder(tmp_path, counts)
    config = {"input_size": (3, 16, 16), "mean": (0.5,) * 3, "std": (0.5,) * 3, "interpolation": "bilinear"}
    config |= {"crop_pct": 1.0, "crop_mode": "center"}
    with caplog.at_level(logging.WARNING, logger="snapvit_core.data"):
        load_knn_splits(f"folder:{root}", config, test_fraction=0.5)
    assert words in caplog.text, caplog.text


def test_class_folder_links_out_of_or_up_the_data_folder_are_skipped(tmp_path, caplog):
    """Issue 23 item 9: a class folder linking to the data root counted as an extra class (every image twice)."""
    from snapvit_core.data.folder import LINK_SKIPPED

    root = _folder(tmp_path / "data", {"a": 2, "b": 2})
    outside = _folder(tmp_path / "elsewhere", {"x": 2})
    (root / "loop").symlink_to(root, target_is_directory=True)  # back up to the root
    (root / "b" / "up").symlink_to(root / "b", target_is_directory=True)  # below a class: rglob ignores it
    (root / "out").symlink_to(outside / "x", target_is_directory=True)  # out of the data folder
    (root / "dangling").symlink_to(tmp_path / "missing", target_is_directory=True)
    (root / "a2").symlink_to(root / "a", target_is_directory=True)  # inside the tree: a class like any other
    with caplog.at_level(logging.WARNING, logger="snapvit_core.data"):
        images = load_images(f"folder:{root}", split=None)
    assert images.class_names == ("a", "a2", "b") and len(images) == 6
    assert images.skipped == {LINK_SKIPPED: 2} and "loop" in caplog.text and "out" in caplog.text
    (root / "train").mkdir()
    (root / "test").symlink_to(root, target_is_directory=True)  # not taken as a test split
    assert load_images(f"folder:{root}", split="test").skipped[LINK_SKIPPED] == 3
