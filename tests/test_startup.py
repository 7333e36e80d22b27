"""Start-up of small commands (dcurate.cli.entry): no pool for small inputs, unused heavy packages
kept out, no numba compiler for a few documents. Structural checks only, no timing."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys

import pytest

from dcurate.cli import entry


def test_small_inputs_start_no_pool(tmp_path, monkeypatch):
    monkeypatch.setattr(entry.os, "cpu_count", lambda: 4)
    small = tmp_path / "in.jsonl"
    small.write_text('{"id": "a", "text": "x"}\n')
    out = str(tmp_path / "out")
    assert not entry._wants_pool(["dcurate", "dedup", str(small), out])
    assert entry._wants_pool(["dcurate", "dedup", str(small), out, "--workers", "2"])
    assert not entry._wants_pool(["dcurate", "dedup", str(small), out, "--workers", "1"])
    assert entry._wants_pool(["dcurate", "dedup", "-", out])  # stdin: size unknown
    big = tmp_path / "big"
    big.mkdir()
    (big / "part.jsonl").write_bytes(b"x" * (entry.SMALL_INPUT_BYTES + 1))
    assert entry._wants_pool(["dcurate", "dedup", str(big), out])


def test_absent_packages_raise_import_error_but_can_be_looked_up():
    from dcurate.runner.imports import Absent

    finder = Absent(("json_not_really",))
    sys.meta_path.insert(0, finder)
    try:
        assert importlib.util.find_spec("json_not_really") is not None
        with pytest.raises(ImportError):
            importlib.import_module("json_not_really")
        with pytest.raises(ImportError):
            importlib.import_module("json_not_really.sub")
    finally:
        sys.meta_path.remove(finder)
        sys.modules.pop("json_not_really", None)


def test_one_document_dedup_loads_no_compiler_pandas_or_scipy(tmp_path):
    src = tmp_path / "one.jsonl"
    src.write_text(json.dumps({"id": "a", "text": "just one small document with a few words"}) + "\n")
    code = (
        "import sys; from dcurate.cli import entry; "
        f"sys.argv = ['dcurate', 'dedup', {str(src)!r}, {str(tmp_path / 'out')!r}]\n"
        "try:\n    entry.main()\nexcept SystemExit as e:\n    assert not e.code, e.code\n"
        "print(sorted(m for m in ('pandas', 'scipy', 'numba.np.arraymath') if sys.modules.get(m)))"
    )
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip().splitlines()[-1] == "[]"
    assert (tmp_path / "out" / "one.jsonl").exists()


# -- what the console entry prestarts -------------------------------------------------------------


def test_global_options_before_the_command_still_prestart(tmp_path, monkeypatch):
    """`dcurate -v run r.yaml` (global options first) reads as `dcurate run r.yaml`."""
    monkeypatch.setattr(entry.os, "cpu_count", lambda: 4)
    recipe = tmp_path / "r.yaml"
    recipe.write_text("input: in\noutput: out\nstages:\n  - stage: dedup\n  - stage: mix\n    weights: {a: 1}\n")
    for head in (["-v"], ["--quiet"], ["--log-format", "json"], ["--log-format=json", "-q"]):
        argv = ["dcurate", *head, "run", str(recipe)]
        assert entry._wants_pool(argv), argv
        assert entry._stage_modules(argv) == ["dcurate.stages.dedup.stage", "dcurate.stages.mix.stage"]
    assert not entry._wants_pool(["dcurate", "-v", "look", str(recipe)])


def test_zipfit_preloads_the_deflate_model(tmp_path):
    deflate = "dcurate.stages.select.deflate_model"
    stage = "dcurate.stages.select.stage"
    cli = ["dcurate", "select", "in", "out", "--target", "t.jsonl"]
    assert entry._stage_modules([*cli, "--method", "zipfit"]) == [stage, deflate]
    assert entry._stage_modules([*cli, "--method=zipfit", "--level", "9"]) == [stage, deflate]
    assert entry._stage_modules([*cli, "--method", "zipfit", "--level", "6"]) == [stage]
    assert entry._stage_modules([*cli, "--method", "zipfit", "--gzip-engine", "zlib"]) == [stage]
    assert entry._stage_modules(cli) == [stage]  # DSIR
    recipe = tmp_path / "r.yaml"
    recipe.write_text("stages:\n  - stage: select\n    method: zipfit\n    gzip-engine: auto\n")
    assert entry._stage_modules(["dcurate", "run", str(recipe)]) == [stage, deflate]


def test_entry_and_stage_agree_on_preloads():
    """The console entry's preloads (from CLI strings and the package's defaults) are what the
    stage itself asks for with the same parameters."""
    import dataclasses

    from dcurate.core.stage import StageContext
    from dcurate.stages.filter.stage import FilterParams
    from dcurate.stages.select.stage import Select, SelectParams

    for given in ({}, {"method": "zipfit"}, {"method": "zipfit", "level": 6}, {"method": "zipfit", "gzip_engine": "zlib"}):
        params = dataclasses.replace(SelectParams(), **given)
        from_cli = {k: str(v) for k, v in given.items()}
        want = Select(params, StageContext()).preload_modules()
        assert entry._preload("select", from_cli) == want[1:], given
    from dcurate.stages.filter.stage import Filter

    for given in ({}, {"preset": "none"}, {"preset": "none", "rules": ["min_words"]}):
        params = dataclasses.replace(FilterParams(), **given)
        want = Filter(params, StageContext()).preload_modules()
        assert entry._preload("filter", given) == want[1:], given


def test_entry_prestarts_what_the_command_uses(tmp_path, monkeypatch):
    """Through entry's main: global options first and ZIP-FIT's deflate model both reach the
    fork server's preload list."""
    import dcurate.cli.app
    import dcurate.runner.executor

    got: list[list[str]] = []
    monkeypatch.setattr(dcurate.runner.executor, "prestart_fork_server", got.append)
    monkeypatch.setattr(dcurate.cli.app, "main", lambda: None)
    monkeypatch.delenv("DCURATE_NO_PRESTART", raising=False)
    argv = ["dcurate", "-v", "select", "in", "out", "--method", "zipfit", "--workers", "2"]
    monkeypatch.setattr(entry.sys, "argv", argv)
    entry._main()
    assert got == [["dcurate.stages.select.stage", "dcurate.stages.select.deflate_model"]]


def test_stage_names_kept_in_one_place():
    from dcurate.core import names, stage

    assert stage.STAGE_MODULES == list(names.STAGE_NAMES)
    assert entry._DATA_COMMANDS == {"run", "reshard", *names.STAGE_NAMES}
    assert set(stage.registry()) == set(names.STAGE_NAMES)
