"""The command line: generated stage commands, help, user errors, recipes and shell pipelines."""

import json
import re
import shutil
import subprocess
import sys

import pytest
from conftest import ROOT, docs, tree_digest, write_jsonl
from typer.testing import CliRunner

from dcurate.cli.app import app
from dcurate.core.stage import registry

runner = CliRunner()


def dcurate(*args, **kw):
    return subprocess.run([sys.executable, "-m", "dcurate.cli.app", *map(str, args)], capture_output=True, cwd=ROOT, **kw)


@pytest.mark.slow
def test_every_stage_is_a_subcommand_with_defaults_and_an_example():
    res = runner.invoke(app, ["--help"])
    assert res.exit_code == 0
    for name in registry():
        assert name in res.output
        sub = runner.invoke(app, [name, "--help"])
        assert sub.exit_code == 0, sub.output
        assert "Example:" in sub.output and "--workers" in sub.output and "--seed" in sub.output
    assert re.search(r"\[default:\s+gopher\]", runner.invoke(app, ["filter", "--help"]).output)
    for extra in ("run", "stats", "reshard"):
        assert runner.invoke(app, [extra, "--help"]).exit_code == 0


@pytest.mark.slow
def test_stage_flags_match_recipe_keys(corpus, tmp_path):
    res = runner.invoke(app, ["filter", str(corpus), str(tmp_path / "cli"), "--preset", "none",
                              "--keep-if", "score >= 3", "--workers", "1"])
    assert res.exit_code == 0, res.output
    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"input: {corpus}\noutput: {tmp_path / 'rec'}\nworkers: 1\nstages:\n"
                      "  - stage: filter\n    preset: none\n    keep_if: 'score >= 3'\n")
    res = runner.invoke(app, ["run", str(recipe)])
    assert res.exit_code == 0, res.output
    assert tree_digest(tmp_path / "cli") == tree_digest(tmp_path / "rec")
    # CLI flags override the recipe
    res = runner.invoke(app, ["run", str(recipe), "--limit", "10"])
    assert res.exit_code == 0
    assert json.loads((tmp_path / "rec" / ".dcurate" / "stats.json").read_text())["stages"][0]["docs_in"] == 10


@pytest.mark.slow
def test_user_errors_are_one_line_data_1_usage_2(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": 1, "text": "fine"}\nnot json\n')
    res = dcurate("filter", bad, tmp_path / "o", "--workers", "1")
    assert res.returncode == 1
    err = res.stderr.decode()
    assert "bad.jsonl: line 2: malformed JSON" in err and "Traceback" not in err
    res = dcurate("filter", bad, tmp_path / "o", "--min-words", "many")
    assert res.returncode == 2 and "--min-words" in res.stderr.decode()
    recipe = tmp_path / "r.yaml"
    recipe.write_text("input: x\noutput: y\nstages:\n  - stage: filter\n    min_wordz: 3\n")
    res = dcurate("run", recipe)
    assert res.returncode == 2 and "stages[0] (filter): unknown parameter 'min_wordz'" in res.stderr.decode()


@pytest.mark.slow
def test_recipes_evaluate_no_code(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("input: !!python/object/apply:os.system ['echo pwned']\noutput: y\n")
    res = dcurate("run", recipe)
    assert res.returncode == 2 and "not valid YAML" in res.stderr.decode()


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_shell_pipeline_stdin_to_stdout_to_global_stage(tmp_path):
    recs = docs(60) + docs(20)  # 20 exact duplicates of the first documents (same text, same ids)
    for i, r in enumerate(recs[60:]):
        r["id"] = f"dup{i}"
    src = write_jsonl(tmp_path / "x.jsonl.zst", recs)
    py = sys.executable
    cmd = (f"{py} -c 'import sys,zstandard;sys.stdout.buffer.write(zstandard.ZstdDecompressor().stream_reader(open(sys.argv[1],\"rb\")).read())' {src}"
           f" | {py} -m dcurate.cli.app filter - - --preset none --keep-if 'score >= 0' --workers 1"
           f" | {py} -m dcurate.cli.app dedup - {tmp_path / 'out'} --method exact --workers 1")
    subprocess.run(["bash", "-o", "pipefail", "-c", cmd], check=True, cwd=ROOT, capture_output=True)
    out = tmp_path / "out" / "stdin.jsonl"
    ids = [json.loads(line)["id"] for line in out.read_text().splitlines()]
    assert ids == [r["id"] for r in recs[:60]]


def test_stats_command(corpus):
    res = runner.invoke(app, ["stats", str(corpus), "--json"])
    assert res.exit_code == 0
    d = json.loads(res.output)
    expect = {}
    for n in (40, 30, 50, 60):
        for r in docs(n):
            expect[r["domain"]] = expect.get(r["domain"], 0) + 1
    assert d["docs"] == 180 and d["counts"] == expect and "score" in d["quantiles"]
