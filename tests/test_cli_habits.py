"""CLI habits: logging flags anywhere, help, dry-run plans, recipe checks, refused flags."""

import json
import logging
import subprocess
import sys

import pytest
from conftest import ROOT, docs, write_jsonl, write_parquet
from typer.testing import CliRunner

from dcurate.cli import logs
from dcurate.cli.app import app
from dcurate.core.errors import RecipeError
from dcurate.runner.recipe import from_dict, load
from dcurate.stages.mix.regmix import domain_names

runner = CliRunner()


@pytest.fixture
def data(tmp_path):
    write_jsonl(tmp_path / "in" / "a.jsonl", docs(30, "a"))
    write_parquet(tmp_path / "in" / "b.parquet", docs(20, "b"))
    return tmp_path / "in"


def test_logging_flags_anywhere_on_the_line():
    args, f = logs.extract(["filter", "in", "-v", "out", "--log-format", "json", "--", "-q"])
    assert args == ["filter", "in", "out", "--", "-q"] and f.verbosity == 1 and f.fmt == "json"
    args, f = logs.extract(["run", "r.yaml", "--quiet", "--log-format=text"])
    assert args == ["run", "r.yaml"] and f.verbosity == -1
    with pytest.raises(RecipeError, match="text or json"):
        logs.extract(["--log-format", "xml"])


def test_verbose_never_shows_numba_debug_and_json_lines():
    logs.configure(logs.LogFlags(1, "json"))
    try:
        assert logging.getLogger("dcurate").isEnabledFor(logging.DEBUG)
        assert not logging.getLogger("numba.core.ssa").isEnabledFor(logging.DEBUG)
        assert logging.getLogger("numba").level == logging.WARNING
        rec = logging.LogRecord("dcurate", logging.INFO, "", 0, "hello %s", ("x",), None)
        assert json.loads(logs.JsonFormatter().format(rec))["message"] == "hello x"
    finally:
        logs.configure(logs.LogFlags())


def test_quiet_after_the_subcommand_silences_progress_and_summary(data, tmp_path):
    res = runner.invoke(app, ["filter", str(data), str(tmp_path / "o"), "--preset", "none", "--workers", "1", "-q"])
    assert res.exit_code == 0, res.output
    assert res.output == ""
    res = runner.invoke(app, ["filter", str(data), str(tmp_path / "o2"), "--preset", "none", "--workers", "1"])
    assert "documents written to" in res.output and "started" in res.output


def test_help_h_whole_summaries_and_grouped_run_options():
    res = runner.invoke(app, ["-h"])
    assert res.exit_code == 0 and "--install-completion" in res.output
    assert "Cut inputs (e.g. one big compressed JSONL file" in " ".join(res.output.split())
    assert "head" in res.output and "sample" in res.output
    sub = runner.invoke(app, ["dedup", "-h"]).output
    own, _, shared = sub.partition("Run options (shared by every stage")
    assert "--threshold" in own and "--workers" not in own and "--workers" in shared and "--seed" in shared
    for cmd in ("filter", "quality", "perplexity", "select", "dedup", "mix", "train-quality", "train-lm", "stats"):
        text = runner.invoke(app, [cmd, "--help"]).output
        assert "../shared" not in text and "data/demo" in text, cmd


def test_dry_run_prints_a_readable_plan_json_only_on_request(data, tmp_path):
    args = ["dedup", str(data), str(tmp_path / "o"), "--dry-run", "--workers", "1"]
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    assert "dry run" in res.output and "stages" in res.output and "pass 1/1" in res.output
    assert "estimated work" in res.output and "scan round" in res.output
    res = runner.invoke(app, args + ["--json"])
    plan = json.loads(res.stdout)
    assert plan["stages"][0]["stage"] == "dedup" and not (tmp_path / "o").exists()


def test_recipe_checked_against_input_columns_in_the_dry_run(data, tmp_path):
    r = tmp_path / "r.yaml"
    r.write_text(f"input: {data}\noutput: {tmp_path / 'o'}\nstages:\n  - stage: filter\n    preset: none\n"
                 "    keep_if: 'scroe > 1 and domian == \"a\"'\n")
    res = runner.invoke(app, ["run", str(r), "--dry-run"])
    assert res.exit_code == 2
    assert "unknown column 'scroe' (did you mean 'score'?)" in res.output
    assert "unknown column 'domian' (did you mean 'domain'?)" in res.output
    # a column added by an earlier stage is fine
    r.write_text(f"input: {data}\noutput: {tmp_path / 'o'}\nstages:\n  - stage: dedup\n    annotate: true\n"
                 "  - stage: filter\n    preset: none\n    keep_if: 'dup_kept'\n")
    assert runner.invoke(app, ["run", str(r), "--dry-run"]).exit_code == 0


def test_every_recipe_error_at_once_with_did_you_mean(tmp_path):
    doc = {"input": "x", "output": "y", "wrokers": 2,
           "stages": [{"stage": "filtr"}, {"stage": "dedup", "treshold": 0.5, "num_perm": "many"}]}
    with pytest.raises(RecipeError) as e:
        from_dict(doc)
    msg = str(e.value)
    assert "unknown key 'wrokers' (did you mean 'workers'?)" in msg
    assert "unknown stage 'filtr' (did you mean 'filter'?)" in msg
    assert "unknown parameter 'treshold' (did you mean 'threshold'?)" in msg
    assert "parameter 'num_perm': expected int" in msg


def test_recipe_paths_are_relative_to_the_recipe_and_cli_overrides(tmp_path, data):
    (tmp_path / "conf").mkdir()
    r = tmp_path / "conf" / "r.yaml"
    r.write_text("input: ../in\noutput: ../out\nrejected: ../rej\nstages:\n"
                 "  - stage: select\n    target: ../in/a.jsonl\n    k: 5\n")
    rec = load(r)
    assert rec.inputs == [str(tmp_path / "in")] and rec.output == str(tmp_path / "out")
    assert rec.options.rejected == str(tmp_path / "rej") and rec.stages[0][1].target == str(tmp_path / "in" / "a.jsonl")
    rec = load(r, inputs=["elsewhere/x.jsonl"], output="o2")
    assert rec.inputs == ["elsewhere/x.jsonl"] and rec.output == "o2"
    r.write_text("stages: []\n")  # input and output may come from the command line only
    res = runner.invoke(app, ["run", str(r), "--input", str(data), "--output", str(tmp_path / "o3"), "--dry-run"])
    assert res.exit_code == 0, res.output
    r2 = ROOT / "configs" / "demo.yaml"
    assert load(r2).inputs == [str(ROOT / "data" / "demo" / "corpus")]


def test_flags_that_do_nothing_for_the_method_are_refused(data, tmp_path):
    res = runner.invoke(app, ["dedup", str(data), str(tmp_path / "o"), "--method", "exact", "--threshold", "0.5"])
    assert res.exit_code == 2
    assert "'threshold' does nothing with method 'exact'; it applies only with method 'minhash'" in res.output
    res = runner.invoke(app, ["dedup", str(data), str(tmp_path / "o"), "--method", "exact", "--dry-run"])
    assert res.exit_code == 0, res.output
    with pytest.raises(RecipeError, match="'num_perm' does nothing with method 'paragraphs'"):
        from_dict({"input": "x", "output": "y", "stages": [{"stage": "dedup", "method": "paragraphs", "num_perm": 64}]})


def test_adding_a_column_that_exists_warns_unless_overwrite(data, tmp_path):
    runner.invoke(app, ["dedup", str(data), str(tmp_path / "a"), "--annotate", "--workers", "1"])
    res = runner.invoke(app, ["dedup", str(tmp_path / "a"), str(tmp_path / "b"), "--annotate", "--workers", "1"])
    assert res.exit_code == 0 and "column 'dup_kept' is already there" in res.output
    res = runner.invoke(app, ["dedup", str(tmp_path / "a"), str(tmp_path / "c"), "--annotate", "--workers", "1",
                              "--overwrite-column"])
    assert res.exit_code == 0 and "already there" not in res.output


def test_mix_fit_names_domains_as_mix_reads_them():
    w = domain_names({"train_the_pile_arxiv": 0.25, "train_the_pile_pile_cc": 0.75})
    assert w == {"arxiv": 0.25, "pile_cc": 0.75}
    assert domain_names({"wiki": 0.5, "web": 0.5}) == {"wiki": 0.5, "web": 0.5}
    assert domain_names({"a_x": 0.5, "a_": 0.5}) == {"a_x": 0.5, "a_": 0.5}


def test_fully_resumed_run_says_so(data, tmp_path):
    args = ["filter", str(data), str(tmp_path / "o"), "--preset", "none", "--workers", "1"]
    first = runner.invoke(app, args)
    assert "fully resumed" not in first.output
    again = runner.invoke(app, args)
    assert again.exit_code == 0 and "fully resumed" in again.output
    assert json.loads((tmp_path / "o" / ".dcurate" / "stats.json").read_text())["resumed"] is True


@pytest.mark.slow
def test_kenlm_banner_is_silenced(tmp_path):
    pytest.importorskip("kenlm")
    write_jsonl(tmp_path / "t.jsonl", docs(200, "t"))
    write_jsonl(tmp_path / "in" / "a.jsonl", docs(20, "a"))
    py = [sys.executable, "-m", "dcurate.cli.app"]
    subprocess.run(py + ["train-lm", "--input", str(tmp_path / "t.jsonl"), "--order", "2", "--out",
                         str(tmp_path / "lm.arpa"), "--discount-fallback"], check=True, capture_output=True, cwd=ROOT)
    res = subprocess.run(py + ["perplexity", str(tmp_path / "in"), str(tmp_path / "o"), "--lm", str(tmp_path / "lm.arpa"),
                               "--backend", "kenlm", "--workers", "1"], capture_output=True, text=True, cwd=ROOT)
    assert res.returncode == 0, res.stderr
    assert "Loading the LM" not in res.stderr and "----5---10" not in res.stderr


def test_shell_completion_of_commands_and_flags():
    env = {"_DCURATE_COMPLETE": "complete_bash", "COMP_WORDS": "dcurate de", "COMP_CWORD": "1"}
    res = runner.invoke(app, [], prog_name="dcurate", env=env)
    assert res.output.split() == ["dedup"]
    env.update(COMP_WORDS="dcurate dedup --thr", COMP_CWORD="2")
    assert runner.invoke(app, [], prog_name="dcurate", env=env).output.split() == ["--threshold"]
