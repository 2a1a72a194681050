"""Data sources shared by scoring, search, correction and kNN evaluation (one module per source).

One spelling everywhere (command line, app, library):

* ``embedded`` - the embedded backbone's cluttered-digits dataset (fixed train/test split, offline).
* ``folder:PATH`` - an image folder. ``PATH/<class>/*`` gives labelled images; images directly in
  ``PATH`` are unlabelled (fine for scoring, not for kNN). For kNN, ``PATH/train/<class>`` and
  ``PATH/test/<class>`` are used when present; otherwise a stratified split holds out
  ``test_fraction`` (default 0.2, seed 0) of every class.
* ``hf:NAME`` - a Hugging Face dataset already in the local cache (``datasets.load_dataset(NAME)``
  with the hub offline), or a directory written by ``Dataset.save_to_disk``.
* ``procedural`` - label-free images generated on the fly (smooth colour fields, gradients, shapes,
  stripes), for scoring a backbone with no dataset at all.

Images are converted to RGB by :func:`to_rgb` (greyscale, alpha, palette, 16-bit and float modes,
EXIF rotation) and bounded in size on load; files that are not readable images are skipped and
counted. :func:`preprocess` applies the backbone's own timm data config. ``streaming`` holds the
``Dataset`` classes that decode one image at a time for large sources.

Modules: ``spec`` (parsing, subsets, splits), ``convert`` (to RGB), ``sets`` (ImageSet, KnnSplits),
``folder``, ``hf``, ``embedded_source``, ``procedural`` (one per source), ``streaming`` (datasets and
loaders), ``loading`` (the public entry points).
"""

from snapvit_core.data.convert import MAX_SIDE, open_image, to_rgb
from snapvit_core.data.folder import IMAGE_EXTENSIONS, FolderListing, list_folder_split
from snapvit_core.data.hf import HFListing, list_hf_split
from snapvit_core.data.loading import build_transform, knn_warnings, load_images, load_knn_splits, preprocess
from snapvit_core.data.procedural import PROCEDURAL_DEFAULT_COUNT, PROCEDURAL_SIZE, procedural_images
from snapvit_core.data.sets import ImageSet, KnnSplits
from snapvit_core.data.spec import DATA_KINDS, DATA_SPEC_HELP, DEFAULT_TEST_FRACTION, DataSpec, parse_data_spec
from snapvit_core.data.streaming import (
    FolderImageDataset,
    HFImageDataset,
    LazyImages,
    TensorImageDataset,
    make_loader,
    readable_paths,
)

__all__ = [
    "DATA_KINDS",
    "DATA_SPEC_HELP",
    "DEFAULT_TEST_FRACTION",
    "IMAGE_EXTENSIONS",
    "MAX_SIDE",
    "PROCEDURAL_DEFAULT_COUNT",
    "PROCEDURAL_SIZE",
    "DataSpec",
    "FolderImageDataset",
    "FolderListing",
    "HFImageDataset",
    "HFListing",
    "ImageSet",
    "KnnSplits",
    "LazyImages",
    "TensorImageDataset",
    "build_transform",
    "knn_warnings",
    "list_folder_split",
    "list_hf_split",
    "load_images",
    "load_knn_splits",
    "make_loader",
    "open_image",
    "parse_data_spec",
    "preprocess",
    "procedural_images",
    "readable_paths",
    "to_rgb",
]
