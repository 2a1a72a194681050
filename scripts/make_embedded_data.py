"""Render the embedded dataset's fixed splits into assets/embedded_digits.safetensors, or check that file.

The shipped file holds the bytes the shipped model was measured on and the shipped landscapes were
computed from (their data key is a hash of these bytes). Rendering is float code, and its rounding
differs between CPUs, so the file is the dataset; this script is how it was made::

    python scripts/make_embedded_data.py --check   # re-render here; report how many pixels differ
    python scripts/make_embedded_data.py --write   # replace the file with this CPU's rendering

``--write`` changes the data key, so every shipped landscape must be recomputed afterwards
(``python scripts/make_landscapes.py``); ``--check`` only reads.
"""

from __future__ import annotations

import argparse
import platform
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # run from a checkout, no install

from safetensors.torch import save_file  # noqa: E402

from snapvit_core.engine import embedded  # noqa: E402
from snapvit_core.files.atomic import atomic_path  # noqa: E402


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def write() -> None:
    tensors = {}
    for split in embedded.SPLITS:
        images, labels = embedded.render_split(split)
        tensors[f"{split}_images"], tensors[f"{split}_labels"] = images.contiguous(), labels.contiguous()
    metadata = {
        "rendering": str(embedded.render_config_dict()),
        "seeds": str(embedded.SPLIT_RENDER_SEEDS),
        "split": f"sklearn load_digits, train_test_split(test_size={embedded.SPLIT_TEST_SIZE}, stratify=labels, "
        f"random_state={embedded.SPLIT_RANDOM_STATE})",
        "rendered_on": f"{cpu_name()}, torch {torch.__version__}",
    }
    with atomic_path(embedded.data_path()) as temporary:
        save_file(tensors, str(temporary), metadata=metadata)
    print(f"wrote {embedded.data_path()} ({embedded.data_path().stat().st_size:,} bytes)")


def check() -> int:
    """Re-render every split here and compare with the shipped bytes; 0 if identical."""
    differing = 0
    for split in embedded.SPLITS:
        shipped, shipped_labels = embedded.load_embedded_split(split)
        rendered, labels = embedded.render_split(split)
        assert torch.equal(shipped_labels, labels), f"{split}: labels differ"
        pixels = int((shipped != rendered).sum())
        largest = int((shipped.int() - rendered.int()).abs().max())
        differing += pixels
        print(
            f"{split}: {pixels} of {shipped.numel():,} values differ from this CPU's rendering (largest step {largest})"
        )
    print(f"CPU: {cpu_name()}")
    return 0 if differing == 0 else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    action = parser.add_mutually_exclusive_group(required=True)
    action.add_argument("--write", action="store_true", help="render here and replace the shipped file")
    action.add_argument("--check", action="store_true", help="render here and compare with the shipped file")
    args = parser.parse_args()
    if args.write:
        write()
        return 0
    return check()


if __name__ == "__main__":
    sys.exit(main())
