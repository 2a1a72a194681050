"""The shipped landscapes of the default experience match what the code computes now.

``scripts/make_landscapes.py`` makes them; this recomputes sampled points with ``Explorer.evaluate``
(identical kNN top-1, cosine within 1e-6). A change to the backbone, the data, the scores, the kNN
or the pruning rule changes the key (a missing file) or the values (a mismatch): rerun the script.
"""

from __future__ import annotations

import importlib.util

import pytest
from conftest import ROOT


@pytest.fixture(scope="module")
def script():
    spec = importlib.util.spec_from_file_location("make_landscapes", ROOT / "scripts" / "make_landscapes.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def explorers(script):
    return script.default_explorers()


@pytest.mark.parametrize("source", ["searched", "raw", "magnitude"])
def test_shipped_landscape_matches_the_code(script, explorers, source):
    landscape = script.shipped_landscape(explorers[source])
    assert landscape.path.exists(), f"{landscape.path.name} is not shipped: run scripts/make_landscapes.py"
    assert landscape.complete and not landscape.warnings
    assert script.check(source, explorers[source], samples=3, seed=len(source)) == []


def test_a_changed_point_is_caught(script, explorers, tmp_path, monkeypatch):
    import json

    from snapvit_core.landscape import store as landscape_module

    shipped = script.shipped_landscape(explorers["magnitude"])
    document = json.loads(shipped.path.read_text())
    for row in document["points"]:
        row[2] = 0.5 if row[2] != 0.5 else 0.25  # every kNN value wrong, still valid
    (tmp_path / shipped.path.name).write_text(json.dumps(document))
    monkeypatch.setattr(landscape_module, "SHIPPED_DIR", tmp_path)
    monkeypatch.setattr(script, "SHIPPED_DIR", tmp_path)
    problems = script.check("magnitude", explorers["magnitude"], samples=2)
    assert len(problems) == 2 and ("shipped 0.5" in problems[0] or "shipped 0.25" in problems[0])
