"""Data sources: spec parsing, image conversion, folders, procedural images, kNN splits."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from snapvit_core import data
from snapvit_core.data import DataSpec, load_images, load_knn_splits, parse_data_spec, preprocess, to_rgb
from snapvit_core.errors import SnapViTError

CONFIG_32 = {
    "input_size": (3, 32, 32),
    "interpolation": "bicubic",
    "mean": (0.5,) * 3,
    "std": (0.25,) * 3,
    "crop_pct": 1.0,
}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("embedded", DataSpec("embedded")),
        ("procedural", DataSpec("procedural")),
        ("folder:/tmp/x", DataSpec("folder", "/tmp/x")),
        ("hf:cifar10", DataSpec("hf", "cifar10")),
        (" Folder:/a:b ", DataSpec("folder", "/a:b")),
    ],
)
def test_parse_data_spec(text, expected):
    assert parse_data_spec(text) == expected


@pytest.mark.parametrize("text", ["", "folder", "folder:", "imagenet", "hf:", "embedded:x", "s3://bucket"])
def test_bad_data_spec_is_a_clear_error(text):
    with pytest.raises(SnapViTError, match="Could not parse the data source"):
        parse_data_spec(text)


@pytest.mark.parametrize(
    "image",
    [
        Image.new("L", (5, 7), 128),
        Image.new("1", (9, 9), 1),
        Image.new("RGBA", (16, 16), (255, 0, 0, 0)),
        Image.new("LA", (16, 16), (0, 255)),
        Image.new("P", (16, 16), 3),
        Image.new("CMYK", (16, 16), (0, 0, 0, 0)),
        Image.fromarray(np.arange(64, dtype=np.uint16).reshape(8, 8) * 1000),
        Image.fromarray(np.linspace(-3, 7, 64, dtype=np.float32).reshape(8, 8)),
        Image.new("RGB", (1, 1), (10, 20, 30)),
    ],
    ids=["grey", "bilevel", "rgba", "la", "palette", "cmyk", "16bit", "float", "1px"],
)
def test_to_rgb_handles_every_mode(image):
    rgb = to_rgb(image)
    assert rgb.mode == "RGB" and rgb.size == image.size
    assert preprocess([rgb], CONFIG_32).shape == (1, 3, 32, 32)


def test_to_rgb_details():
    transparent = to_rgb(Image.new("RGBA", (4, 4), (255, 0, 0, 0)))
    assert transparent.getpixel((0, 0)) == (255, 255, 255)  # alpha composited on white
    deep = to_rgb(Image.fromarray(np.array([[0, 65535]], dtype=np.uint16)))
    assert deep.getpixel((0, 0))[0] == 0 and deep.getpixel((1, 0))[0] == 255  # 16-bit range rescaled, not clipped
    huge = to_rgb(Image.new("RGB", (4000, 1000)))
    assert max(huge.size) == data.MAX_SIDE and huge.size[0] / huge.size[1] == pytest.approx(4, rel=0.01)


def _write_class_folder(root, classes=("cat", "dog"), per_class=5, size=20):
    rng = np.random.default_rng(0)
    for name in classes:
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            array = rng.integers(0, 255, (size, size + i, 3), dtype=np.uint8)
            Image.fromarray(array).save(root / name / f"{i}.png")
    return root


def test_folder_with_junk_files_counts_what_it_skipped(tmp_path):
    root = _write_class_folder(tmp_path / "pets")
    (root / "cat" / "notes.txt").write_text("not an image")
    (root / "dog" / "broken.jpg").write_bytes(b"\xff\xd8 definitely not a jpeg")
    Image.new("I;16", (8, 8)).save(root / "dog" / "deep.png")
    images = load_images(f"folder:{root}", split=None)
    assert len(images) == 11 and images.class_names == ("cat", "dog")
    assert images.skipped == {"non-image files": 1, "not readable images": 1}
    assert "skipped 2" in images.describe()
    assert sorted(np.unique(images.labels).tolist()) == [0, 1]


def test_folder_split_is_stratified_disjoint_and_deterministic(tmp_path):
    root = _write_class_folder(tmp_path / "pets", per_class=10)
    train = load_images(f"folder:{root}", "train", test_fraction=0.2)
    test = load_images(f"folder:{root}", "test", test_fraction=0.2)
    assert (len(train), len(test)) == (16, 4)
    assert np.bincount(test.labels).tolist() == [2, 2]
    again = load_images(f"folder:{root}", "train", test_fraction=0.2)
    assert all(np.array_equal(np.asarray(a), np.asarray(b)) for a, b in zip(train.images, again.images))
    train_pixels = {np.asarray(image).tobytes() for image in train.images}
    assert not any(np.asarray(image).tobytes() in train_pixels for image in test.images)


def test_folder_with_train_and_test_subfolders(tmp_path):
    _write_class_folder(tmp_path / "ds" / "train", per_class=4)
    _write_class_folder(tmp_path / "ds" / "test", per_class=2)
    splits = load_knn_splits(f"folder:{tmp_path / 'ds'}", CONFIG_32)
    assert splits.train.shape == (8, 3, 32, 32) and splits.test.shape == (4, 3, 32, 32)
    assert splits.class_names == ("cat", "dog")


def test_unlabelled_folder_scores_but_cannot_be_evaluated(tmp_path):
    for i in range(3):
        Image.new("RGB", (10, 10), (i, i, i)).save(tmp_path / f"{i}.jpg")
    images = load_images(f"folder:{tmp_path}", split=None)
    assert len(images) == 3 and images.labels is None
    with pytest.raises(SnapViTError, match="no labels"):
        load_knn_splits(f"folder:{tmp_path}", CONFIG_32, test_fraction=0.34)


def test_missing_empty_and_unreadable_folders(tmp_path):
    with pytest.raises(SnapViTError, match="does not exist"):
        load_images(f"folder:{tmp_path / 'nope'}")
    (tmp_path / "empty" / "cls").mkdir(parents=True)
    with pytest.raises(SnapViTError, match="contains no images"):
        load_images(f"folder:{tmp_path / 'empty'}")
    (tmp_path / "junk" / "cls").mkdir(parents=True)
    (tmp_path / "junk" / "cls" / "a.png").write_bytes(b"nope")
    with pytest.raises(SnapViTError, match="could be read"):
        load_images(f"folder:{tmp_path / 'junk'}", split=None)


def test_limit_must_be_positive(tmp_path):
    for bad in (0, -3):
        with pytest.raises(SnapViTError, match="positive integer"):
            load_images("procedural", limit=bad)


def test_procedural_images_are_deterministic_and_varied():
    first = data.procedural_images(12, seed=3, size=64)
    again = data.procedural_images(12, seed=3, size=64)
    other = data.procedural_images(12, seed=4, size=64)
    as_array = lambda images: np.stack([np.asarray(image) for image in images])  # noqa: E731
    assert np.array_equal(as_array(first), as_array(again))
    assert not np.array_equal(as_array(first), as_array(other))
    assert first[0].mode == "RGB" and first[0].size == (64, 64)
    assert as_array(first).reshape(12, -1).std(axis=1).min() > 1.0  # no blank images
    pool = load_images("procedural", limit=5)
    assert len(pool) == 5 and pool.labels is None


def test_procedural_data_cannot_be_evaluated():
    with pytest.raises(SnapViTError, match="no labels"):
        load_knn_splits("procedural", CONFIG_32)


def test_uncached_hf_dataset_is_a_clear_error(monkeypatch, tmp_path):
    pytest.importorskip("datasets")
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "datasets"))
    with pytest.raises(SnapViTError, match="not in the local cache") as error:
        load_images("hf:snapvit-test/definitely-not-cached")
    assert "load_dataset('snapvit-test/definitely-not-cached')" in str(error.value)
    (tmp_path / "not_a_dataset").mkdir()
    with pytest.raises(SnapViTError, match="save_to_disk"):
        load_images(f"hf:{tmp_path / 'not_a_dataset'}")


def test_saved_hf_dataset_loads_offline(tmp_path):
    datasets = pytest.importorskip("datasets")
    rng = np.random.default_rng(0)
    images = [Image.fromarray(rng.integers(0, 255, (12, 12, 3), dtype=np.uint8)) for _ in range(10)]
    features = datasets.Features({"img": datasets.Image(), "label": datasets.ClassLabel(names=["a", "b"])})
    table = datasets.Dataset.from_dict({"img": images, "label": [0, 1] * 5}, features=features)
    table.save_to_disk(str(tmp_path / "saved"))
    splits = load_knn_splits(f"hf:{tmp_path / 'saved'}", CONFIG_32, test_fraction=0.2)
    assert splits.train.shape[0] == 8 and splits.test.shape[0] == 2 and splits.class_names == ("a", "b")
    streamed = load_knn_splits(f"hf:{tmp_path / 'saved'}", CONFIG_32, test_fraction=0.2, stream=True)
    assert isinstance(streamed.train, data.HFImageDataset) and streamed.class_names == ("a", "b")
    for split in ("train", "test"):  # the same rows, decoded on demand
        dataset = getattr(streamed, split)
        torch.testing.assert_close(torch.stack([dataset[i][0] for i in range(len(dataset))]), getattr(splits, split))
        assert torch.equal(getattr(streamed, f"{split}_labels"), getattr(splits, f"{split}_labels"))


def test_embedded_fast_path_equals_the_timm_transform():
    from snapvit_core.engine.backbones import load_backbone

    config = load_backbone("embedded", random_init=True).data_config
    fast = load_knn_splits("embedded", config, limit_per_split=16)
    generic = load_images("embedded", "train", limit=16)
    torch.testing.assert_close(preprocess(generic.images, config), fast.train, atol=1e-6, rtol=0)
    assert torch.equal(torch.as_tensor(generic.labels), fast.train_labels)
    full = load_knn_splits("embedded", config)
    assert (len(full.train_labels), len(full.test_labels)) == (1257, 540)


def test_streaming_folder_splits_equal_the_eager_ones(tmp_path):
    root = _write_class_folder(tmp_path / "pets", per_class=6)
    (root / "dog" / "broken.jpg").write_bytes(b"\xff\xd8 definitely not a jpeg")
    Image.new("I;16", (40, 20)).save(root / "cat" / "deep.png")
    Image.new("LA", (30, 30)).save(root / "cat" / "alpha.png")
    eager = load_knn_splits(f"folder:{root}", CONFIG_32, test_fraction=0.25)
    streamed = load_knn_splits(f"folder:{root}", CONFIG_32, test_fraction=0.25, stream=True)
    assert isinstance(streamed.train, data.FolderImageDataset) and not isinstance(streamed.train, torch.Tensor)
    assert streamed.skipped == eager.skipped == {"not readable images": 1}
    assert streamed.class_names == eager.class_names
    for split in ("train", "test"):
        dataset, tensors = getattr(streamed, split), getattr(eager, split)
        assert len(dataset) == tensors.shape[0]
        torch.testing.assert_close(torch.stack([dataset[i][0] for i in range(len(dataset))]), tensors)
        assert torch.equal(getattr(streamed, f"{split}_labels"), getattr(eager, f"{split}_labels"))
    loader = data.make_loader(streamed.train, batch_size=4, workers=2)  # worker processes keep the order
    torch.testing.assert_close(torch.cat([batch for batch, _ in loader]), eager.train)


def test_streaming_a_file_that_breaks_after_its_header_is_a_clear_error(tmp_path):
    root = _write_class_folder(tmp_path / "pets", per_class=3)
    Image.new("RGB", (64, 64), (9, 9, 9)).save(root / "cat" / "cut.png")
    (root / "cat" / "cut.png").write_bytes((root / "cat" / "cut.png").read_bytes()[:60])  # header intact, data cut
    dataset = load_knn_splits(f"folder:{root}", CONFIG_32, test_fraction=0.5, stream=True)
    with pytest.raises(SnapViTError, match="could not be decoded"):
        for split in (dataset.train, dataset.test):
            for i in range(len(split)):
                split[i]


def test_lazy_folder_images_equal_the_eager_ones_and_decode_only_on_access(tmp_path, monkeypatch):
    import pickle

    from snapvit_core.data import streaming

    root = _write_class_folder(tmp_path / "pets", per_class=5)
    (root / "dog" / "broken.jpg").write_bytes(b"\xff\xd8 definitely not a jpeg")
    Image.new("I;16", (40, 20)).save(root / "cat" / "deep.png")
    eager = load_images(f"folder:{root}", None, limit=8, seed=3)
    decoded = []
    real_open = streaming.open_image
    monkeypatch.setattr(streaming, "open_image", lambda path: decoded.append(path) or real_open(path))
    lazy = load_images(f"folder:{root}", None, limit=8, seed=3, lazy=True)
    assert isinstance(lazy.images, data.LazyImages) and decoded == []  # nothing decoded up front
    assert lazy.skipped == eager.skipped == {"not readable images": 1}  # still skipped and counted
    assert np.array_equal(lazy.labels, eager.labels) and len(lazy) == len(eager) == 7
    for mine, theirs in zip(lazy.images, eager.images):
        assert np.array_equal(np.asarray(mine), np.asarray(theirs))
    assert len(decoded) == 7
    head = lazy.images[:2]
    assert isinstance(head, data.LazyImages) and len(head) == 2 and len(decoded) == 7  # slicing decodes nothing
    assert np.array_equal(np.asarray(pickle.loads(pickle.dumps(head))[1]), np.asarray(eager.images[1]))


def test_scoring_over_lazy_folder_images_equals_scoring_the_decoded_list(tmp_path):
    from conftest import make_vit

    from snapvit_core.scoring.compute import ScoringConfig, compute_scores

    root = _write_class_folder(tmp_path / "pets", per_class=3)
    lazy = load_images(f"folder:{root}", "train", lazy=True)
    eager = load_images(f"folder:{root}", "train")
    config = ScoringConfig(samples=4, batch_size=2, local_crops=2)
    model = make_vit()
    from_lazy = compute_scores(model, lazy, CONFIG_32, config)
    from_list = compute_scores(model, eager, CONFIG_32, config)
    assert torch.equal(from_lazy.mlp, from_list.mlp) and torch.equal(from_lazy.heads, from_list.heads)
    assert from_lazy.metadata["samples"] == 4


def test_a_damaged_file_met_in_a_loader_worker_is_still_one_line(tmp_path):
    """Issue 23: torch's DataLoader re-raises a worker's SnapViTError with its traceback as the message."""
    root = _write_class_folder(tmp_path / "pets", per_class=3)
    Image.new("RGB", (64, 64), (9, 9, 9)).save(root / "cat" / "cut.png")
    (root / "cat" / "cut.png").write_bytes((root / "cat" / "cut.png").read_bytes()[:60])
    splits = load_knn_splits(f"folder:{root}", CONFIG_32, test_fraction=0.5, stream=True)
    with pytest.raises(SnapViTError) as info:
        for split in (splits.train, splits.test):
            list(data.make_loader(split, batch_size=2, workers=1))
    message = str(info.value)
    assert message.startswith(str(root / "cat" / "cut.png")) and "could not be decoded" in message, message
    assert "Traceback" not in message and "\\n" not in message
