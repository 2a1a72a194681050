"""Load a library module as it was at an earlier commit, next to today's, for side-by-side benchmarks.

``load_reference("scoring")`` reads ``snapvit_core/scoring.py`` at REFERENCE_COMMIT with ``git show`` and
imports it as ``snapvit_core._scoring_<commit>``: its relative imports resolve to today's package, so
only that one module is the old code.
"""

from __future__ import annotations

import subprocess
import sys
import types
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
REFERENCE_COMMIT = "6f085b9"  # main before issue 17 (streaming data, faster scoring, torchrun)


def load_reference(module: str, commit: str = REFERENCE_COMMIT) -> types.ModuleType:
    shown = subprocess.run(
        ["git", "show", f"{commit}:snapvit_core/{module}.py"], cwd=ROOT, capture_output=True, text=True
    )
    if shown.returncode != 0:
        raise SystemExit(f"git show {commit}:snapvit_core/{module}.py failed: {shown.stderr.strip()}")
    loaded = types.ModuleType(f"snapvit_core._{module}_{commit}")
    loaded.__package__ = "snapvit_core"
    sys.modules[loaded.__name__] = loaded  # dataclasses look their module up
    exec(compile(shown.stdout, f"{module}.py@{commit}", "exec"), loaded.__dict__)
    return loaded
