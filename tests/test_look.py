"""Looking at what a run did: head / sample / stats, the summary table, progress lines."""

import json
import subprocess
import sys

import numpy as np
import pytest
from conftest import ROOT, docs, write_jsonl, write_parquet
from typer.testing import CliRunner

from dcurate.cli.app import app
from dcurate.core.errors import DcurateError, RecipeError
from dcurate.report import look
from dcurate.report.stats import describe, format_description
from dcurate.report.summary import format_summary
from dcurate.runner import progress

runner = CliRunner()


@pytest.fixture
def shards(tmp_path):
    write_jsonl(tmp_path / "in" / "a.jsonl", docs(40, "a"))
    write_parquet(tmp_path / "in" / "b.parquet", docs(60, "b"), row_group_size=7)
    return tmp_path / "in"


# -- head / sample ---------------------------------------------------------------------------------


def test_head_first_documents_with_where_and_columns(shards):
    got = look.head(str(shards), 3)
    assert [d["id"] for d in got] == ["a00000", "a00001", "a00002"]
    got = look.head(str(shards), 4, where="domain == 'c' and score > 3.5")
    assert [d["id"] for d in got] == ["a00038", "b00038", "b00041", "b00044"]
    assert got[1]["__shard"] == "b" and got[1]["__row"] == 38
    with pytest.raises(RecipeError, match="unknown column 'scor'.*did you mean 'score'"):
        look.head(str(shards), 2, columns=["scor"])
    with pytest.raises(DcurateError, match="unknown column 'nope'.*available columns: id, text, domain, score$"):
        look.head(str(shards), 2, where="nope > 1")


def test_sample_is_uniform_deterministic_and_in_shard_order(shards):
    a = [d["id"] for d in look.sample(str(shards), 10, seed=3)]
    assert a == [d["id"] for d in look.sample(str(shards), 10, seed=3)]
    assert a != [d["id"] for d in look.sample(str(shards), 10, seed=4)]
    assert len(set(a)) == 10 and a == sorted(a)  # a* before b*, rows in order
    assert len(look.sample(str(shards), 500)) == 100  # fewer documents than asked: all of them
    some = look.sample(str(shards), 5, seed=1, where="domain == 'b' and score < 2")
    assert len(some) == 5 and all(d["domain"] == "b" and d["score"] < 2 for d in some)
    # every document equally likely: over many seeds each is drawn about k/n of the time
    hits = {}
    for seed in range(300):
        for d in look.sample(str(shards), 10, seed=seed):
            hits[d["id"]] = hits.get(d["id"], 0) + 1
    counts = np.array([hits.get(d, 0) for d in [f"a{i:05d}" for i in range(40)] + [f"b{i:05d}" for i in range(60)]])
    assert counts.min() > 10 and counts.max() < 60  # expected 30 each


def test_format_docs_wraps_and_truncates():
    d = {"id": "x1", "text": "word " * 200, "score": 0.123456, "__shard": "s", "__row": 4}
    out = look.format_docs([d], max_chars=100, width=60)
    lines = out.splitlines()
    assert lines[0].startswith("--- 1. s row 5  id=x1")
    assert lines[1] == "score=0.1235"
    assert all(len(ln) <= 60 for ln in lines[2:-1])
    assert "[... 900 more characters]" in out
    assert look.format_docs([]) == "(no documents)"


def test_head_and_sample_commands(shards):
    res = runner.invoke(app, ["head", str(shards), "-n", "2", "--columns", "domain"])
    assert res.exit_code == 0, res.output
    assert "id=a00001" in res.output and "domain=b" in res.output and "score=" not in res.output
    res = runner.invoke(app, ["sample", str(shards), "-n", "3", "--seed", "2", "--json"])
    recs = [json.loads(x) for x in res.output.splitlines()]
    assert len(recs) == 3 and set(recs[0]) == {"id", "text", "domain", "score"}


# -- stats -----------------------------------------------------------------------------------------


def test_stats_lengths_by_group_top_values_and_unknown_column(shards):
    d = describe(str(shards), by="domain", column="id", top=5)
    assert d["docs"] == 100 and d["distinct"] == 100 and len(d["counts"]) == 5
    words = [len(r["text"].split()) for r in docs(40, "a") + docs(60, "b")]
    assert d["length_quantiles"]["words"]["p50"] == np.quantile(words, 0.5)
    assert d["length_quantiles"]["words"]["p100"] == max(words)
    groups = {g["value"]: g for g in d["groups"]}
    assert sum(g["docs"] for g in groups.values()) == 100 and set(groups) == {"a", "b", "c"}
    a_words = [len(r["text"].split()) for r in docs(40, "a") + docs(60, "b") if r["domain"] == "a"]
    assert groups["a"]["words_p50"] == np.median(a_words)
    text = format_description(d)
    assert "id: top 5 of 100 distinct values" in text and "95 more values" in text and "by domain:" in text
    with pytest.raises(RecipeError, match="unknown column 'domian'.*did you mean 'domain'"):
        describe(str(shards), column="domian")
    with pytest.raises(RecipeError, match="--by: unknown column"):
        describe(str(shards), by="nope")
    res = runner.invoke(app, ["stats", str(shards), "--column", "nope"])
    assert res.exit_code != 0 and "unknown column 'nope'" in res.output


def test_stats_tokens_with_a_tokenizers_file(shards, tmp_path):
    tokenizers = pytest.importorskip("tokenizers")
    from tokenizers.models import WordLevel
    from tokenizers.pre_tokenizers import Whitespace

    vocab = {w: i for i, w in enumerate("[UNK] alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu".split())}
    tok = tokenizers.Tokenizer(WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = Whitespace()
    tok.save(str(tmp_path / "tok.json"))
    d = describe(str(shards), tokenizer=str(tmp_path / "tok.json"))
    assert d["tokens"] == sum(len(r["text"].split()) for r in docs(40, "a") + docs(60, "b"))


# -- summary, dedup annotate/paragraphs, mix ---------------------------------------------------------


def test_summary_adds_up_with_added_documents_and_counters():
    s = {"index": 0, "stage": "mix", "docs_in": 100, "docs_out": 120, "bytes_in": 0, "bytes_out": 0,
         "removed": {"mix.downsampled": 30}, "seconds": 1.0, "counters": {"docs_changed": 7}}
    text = format_summary({"stages": [s], "docs_out": 120, "shards_out": 1, "seconds": 1, "workers": 1,
                           "resumed": True}, "out")
    row = text.splitlines()[1].split()
    assert row[2:6] == ["100", "120", "30", "50"]  # in, out, removed, added: 100 - 30 + 50 = 120
    assert "repeated documents (up-sampling)" in text and "documents changed" in text
    assert "fully resumed" in text


def test_dedup_annotate_marks_the_kept_member_and_paragraphs_counts_changes(tmp_path):
    import pyarrow.parquet as pq

    from dcurate import api

    recs = [{"id": "a", "text": "one two three four five six seven"},
            {"id": "b", "text": "one two three four five six seven"},
            {"id": "c", "text": "something else entirely here today"}]
    write_jsonl(tmp_path / "in" / "s.jsonl", recs)
    api.curate(str(tmp_path / "in"), str(tmp_path / "o"), [{"stage": "dedup", "method": "exact", "annotate": True}],
               workers=1, output_format="parquet")
    t = pq.read_table(tmp_path / "o" / "s.parquet").to_pylist()
    assert [(r["id"], r["dup_kept"]) for r in t] == [("a", True), ("b", False), ("c", True)]
    lines = ["shared line number one here", "shared line number two here"]
    recs = [{"id": f"p{i}", "text": "\n".join(lines + [f"unique line {i}"])} for i in range(3)]
    write_jsonl(tmp_path / "p" / "s.jsonl", recs)
    s = api.curate(str(tmp_path / "p"), str(tmp_path / "po"), [{"stage": "dedup", "method": "paragraphs"}], workers=1)
    assert s["stages"][0]["counters"] == {"docs_changed": 2, "lines_removed": 4}


# -- progress ---------------------------------------------------------------------------------------


def test_tracked_tasks_count_rows_in_their_slot(tmp_path):
    path = tmp_path / "slots.bin"
    path.write_bytes(b"\0" * 24)

    def fn(n):
        progress.tick(n)
        progress.tick(1)
        return n

    t = progress.Tracked(fn, str(path))
    assert t((1, 5)) == 5 and t((2, 7)) == 7
    progress.tick(100)  # outside a task: nowhere
    assert list(np.fromfile(path, dtype=np.int64)) == [0, 6, 8]


def test_progress_line_format():
    line = progress.progress_line("pass 2/3 dedup", 12_345, 21_574, 4.0, 1, 8)
    assert line == "pass 2/3 dedup: 12,345/21,574 docs (57%), 3,086 docs/s, ETA 0:03"
    assert progress.progress_line("scan", 500, None, 2.0, 1, 4) == "scan: 500 docs, 250 docs/s, 1/4 tasks"
    assert progress.fmt_duration(3725) == "1:02:05"


def test_progress_lines_in_a_non_terminal_log(tmp_path):
    write_parquet(tmp_path / "in" / "a.parquet", docs(10_000, "a"))  # 3 read batches each
    write_parquet(tmp_path / "in" / "b.parquet", docs(10_000, "b"))
    code = f"""
import sys
sys.path.insert(0, {str(ROOT / 'tests')!r})
from toy_stages import ToyLen, LenParams
from dcurate.cli import logs
from dcurate.core.options import RunOptions
from dcurate.runner.driver import run
logs.configure(logs.LogFlags(0, "json"))
run([{str(tmp_path / 'in')!r}], {str(tmp_path / 'out')!r}, [(ToyLen, LenParams(sleep=0.3))], RunOptions(workers=2))
"""
    env = {"DCURATE_PROGRESS_INTERVAL": "0.02", "PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"}
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=ROOT)
    assert res.returncode == 0, res.stderr
    recs = [json.loads(x) for x in res.stderr.splitlines()]  # --log-format json: every stderr line is JSON
    msgs = [r["message"] for r in recs]
    assert recs[-1]["message"].startswith("run summary") and recs[-1]["data"]["docs_out"] == 20_000
    assert "pass 1/1: toy_len: started, 2 task(s), 20,000 docs" in msgs
    assert "pass 1/1: toy_len: done, 20,000 docs" in " ".join(msgs)
    between = [m for m in msgs if "docs (" in m and "/20,000 docs" in m]
    assert between and all("docs/s" in m for m in between)
    # rows are reported while tasks run: some line shows a count that is not a whole shard's
    counts = {int(m.rsplit(": ", 1)[1].split("/")[0].replace(",", "")) for m in between}
    assert counts - {0, 10_000, 20_000}


@pytest.mark.shared
def test_look_at_the_real_corpus():
    from conftest import SHARED

    if not SHARED.exists():
        pytest.skip("needs ../shared")
    corpus = SHARED / "corpus"
    d = describe(str(corpus / "parquet"), by="domain")
    assert d["docs"] == 21_574 and len(d["groups"]) == 7
    assert sum(g["docs"] for g in d["groups"]) == 21_574
    assert "\ndomain:" not in format_description(d)  # shown once, as the --by table
    first = look.head(str(corpus / "jsonl"), 2, where="domain == 'code'")
    assert [r["domain"] for r in first] == ["code", "code"]
    a = look.sample(str(corpus / "parquet"), 5, seed=7)
    b = look.sample(str(corpus / "jsonl"), 5, seed=7)  # same documents, same order: same sample
    assert [r["id"] for r in a] == [r["id"] for r in b]
