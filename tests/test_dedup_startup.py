"""Start-up of a `dcurate dedup` command line: the console entry builds only the stage's own
command (no other stage module, no polars), and what the user sees is what the whole app gives.
Structural checks only, no timing."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# The same command line through the console entry (one stage's command) and through the whole app.
ENTRY = "import sys; from dcurate.cli.entry import main; sys.argv = ['dcurate'] + sys.argv[1:]; main()"
WHOLE = "import sys; from dcurate.cli.app import main; sys.argv = ['dcurate'] + sys.argv[1:]; main()"


def _run(code: str, *args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, COLUMNS="100", PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, env=env, cwd=ROOT)


def test_dedup_line_imports_no_other_stage_nor_polars(tmp_path):
    src = tmp_path / "in.jsonl"
    src.write_text("".join(json.dumps({"id": str(i), "text": f"doc {i} with a few words"}) + "\n" for i in range(3)))
    code = ENTRY.replace(
        "main()",
        "\ntry:\n    main()\nexcept SystemExit as e:\n    assert not e.code, e.code\n"
        "print(sorted(m for m in sys.modules if m == 'polars' or (m.startswith('dcurate.stages.')"
        " and m.endswith('.stage') and m != 'dcurate.stages.dedup.stage')))",
    )
    p = _run(code, "dedup", str(src), str(tmp_path / "out"), "--no-report")
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip().splitlines()[-1] == "[]"
    assert (tmp_path / "out" / "in.jsonl").exists()


def test_dedup_line_reads_as_with_every_command(tmp_path):
    """Help, usage errors and their exit codes are those of the app with every command."""
    src = tmp_path / "in.jsonl"
    src.write_text('{"id": "a", "text": "x"}\n')
    for args in (
        ["dedup", "--help"],
        ["dedup", str(src)],
        ["dedup", str(src), str(tmp_path / "o1"), "--no-such-option"],
        ["-q", "dedup", str(src), str(tmp_path / "o2"), "--threshold", "two"],
    ):
        one, whole = _run(ENTRY, *args), _run(WHOLE, *args)
        assert (one.returncode, one.stdout, one.stderr) == (whole.returncode, whole.stdout, whole.stderr), args
        assert one.returncode == (0 if "--help" in args else 2), (args, one.stderr)
