"""Load a library module as it was at an earlier commit, next to today's, for side-by-side checks.

``load_reference("scoring")`` reads the module ``scoring`` at REFERENCE_COMMIT with ``git show`` and
imports it as ``snapvit_core._scoring_<commit>``: its imports resolve to today's package, so only that
one module is the old code. Old commits kept every module flat in ``snapvit_core/``; their relative
imports are mapped to where each module lives now (``REGROUPED``).
"""

from __future__ import annotations

import re
import subprocess
import sys
import types
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
REFERENCE_COMMIT = "6f085b9"  # main before issue 17 (streaming data, faster scoring, torchrun)

# Flat module name -> its module since the library was grouped by pipeline stage.
REGROUPED = {
    "scoring": "scoring.compute",
    "crops": "scoring.crops",
    "data_free": "scoring.data_free",
    "scores": "scoring.scores",
    "scores_io": "scoring.scores_io",
    "search": "search.evolution",
    "xnes": "search.xnes",
    "cka": "search.cka",
    "search_checkpoint": "search.checkpoint",
    "elastic": "engine.elastic",
    "surgery": "engine.surgery",
    "adapter": "engine.adapter",
    "backbones": "engine.backbones",
    "hf_vit": "engine.hf_vit",
    "embedded": "engine.embedded",
    "correction": "engine.correction",
    "precision": "engine.precision",
    "devices": "engine.devices",
    "evaluation": "evaluation.features",
    "knn": "evaluation.knn",
    "linear_probe": "evaluation.linear_probe",
    "metrics": "evaluation.metrics",
    "plan_metrics": "evaluation.plan_metrics",
    "latency_model": "latency.model",
    "latency_calibration": "latency.calibration",
    "latency_table": "latency.table",
    "landscape": "landscape.store",
    "landscape_fill": "landscape.fill",
    "budget": "landscape.budget",
    "sweep": "landscape.sweep",
    "export": "export.writer",
    "export_configuration": "export.configuration",
    "load_pruned": "export.load_pruned",
    "model_card": "export.model_card",
    "modeling_snapvit": "export.modeling_snapvit",
    "configuration_snapvit": "export.configuration_snapvit",
    "_atomic": "files.atomic",
    "_safe_unpickle": "files.safe_unpickle",
    "safe_files": "files.guards",
    "image_limits": "files.image_limits",
    "jobs": "runtime.jobs",
    "cancel": "runtime.cancel",
    "distributed": "runtime.distributed",
}


class ReferenceMissing(LookupError):
    """The commit is not in this clone (a shallow clone)."""


def _today(match: re.Match) -> str:
    """``from .name import`` of a flat-layout module -> the absolute import of where it lives now."""
    name = match.group(1)
    return f"from snapvit_core.{REGROUPED.get(name, name)} import"


def load_reference(module: str, commit: str = REFERENCE_COMMIT) -> types.ModuleType:
    """``snapvit_core/<module>.py`` as of ``commit``, imported beside today's package."""
    shown = subprocess.run(
        ["git", "show", f"{commit}:snapvit_core/{module}.py"], cwd=ROOT, capture_output=True, text=True
    )
    if shown.returncode != 0:
        raise ReferenceMissing(f"git show {commit}:snapvit_core/{module}.py failed: {shown.stderr.strip()}")
    source = re.sub(r"from \.([A-Za-z_]\w*) import", _today, shown.stdout)
    loaded = types.ModuleType(f"snapvit_core._{module}_{commit}")
    loaded.__package__ = "snapvit_core"
    sys.modules[loaded.__name__] = loaded  # dataclasses look their module up
    exec(compile(source, f"{module}.py@{commit}", "exec"), loaded.__dict__)
    return loaded
