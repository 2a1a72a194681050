"""Issue 34: the newest surfaces fail safe (landscape, latency tables, calibrate, export loaders, model card, links).

Each case the issue lists is a test here: a clear error (the command line: exit 2 and one line on stderr;
the app: an error box or a note, never an exception), nothing replaced that is not the project's own, no
hang, and no allocation past the bound (checked under an address-space cap, ``conftest.run_limited``,
where a case could allocate). FIFOs are made with ``os.mkfifo`` in ``tmp_path``; device nodes are only
ever pointed at through symbolic links in ``tmp_path`` (``/dev/null``, ``/dev/zero``), never written.
"""

from __future__ import annotations

import ast
import errno
import json
import os
import re
import shutil
import stat
import sys
import threading
from collections import OrderedDict
from pathlib import Path

import pytest
from app_cards import shared_of, state_of
from conftest import FAST_CALIBRATION, ROOT, run_limited

from snapvit_core.cli import main
from snapvit_core.errors import SnapViTError

MEMORY_CAP = 5 << 30  # address space for a refused case: imports take ~3.6 GB of it, a blow-up far more


def _cli(capsys, *argv: object) -> tuple[int, str, str]:
    try:
        code = main([str(a) for a in argv])
    except SystemExit as exit_:  # argparse refusals
        code = exit_.code
    out, err = capsys.readouterr()
    return code, out, err


def _refused(code: int, err: str, *words: str) -> None:
    """Exit 2 and exactly one line on stderr holding ``words`` (and no traceback)."""
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err, err
    assert "unexpected" not in err, err
    for word in words:
        assert word in err, (word, err)


def _finishes(function, seconds: float = 30.0):
    """``function()``'s result or exception, failing (not hanging) when it blocks longer than ``seconds``."""
    outcome: dict = {}

    def target() -> None:
        try:
            outcome["value"] = function()
        except BaseException as error:  # noqa: BLE001 - handed to the caller
            outcome["error"] = error

    worker = threading.Thread(target=target, daemon=True)
    worker.start()
    worker.join(seconds)
    assert not worker.is_alive(), f"still running after {seconds} s (blocked on a special file?)"
    if "error" in outcome:
        raise outcome["error"]
    return outcome.get("value")


def _fifo(path: Path) -> Path:
    os.mkfifo(path)
    return path


# ---- the two guards ------------------------------------------------------------------------------------------
def test_read_bounded_reads_only_small_regular_files(tmp_path):
    from snapvit_core.files.guards import check_regular, read_bounded

    regular = tmp_path / "ok.json"
    regular.write_bytes(b"{}")
    assert read_bounded(regular, 10, "the file") == b"{}" and check_regular(regular, 10, "the file") == 2
    sparse = tmp_path / "sparse.json"
    with open(sparse, "wb") as handle:  # 3 GB that take no disk space
        handle.truncate(3 << 30)
    (tmp_path / "zero.json").symlink_to("/dev/zero")
    (tmp_path / "null.json").symlink_to("/dev/null")
    cases = {
        _fifo(tmp_path / "fifo.json"): "FIFO",
        tmp_path / "zero.json": "character device",
        tmp_path / "null.json": "character device",
        tmp_path: "folder",
        sparse: "larger than the limit of 1,048,576 bytes",
        tmp_path / "missing.json": "missing",
    }
    if os.path.exists("/proc/self/status") and os.stat("/proc").st_dev != os.stat("/").st_dev:
        cases[Path("/proc/self/status")] = "/proc"
    for path, words in cases.items():
        for reader in (read_bounded, check_regular):
            with pytest.raises(SnapViTError, match=re.escape(words)) as info:
                _finishes(lambda: reader(path, 1 << 20, "the file", "Pick another."), 10)  # noqa: B023
            assert str(path) in info.value.problem and info.value.fix == "Pick another."


def test_the_write_guard_replaces_only_what_is_ours(tmp_path):
    from snapvit_core.files.guards import guard_destination

    def ours(data: bytes) -> bool:
        return data.startswith(b"ours")

    guard_destination(tmp_path / "new.csv", "a table", False, ours)  # absent
    mine, theirs = tmp_path / "mine.csv", tmp_path / "theirs.csv"
    mine.write_bytes(b"ours, from before")
    theirs.write_bytes(b"someone's notes")
    guard_destination(mine, "a table", False, ours)
    with pytest.raises(SnapViTError, match="--overwrite"):
        guard_destination(theirs, "a table", False, ours)
    guard_destination(theirs, "a table", True, ours)  # allowed when asked for
    (tmp_path / "device.csv").symlink_to("/dev/null")
    for special in (Path("/dev/null"), tmp_path / "device.csv", _fifo(tmp_path / "fifo.csv"), tmp_path):
        with pytest.raises(SnapViTError, match="not a regular file"):
            guard_destination(special, "a table", True, ours)  # refused even with --overwrite
    assert stat.S_ISCHR(os.stat("/dev/null").st_mode)  # the guard only looked
    with pytest.raises(SnapViTError, match="too long"):
        guard_destination(tmp_path / ("x" * 300), "a table", False, ours)


# ---- landscape ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("grid", ["1e-9", "1e-4", "5e-324", "0.01"])
def test_landscape_grid_is_bounded_before_anything_is_sized(grid, tmp_path, capsys):
    code, _, err = _cli(capsys, "landscape", "--grid", grid, "--out", tmp_path / "plane.csv")
    _refused(code, err, "--grid", "4,096")
    assert not (tmp_path / "plane.csv").exists()


def test_a_tiny_grid_step_stays_within_memory(tmp_path):
    result = run_limited(
        ["-m", "snapvit_core", "landscape", "--grid", "1e-9", "--out", str(tmp_path / "p.csv")], MEMORY_CAP, 120
    )
    _refused(result.returncode, result.stderr, "4,096")


def _key():
    from snapvit_core.landscape.store import LandscapeKey

    return LandscapeKey(backbone="embedded", weights="w", scores="s", data="embedded", data_hash="d")


def _point(**changes):
    from snapvit_core.landscape.store import LandscapePoint

    values = dict(mlp_sparsity=0.0, head_sparsity=0.0, knn_top1=0.9, mean_cosine=1.0, params=100, flops=1000,
                  realised_mlp_sparsity=0.0, realised_head_sparsity=0.0)  # fmt: skip
    return LandscapePoint(**{**values, **changes})


def test_landscape_files_that_are_special_or_hold_huge_numbers_are_refused(tmp_path):
    from snapvit_core.landscape.store import Landscape, dump_points, open_landscape, read_points

    key = _key()
    shipped, cache = tmp_path / "shipped", tmp_path / "cache"
    shipped.mkdir()
    cache.mkdir()
    _fifo(shipped / key.file_name())
    _fifo(cache / key.file_name())
    landscape = _finishes(lambda: open_landscape(key, cache_dir=cache, shipped_dir=shipped), 10)
    assert len(landscape) == 0 and len(landscape.warnings) == 2 and all("FIFO" in w for w in landscape.warnings)
    landscape.add(_point())
    assert _finishes(landscape.save, 10) is False  # never replaces the FIFO with a file
    assert stat.S_ISFIFO(os.stat(cache / key.file_name()).st_mode)

    valid = dump_points(key, [_point()])
    for huge in ("1" + "0" * 400, "1e999", "Infinity", "-1e400"):
        path = tmp_path / "huge.json"
        path.write_text(valid.replace("1000, 0.0, 0.0", f"{huge}, 0.0, 0.0"))
        with pytest.raises(SnapViTError, match="point 0 is invalid"):
            read_points(path, key)
        assert len(Landscape(key, path)) == 0  # a warning, never OverflowError (issue 34: landscape.py:69)


def test_landscape_out_refuses_what_is_not_a_landscape_csv(tmp_path, capsys):
    scores = tmp_path / "my.xnes.safetensors"
    scores.write_bytes(b"precious scores")
    code, _, err = _cli(capsys, "landscape", "--out", scores)
    _refused(code, err, "already exists", "--overwrite")
    assert scores.read_bytes() == b"precious scores"
    (tmp_path / "full.csv").symlink_to("/dev/null")  # stands for /dev/full: judged by its target, never written
    code, _, err = _cli(capsys, "landscape", "--out", tmp_path / "full.csv", "--overwrite")
    _refused(code, err, "character device")
    assert (tmp_path / "full.csv").is_symlink()
    code, _, err = _cli(capsys, "landscape", "--out", tmp_path / ("x" * 300 + ".csv"))
    _refused(code, err, "too long")


@pytest.mark.slow
def test_landscape_rewrites_only_a_csv_of_the_same_points(tmp_path, capsys):
    from snapvit_core.landscape.store import dump_points

    out, cache = tmp_path / "plane.csv", tmp_path / "cache"
    argv = ["landscape", "--method", "magnitude", "--grid", "0.5", "--limit", "40", "--latency", "none",
            "--quiet", "--cache", cache, "--out", out, "--json"]  # fmt: skip
    code, first, err = _cli(capsys, *argv)
    assert code == 0, err
    written = out.read_text()
    code, again, err = _cli(capsys, *argv)  # the same key: rerunning continues and rewrites the CSV
    assert code == 0 and json.loads(again)["computed"] == 0, err
    header, first_row, *rest = written.splitlines()
    changed = dict(zip(header.split(","), first_row.split(",")), knn_top1="0.123")
    other = "\n".join([header, ",".join(changed.values()), *rest]) + "\n"
    out.write_text(other)  # a landscape CSV of other points (another key)
    code, _, err = _cli(capsys, *argv)
    _refused(code, err, "not a landscape CSV of these points", "--overwrite")
    assert out.read_text() == other
    code, _, err = _cli(capsys, *argv, "--overwrite")
    assert code == 0 and out.read_text() == written, err

    # a cache file holding a 400-digit number: one warning, recomputed (issue 34: OverflowError before)
    cache_file = Path(json.loads(first)["cache"])
    document = json.loads(cache_file.read_text())
    from snapvit_core.landscape.store import LandscapeKey, LandscapePoint

    key = LandscapeKey(**document["key"])
    points = [LandscapePoint(*row) for row in document["points"]]
    cache_file.write_text(dump_points(key, points).replace(f"{points[0].flops}", "1" + "0" * 400, 1))
    code, again, err = _cli(capsys, *argv)
    assert code == 0 and json.loads(again)["computed"] == len(points), err
    assert err.count("warning:") == 1 and "invalid" in err and out.read_text() == written


# ---- latency tables and calibrate -------------------------------------------------------------------------------
def test_latency_tables_that_are_special_files_are_refused(tmp_path, capsys):
    from snapvit_core.latency.table import load_table

    (tmp_path / "zero.json").symlink_to("/dev/zero")
    for path, words in ((_fifo(tmp_path / "fifo.json"), "FIFO"), (tmp_path / "zero.json", "character device")):
        with pytest.raises(SnapViTError, match=words):
            _finishes(lambda: load_table(path), 10)  # noqa: B023
        code, _, err = _finishes(
            lambda: _cli(capsys, "evaluate", "--metrics", "flops", "--mlp-sparsity", "0.3", "--head-sparsity", "0",
                         "--latency-table", path),  # noqa: B023
            60,
        )  # fmt: skip
        _refused(code, err, words, "latency table")


def test_a_latency_table_on_dev_zero_stays_within_memory(tmp_path):
    (tmp_path / "zero.json").symlink_to("/dev/zero")
    argv = ["-m", "snapvit_core", "evaluate", "--metrics", "flops", "--mlp-sparsity", "0.3", "--head-sparsity", "0"]
    result = run_limited([*argv, "--latency-table", str(tmp_path / "zero.json")], MEMORY_CAP, 120)
    _refused(result.returncode, result.stderr, "character device")


@pytest.mark.parametrize("option", ["--min-rounds", "--max-rounds"])
def test_calibrate_rounds_have_a_maximum(option, tmp_path, capsys):
    from snapvit_core.latency.calibration import MAX_ROUNDS, check_rounds

    code, _, err = _cli(capsys, "calibrate", option, "100000", "--out", tmp_path / "t.json")
    _refused(code, err, f"most rounds, {MAX_ROUNDS}")
    with pytest.raises(SnapViTError, match=f"1..{MAX_ROUNDS}"):
        check_rounds(100_000, 21, 1.5)
    with pytest.raises(SnapViTError, match="budget"):
        check_rounds(3, 21, float("inf"))


def test_calibrate_out_replaces_only_a_latency_table(latency_table_path, tmp_path, capsys):
    (tmp_path / "full.json").symlink_to("/dev/null")  # stands for /dev/full
    code, _, err = _cli(capsys, "calibrate", "--out", tmp_path / "full.json", "--overwrite", *FAST_CALIBRATION)
    _refused(code, err, "character device")
    assert (tmp_path / "full.json").is_symlink()
    notes = tmp_path / "notes.json"
    notes.write_text('{"my": "notes"}')
    code, _, err = _cli(capsys, "calibrate", "--out", notes, *FAST_CALIBRATION)
    _refused(code, err, "not a latency table", "--overwrite")
    assert notes.read_text() == '{"my": "notes"}'
    table = tmp_path / "table.json"
    shutil.copy(latency_table_path, table)
    code, _, err = _cli(capsys, "calibrate", "--out", table, *FAST_CALIBRATION)  # its own kind: replaced
    assert code == 0 and table.read_bytes() != latency_table_path.read_bytes(), err


def test_calibrate_on_a_full_disk_keeps_the_table_already_there(latency_table_path, tmp_path, capsys, monkeypatch):
    from snapvit_core.files import atomic as _atomic

    table = tmp_path / "table.json"
    shutil.copy(latency_table_path, table)

    def full_disk(descriptor: int) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(_atomic.os, "fsync", full_disk)
    code, _, err = _cli(capsys, "calibrate", "--out", table, *FAST_CALIBRATION)
    _refused(code, err, "No space left on device", "nothing was replaced")
    assert table.read_bytes() == latency_table_path.read_bytes()
    assert [p.name for p in tmp_path.iterdir()] == ["table.json"]  # no temp file left behind


def test_a_table_device_name_reaches_the_terminal_escaped(latency_table_path, tmp_path, capsys):
    document = json.loads(latency_table_path.read_text())
    document["device"] = "cpu \x1b[2J\x1b[31mred\u202eevil\nsecond line"
    table = tmp_path / "hostile.json"
    table.write_text(json.dumps(document))
    argv = ["evaluate", "--metrics", "flops", "--mlp-sparsity", "0.3", "--head-sparsity", "0", "--latency-batch", "4"]
    code, out, err = _cli(capsys, *argv, "--latency-table", table)
    assert code == 0, err
    assert "\x1b" not in out and "\u202e" not in out and not any(line.startswith("second") for line in out.split())
    latency = next(line for line in out.splitlines() if line.startswith("latency"))
    assert "\\x1b[31mred\\u202eevil\\nsecond line" in latency


# ---- export loaders --------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def export_folder(tmp_path_factory) -> Path:
    from snapvit_core.engine.backbones import load_backbone
    from snapvit_core.engine.elastic import ElasticViT
    from snapvit_core.export.writer import architecture_spec, export_pruned
    from snapvit_core.scoring.data_free import magnitude_scores

    backbone = load_backbone("embedded")
    elastic = ElasticViT(backbone.model, magnitude_scores(backbone.model))
    architecture, args = architecture_spec(backbone)
    report = export_pruned(
        elastic.prune_to(0.35, 0.2), tmp_path_factory.mktemp("export") / "good", architecture=architecture,
        model_args=args, data_config=backbone.data_config, pruning={}, plan=elastic.plan_for(0.35, 0.2),
    )  # fmt: skip
    return report.directory


def _set(*path_and_value):
    *path, value = path_and_value

    def change(config: dict) -> None:
        target = config
        for name in path[:-1]:
            target = target[name]
        target[path[-1]] = value

    return change


def _narrower(config: dict) -> None:
    config["pruning"]["kept_neurons"][0] -= 1


# case -> (change to config.json: a function of the parsed dict or the new text, file named, words in the error)
TAMPERED = {
    "not-json": ("{not json", "config.json", "JSON"),
    "no-pruning": (lambda c: c.pop("pruning"), "config.json", "'pruning'"),
    "negative-width": (_set("pruning", "kept_heads", 0, -3), "config.json", "-3"),
    "wrong-length": (lambda c: c["pruning"]["kept_neurons"].pop(), "config.json", "kept_neurons"),
    "depth-100000": (_set("model_args", "depth", 100_000), "config.json", "100000"),
    "huge-width": (_set("model_args", "mlp_ratio", 100_000.0), "config.json", "unpruned architecture holds"),
    "shapes": (_narrower, "model.safetensors", "has shape"),
}


def _tampered(export_folder: Path, tmp_path: Path, case: str) -> Path:
    change = TAMPERED[case][0]
    folder = tmp_path / case
    shutil.copytree(export_folder, folder)
    if isinstance(change, str):
        (folder / "config.json").write_text(change)
    else:
        config = json.loads((folder / "config.json").read_text())
        change(config)
        (folder / "config.json").write_text(json.dumps(config))
    return folder


def _standalone(folder: Path):
    """The export's own load_pruned.py (the copy in the folder, which cannot import snapvit_core)."""
    import importlib.util

    name = f"standalone_{folder.name.replace('-', '_')}"
    spec = importlib.util.spec_from_file_location(name, folder / "load_pruned.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("case", sorted(TAMPERED))
def test_export_loaders_refuse_a_tampered_folder_in_one_line(case, export_folder, tmp_path):
    from snapvit_core.export.writer import load_pruned

    folder = _tampered(export_folder, tmp_path, case)
    _, named, words = TAMPERED[case]
    standalone = _standalone(folder)
    with pytest.raises(standalone.ExportError) as info:
        standalone.load_pruned(folder)
    message = str(info.value)
    assert "\n" not in message and str(folder / named) in message and words in message, message
    with pytest.raises(SnapViTError) as info:
        load_pruned(folder)
    message = str(info.value)
    assert "\n" not in message and named in message and words in message, message


@pytest.mark.slow
def test_transformers_automodel_refuses_a_tampered_folder_in_one_line(export_folder, tmp_path):
    folders = [_tampered(export_folder, tmp_path, case) for case in sorted(TAMPERED)]
    script = (
        "import sys, transformers\n"
        "for folder in sys.argv[1:]:\n"
        "    try:\n"
        "        transformers.AutoModel.from_pretrained(folder, trust_remote_code=True)\n"
        "        print('LOADED')\n"
        "    except Exception as error:\n"
        "        print(type(error).__name__, '|', str(error).replace(chr(10), '<newline>'))\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    import subprocess

    result = subprocess.run([sys.executable, "-c", script, *map(str, folders)], capture_output=True, text=True,
                            timeout=300, cwd=tmp_path, env=env)  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    lines = [line for line in result.stdout.splitlines() if "|" in line or line == "LOADED"]
    assert len(lines) == len(folders), result.stdout
    for case, line in zip(sorted(TAMPERED), lines):
        _, named, words = TAMPERED[case]
        kind, message = line.split(" | ", 1)
        assert "<newline>" not in message and named in message, (case, line)
        if case == "not-json":  # transformers reads config.json itself, before any export code runs
            assert kind == "OSError" and "not a valid JSON file" in message, line
        else:
            assert kind == "ExportError" and words in message, (case, line)


@pytest.mark.parametrize("case", ["depth-100000", "huge-width", "huge-classes", "sparse-3gb"])
def test_a_huge_export_config_allocates_nothing(case, export_folder, tmp_path):
    folder = tmp_path / case
    shutil.copytree(export_folder, folder)
    config = json.loads((folder / "config.json").read_text())
    if case == "depth-100000":
        config["model_args"]["depth"] = 100_000
        config["pruning"]["kept_heads"] = [6] * 100_000
        config["pruning"]["kept_neurons"] = [384] * 100_000
    elif case == "huge-width":
        config["model_args"].update(embed_dim=600_000, mlp_ratio=1000.0)
    elif case == "huge-classes":
        config["model_args"]["num_classes"] = 1_000_000
    (folder / "config.json").write_text(json.dumps(config))
    if case == "sparse-3gb":
        with open(folder / "config.json", "r+b") as handle:
            handle.truncate(3 << 30)
    # the export's own loader (its main, as `python load_pruned.py FOLDER` runs it), then the library's
    script = (
        "import runpy, sys\n"
        "code = runpy.run_path(sys.argv[1])['main'](['load_pruned.py', sys.argv[2]])\n"
        "from snapvit_core.errors import SnapViTError\n"
        "from snapvit_core.export.writer import load_pruned\n"
        "try:\n"
        "    load_pruned(sys.argv[2])\n"
        "except SnapViTError as error:\n"
        "    print('library:', error)\n"
        "sys.exit(code)\n"
    )
    result = run_limited(["-c", script, str(folder / "load_pruned.py"), str(folder)], MEMORY_CAP, 120)
    assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr[-2000:]
    assert result.stderr.startswith("error: ") and "config.json" in result.stderr, result.stderr
    assert result.stdout.startswith("library: ") and "config.json" in result.stdout, result.stdout


# ---- model card --------------------------------------------------------------------------------------------
HOSTILE = {
    "method": '<script>alert(1)</script><img src=x onerror="alert(2)">',
    "base_method": "[click](javascript:alert(3))",
    "data": "x\n---\nlicense: mit\n---",
    "device": "![t](http://127.0.0.1:9/track.png)" + "y" * 500,
    "model_id": "`code` | cell | <b>",
    "samples": 10,
}
INJECTED_NAME = 'x"); __import__("os").system("echo pwned") #'


def _snippets(card: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", card, flags=re.S)


def _markup_outside_code(text: str) -> list[str]:
    """Unescaped Markdown/HTML that could load or link anything: images, links, tags."""
    bare = re.sub(r"\\.", "", text)  # backslash-escaped characters are literal
    return re.findall(r"!\[|\]\(|<[A-Za-z/!]", bare)


def test_the_model_card_is_data_not_code():
    import yaml

    from snapvit_core.export.model_card import MAX_VALUE_CHARS, model_card

    config = {"pruning": {"kept_heads": [6, 5], "kept_neurons": [300, 280], "source_model": "hf:a/b\n---\nlicense: x",
                          "mlp_sparsity": "<img src=x onerror=alert(4)>", "head_sparsity": 0.2}}  # fmt: skip
    metrics = {
        "params": 1000, "flops": 2000,
        "knn": {"top1": 90.0, "unpruned_top1": 95.0, "data": "folder:/d/[x](javascript:y)", "k": 20, "vote": "uniform"},
        "latency": {"batch": 1, "device": "<iframe src=//evil>", "dtype": "float32", "threads": 2,
                    "measured_ms": 1.0, "unpruned_ms": 2.0},
    }  # fmt: skip
    card = model_card(config, metrics, HOSTILE, INJECTED_NAME)
    front, body = card[4:].split("\n---\n", 1)
    assert set(yaml.safe_load(front)) == {"library_name", "tags", "pipeline_tag"}  # no license, no base_model
    prose = re.sub(r"```python\n.*?```", "", body, flags=re.S)
    assert _markup_outside_code(prose) == [], _markup_outside_code(prose)
    assert "\n---" not in body and "license:" not in front
    for line in prose.splitlines():
        if line.startswith("  - "):  # a metadata line: its value is cut
            assert len(line) <= len("  - model_id: ") + 2 * MAX_VALUE_CHARS, line
    for snippet in _snippets(card):
        calls = [n for n in ast.walk(ast.parse(snippet)) if isinstance(n, ast.Call)]
        names = [getattr(c.func, "attr", getattr(c.func, "id", "")) for c in calls]
        loads = [c for c, name in zip(calls, names) if name in ("from_pretrained", "load_pruned")]
        assert len(loads) == 1 and isinstance(loads[0].args[0], ast.Constant), snippet
        assert loads[0].args[0].value == INJECTED_NAME  # the folder, as a string: nothing runs
        assert "__import__" not in {getattr(c.func, "id", "") for c in calls}


def test_an_export_into_a_folder_with_a_hostile_name_has_a_safe_card(tmp_path):
    from snapvit_core.engine.backbones import load_backbone
    from snapvit_core.engine.elastic import ElasticViT
    from snapvit_core.export.writer import architecture_spec, export_pruned
    from snapvit_core.scoring.data_free import magnitude_scores

    backbone = load_backbone("embedded")
    scores = magnitude_scores(backbone.model).with_metadata(**{k: v for k, v in HOSTILE.items() if k != "samples"})
    elastic = ElasticViT(backbone.model, scores)
    architecture, args = architecture_spec(backbone)
    report = export_pruned(
        elastic.prune_to(0.35, 0.2), tmp_path / INJECTED_NAME, architecture=architecture, model_args=args,
        data_config=backbone.data_config, pruning={}, plan=elastic.plan_for(0.35, 0.2), scores=scores,
    )  # fmt: skip
    card = (report.directory / "README.md").read_text()
    assert _markup_outside_code(re.sub(r"```python\n.*?```", "", card, flags=re.S)) == []
    for snippet in _snippets(card):
        tree = ast.parse(snippet)  # valid Python whose only string argument is the folder's name
        assert INJECTED_NAME in {n.value for n in ast.walk(tree) if isinstance(n, ast.Constant)}


# ---- links (the app) ---------------------------------------------------------------------------------------
APP = str(ROOT / "app.py")


@pytest.fixture
def fresh_links(monkeypatch):
    """No backbone loaded by an earlier test counts as 'loaded on this server'; loads are recorded."""
    from ui import links, shared

    monkeypatch.setattr(shared, "_LOADED_SELECTIONS", OrderedDict())
    monkeypatch.delenv(links.ANY_MODEL_ENV, raising=False)
    loads: list[str] = []
    real = shared.load_backbone

    def recording(model_id, *args, **kwargs):
        loads.append(model_id)
        return real(model_id, *args, **kwargs)

    monkeypatch.setattr(shared, "load_backbone", recording)
    return loads


def _open_link(params: dict):
    from streamlit.testing.v1 import AppTest

    app = AppTest.from_file(APP, default_timeout=180)
    app.query_params.update(params)
    app.switch_page("app_pages/3_explorer.py").run()
    assert not app.exception, [e.value for e in app.exception]
    return app


def _model_id(app) -> str:
    return state_of(app).selection.model_id


def _notes(app) -> list[str]:
    return [w.value for w in app.warning]


def _without_code_spans(text: str) -> str:
    return re.sub(r"(`+)(.*?)\1", "", text)


def test_a_link_opens_only_what_the_server_offers(fresh_links, tmp_path):
    existing, missing = str(tmp_path), str(tmp_path / "missing")
    said = {}
    for model in ("vit_giant_patch14_224", "vit_base_patch16_224.dino", existing, missing, "hf:facebook/dinov2-giant"):
        app = _open_link({"model": model})
        note = next(n for n in _notes(app) if "backbone" in n)
        assert "does not offer" in note and _model_id(app) == "embedded", note
        said[model] = note.replace(model, "VALUE")
    assert said[existing] == said[missing]  # no answer about which folders exist
    assert not any(load != "embedded" for load in fresh_links), fresh_links  # nothing else was even tried


def test_long_or_crafted_link_values_are_refused_or_literal(fresh_links):
    app = _open_link({"model": "m" * 10_000, "mlp": "0.3"})
    assert any("10,000 characters" in n for n in _notes(app)) and not app.error
    crafted = {
        "model": "![b](http://127.0.0.1:9/md-model.png)",
        "scores": "![s](http://127.0.0.1:9/md-scores.png)",
        "mlp": "![m](http://127.0.0.1:9/md-mlp.png)",
        "head": "<img src=http://127.0.0.1:9/md-head.png>",
    }
    app = _open_link(crafted)
    shown = [*_notes(app), *(e.value for e in app.error), *(c.value for c in app.caption)]
    assert len(_notes(app)) == 3, _notes(app)
    for text in shown:
        assert _markup_outside_code(_without_code_spans(text)) == [], text
    assert all("md-" not in _without_code_spans(n) for n in _notes(app))


def test_the_server_flag_lets_links_name_any_model(fresh_links, monkeypatch):
    from ui import links

    monkeypatch.setenv(links.ANY_MODEL_ENV, "1")
    app = _open_link({"model": "definitely_not_a_model"})
    note = next(n for n in _notes(app) if "backbone" in n)
    assert "cannot load" in note and "Unknown model id" in note and "definitely_not_a_model" in fresh_links


def test_links_restore_backbones_loaded_on_this_server(fresh_links, monkeypatch):
    from ui import links, session, shared
    from ui.state import Selection

    monkeypatch.setattr(session, "selection", lambda: Selection())
    monkeypatch.setattr(
        "snapvit_core.engine.backbones.weights_cached", lambda name: name == "vit_small_patch16_224.dino"
    )
    offered = links.offered_selection
    assert offered("vit_tiny_patch16_224") is None
    shared._LOADED_SELECTIONS["vit_tiny_patch16_224"] = Selection("vit_tiny_patch16_224", random_init=True)
    assert offered("vit_tiny_patch16_224") == Selection("vit_tiny_patch16_224", True)  # as it was loaded
    assert offered("vit_small_patch16_224.dino") == Selection("vit_small_patch16_224.dino")  # cached preset
    assert offered("vit_base_patch16_224.dino") is None  # a preset, but its weights are not here: no download
    assert offered("/etc") is None and offered("embedded") is not None
    monkeypatch.setenv(links.ANY_MODEL_ENV, "1")
    assert offered("/etc") == Selection("/etc")


def test_the_explorer_page_survives_special_and_corrupt_landscape_files(monkeypatch, tmp_path):
    """A FIFO where the shipped landscape is and a cache file with a 400-digit number: a warning each, not a
    hang or an exception box (issue 34)."""
    from snapvit_core.landscape import store as landscape_module
    from snapvit_core.landscape.store import dump_points
    from ui import shared as server

    shipped = tmp_path / "shipped"
    shipped.mkdir()
    monkeypatch.setattr(landscape_module, "SHIPPED_DIR", shipped)
    monkeypatch.setenv("SNAPVIT_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(server, "_SHARED", OrderedDict())
    try:
        app = _open_link({"mlp": "0.3"})  # learns the key of the explorer's landscape
        filled = shared_of(app)
        filled.stop()
        filled.filler.wait(timeout=120)  # idle: nothing writes the cache file after this
        key = filled.landscape.key
        _fifo(shipped / key.file_name())
        cache_file = landscape_module.default_cache_dir() / key.file_name()
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        cache_file.write_text(dump_points(key, [_point()]).replace("1000, 0.0, 0.0", "1" + "0" * 400 + ", 0.0, 0.0"))
        monkeypatch.setattr(server, "_SHARED", OrderedDict())  # a new shared explorer reads both files
        app = _open_link({"mlp": "0.3"})
        warnings = shared_of(app).landscape.warnings
        assert not app.error and len(warnings) == 2, warnings
        assert "FIFO" in warnings[0] and "invalid" in warnings[1]
    finally:
        for held in server._SHARED.values():
            held.stop()
