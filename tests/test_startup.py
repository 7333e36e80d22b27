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
