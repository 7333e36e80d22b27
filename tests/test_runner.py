"""The runner: mirrored output, determinism across workers and pieces, global phases, resume."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import ROOT, docs, tree_digest, write_jsonl, write_parquet
from toy_stages import LenParams, TopParams, ToyLen, ToyTopK

from dcurate.core.errors import InputError, RecipeError
from dcurate.core.options import RunOptions
from dcurate.io import BatchReader, Piece, expand_inputs
from dcurate.runner.driver import run
from dcurate.runner.recipe import from_dict


def opts(**kw):
    kw.setdefault("workers", 1)
    kw.setdefault("progress", False)
    return RunOptions(**kw)


def rows(path: Path) -> list[dict]:
    out = []
    for sh in expand_inputs([str(path)]):
        out.extend(r for b in BatchReader(Piece(sh)) for r in b.to_pylist())
    return out


def test_output_mirrors_input_shards_formats_and_columns(corpus, tmp_path):
    out = tmp_path / "out"
    stats = run(str(corpus), str(out), [(ToyLen, LenParams(min_chars=60))], opts())
    names = sorted(p.name for p in out.iterdir())
    assert names == [".dcurate", "s0.jsonl", "s1.jsonl.gz", "s2.jsonl.zst", "s3.parquet"]
    kept = rows(out)
    expect = [r for r in rows(corpus) if len(r["text"]) >= 60]
    assert [r["id"] for r in kept] == [r["id"] for r in expect]
    assert set(kept[0]) == {"id", "text", "domain", "score", "n_chars"}
    assert stats["stages"][0]["removed"] == {"toy_len.short": 180 - len(expect)}
    saved = json.loads((out / ".dcurate" / "stats.json").read_text())
    assert saved["docs_out"] == len(expect)
    manifest = json.loads((out / ".dcurate" / "manifest.json").read_text())
    assert manifest["stages"][0]["params"]["min_chars"] == 60 and len(manifest["inputs"]) == 4


def test_all_dropped_shard_is_written_empty_with_schema(tmp_path):
    write_parquet(tmp_path / "in" / "p.parquet", docs(10))
    run(str(tmp_path / "in"), str(tmp_path / "out"), [(ToyLen, LenParams(min_chars=10_000))], opts())
    t = pq.read_table(tmp_path / "out" / "p.parquet")
    assert t.num_rows == 0 and "n_chars" in t.column_names and "domain" in t.column_names


@pytest.mark.slow
def test_identical_output_whatever_workers_and_pieces(corpus, tmp_path):
    stages = [(ToyLen, LenParams(min_chars=40)), (ToyTopK, TopParams(k=7)), (ToyLen, LenParams())]
    run(str(corpus), str(tmp_path / "w1"), stages, opts(workers=1))
    run(str(corpus), str(tmp_path / "w2"), stages, opts(workers=2))
    run(str(corpus), str(tmp_path / "split"), stages, opts(workers=2, split_size=1500))
    a = tree_digest(tmp_path / "w1")
    assert a == tree_digest(tmp_path / "w2")
    # splitting into pieces keeps one output shard per input file with the same documents
    assert sorted(tree_digest(tmp_path / "split")) == sorted(a)
    assert [r["id"] for r in rows(tmp_path / "split")] == [r["id"] for r in rows(tmp_path / "w1")]


def test_global_stage_fused_after_map_and_first(corpus, tmp_path):
    allrows = rows(corpus)
    longest = sorted(((len(r["text"]), r["id"]) for r in allrows), key=lambda t: (-t[0], t[1]))[:5]
    s = run(str(corpus), str(tmp_path / "g"), [(ToyTopK, TopParams(k=5))], opts())
    got = rows(tmp_path / "g")
    assert sorted(r["id"] for r in got) == sorted(i for _, i in longest)
    assert {r["total_docs"] for r in got} == {180}
    assert s["stages"][0]["total_seen"] == 180 and s["stages"][0]["counters"] == {"kept": 5}
    s = run(str(corpus), str(tmp_path / "h"), [(ToyLen, LenParams(min_chars=100)), (ToyTopK, TopParams(k=5))], opts())
    got = rows(tmp_path / "h")
    assert {r["total_docs"] for r in got} == {sum(len(r["text"]) >= 100 for r in allrows)}
    kept = list((tmp_path / "h" / ".dcurate" / "work" / "passes").iterdir())
    assert len(kept) == 1 and kept[0].name.startswith("00-")  # intermediates kept for resume


def test_resume_skips_completed_work_and_matches_clean_run(corpus, tmp_path):
    calls = tmp_path / "calls"
    crashing = [(ToyLen, LenParams(min_chars=30, calls_dir=str(calls), crash_on="s2"))]
    with pytest.raises(RuntimeError, match="planned crash"):
        run(str(corpus), str(tmp_path / "out"), crashing, opts())
    done_before = (calls / "calls.txt").read_text().split()
    assert done_before == ["s0", "s1"]
    assert not (tmp_path / "out" / "s2.jsonl.zst").exists()  # nothing under the final name
    (tmp_path / "out" / ".s2.jsonl.zst.dctmp-999").write_bytes(b"partial")  # as left by a kill -9
    os.environ["DCURATE_NO_CRASH"] = "1"
    try:
        run(str(corpus), str(tmp_path / "out"), crashing, opts())
    finally:
        del os.environ["DCURATE_NO_CRASH"]
    assert (calls / "calls.txt").read_text().split() == ["s0", "s1", "s2", "s3"]  # s0, s1 not redone
    assert not list((tmp_path / "out").glob(".*tmp*"))
    run(str(corpus), str(tmp_path / "clean"), [(ToyLen, LenParams(min_chars=30))], opts())
    assert tree_digest(tmp_path / "out") == tree_digest(tmp_path / "clean")
    # a parameter change invalidates completed work
    run(str(corpus), str(tmp_path / "out"), [(ToyLen, LenParams(min_chars=90, calls_dir=str(calls)))], opts())
    assert (calls / "calls.txt").read_text().split()[-4:] == ["s0", "s1", "s2", "s3"]
    assert all(len(r["text"]) >= 90 for r in rows(tmp_path / "out"))


@pytest.mark.slow
def test_a_killed_worker_fails_the_run_instead_of_hanging(tmp_path):
    from dcurate.core.errors import RunError

    for i in range(12):
        write_jsonl(tmp_path / "in" / f"p{i:02d}.jsonl", docs(5, f"p{i}-"))
    with pytest.raises(RunError, match=r"a worker was killed \(out of memory\?\) while running .*p\d\d\.jsonl; re-run"):
        run(str(tmp_path / "in"), str(tmp_path / "out"), [(ToyLen, LenParams(die_on="*", sleep=0.4))], opts(workers=2))


KILL_SCRIPT = """
import sys, time
sys.path.insert(0, {tests!r})
from toy_stages import ToyLen, LenParams
from dcurate.core.options import RunOptions
from dcurate.runner.driver import run
import dcurate.core.stage as st

class Slow(ToyLen):
    name = "slow_len"
    def process(self, batch, shard, pos):
        time.sleep(0.4)
        return super().process(batch, shard, pos)

if __name__ == "__main__":
    run({inp!r}, {out!r}, [(Slow, LenParams(min_chars=30))], RunOptions(workers=2, progress=False))
"""


@pytest.mark.slow
def test_kill_9_then_rerun_is_identical(tmp_path):
    inp = tmp_path / "in"
    for i in range(8):
        write_jsonl(inp / f"p{i}.jsonl.zst", docs(30, f"s{i}-"))
    script = tmp_path / "job.py"
    script.write_text(KILL_SCRIPT.format(tests=str(Path(__file__).parent), inp=str(inp), out=str(tmp_path / "k")))
    proc = subprocess.Popen([sys.executable, str(script)], start_new_session=True, cwd=ROOT)
    markers = tmp_path / "k" / ".dcurate" / "work" / "markers"
    deadline = time.time() + 120
    while time.time() < deadline and not (markers.exists() and any(markers.rglob("*.done"))):
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    n_done = len(list(markers.rglob("*.done")))
    assert 0 < n_done < 8
    subprocess.run([sys.executable, str(script)], check=True, cwd=ROOT)
    clean = tmp_path / "clean"
    script.write_text(KILL_SCRIPT.format(tests=str(Path(__file__).parent), inp=str(inp), out=str(clean)))
    subprocess.run([sys.executable, str(script)], check=True, cwd=ROOT)
    assert tree_digest(tmp_path / "k") == tree_digest(clean)


def test_limit_dry_run_shard_size_and_rejected(corpus, tmp_path, capsys):
    run(str(corpus), str(tmp_path / "lim"), [], opts(limit=50))
    assert [r["id"] for r in rows(tmp_path / "lim")] == [r["id"] for r in rows(corpus)][:50]
    assert (tmp_path / "lim" / "s3.parquet").exists()  # shards past the limit are written empty
    s = run(str(corpus), str(tmp_path / "dry"), [(ToyLen, LenParams(min_chars=5))], opts(dry_run=True, plan_json=True))
    assert s["dry_run"] and not (tmp_path / "dry").exists()
    plan = json.loads(capsys.readouterr().out)
    assert plan["stages"][0]["params"]["min_chars"] == 5 and len(plan["inputs"]) == 4
    run(str(corpus), str(tmp_path / "rs"), [(ToyLen, LenParams(min_chars=60))], opts(shard_size=25, output_format="parquet"))
    parts = sorted(p.name for p in (tmp_path / "rs").glob("part-*.parquet"))
    kept = [r for r in rows(corpus) if len(r["text"]) >= 60]
    assert len(parts) == -(-len(kept) // 25)
    assert [r["id"] for r in rows(tmp_path / "rs")] == [r["id"] for r in kept]
    assert [pq.read_metadata(tmp_path / "rs" / p).num_rows for p in parts][:-1] == [25] * (len(parts) - 1)
    run(str(corpus), str(tmp_path / "rj"), [(ToyLen, LenParams(min_chars=60))], opts(rejected=str(tmp_path / "rej")))
    rej = rows(tmp_path / "rej")
    assert len(rej) == 180 - len(kept) and {r["dcurate_reason"] for r in rej} == {"toy_len.short"}


def test_same_stage_twice_in_one_process_uses_each_runs_work_folder(corpus, tmp_path):
    stages = [(ToyTopK, TopParams(k=4))]
    run(str(corpus), str(tmp_path / "one"), stages, opts())
    run(str(corpus), str(tmp_path / "two"), stages, opts())
    assert tree_digest(tmp_path / "one") == tree_digest(tmp_path / "two")
    assert list((tmp_path / "two" / ".dcurate" / "work" / "stages").iterdir())


def test_refuses_to_write_over_input(corpus, tmp_path):
    with pytest.raises(RecipeError, match="refusing"):
        run(str(corpus), str(corpus), [], opts())
    with pytest.raises(RecipeError, match="refusing"):
        run(str(corpus), str(corpus / "out"), [], opts())


def test_bad_shard_leaves_no_final_output(tmp_path):
    write_jsonl(tmp_path / "in" / "a.jsonl", docs(5))
    (tmp_path / "in" / "b.jsonl").write_text('{"id": "x", "text": "ok"}\n{broken\n')
    with pytest.raises(InputError, match=r"b\.jsonl: line 2"):
        run(str(tmp_path / "in"), str(tmp_path / "out"), [], opts())
    assert not (tmp_path / "out" / "b.jsonl").exists()
    assert not list((tmp_path / "out").rglob("*.dctmp-*"))
    s = run(str(tmp_path / "in"), str(tmp_path / "out2"), [], opts(on_bad_record="skip"))
    assert s["bad_records_skipped"] == 1 and s["docs_out"] == 6


def test_shards_with_different_schemas(tmp_path):
    write_jsonl(tmp_path / "in" / "a.jsonl", [{"id": "1", "text": "x", "lang": "en"}])
    write_parquet(tmp_path / "in" / "b.parquet", [{"text": "y", "n": 3}])
    run(str(tmp_path / "in"), str(tmp_path / "out"), [], opts())
    assert rows(tmp_path / "out") == [{"id": "1", "text": "x", "lang": "en"}, {"text": "y", "n": 3, "id": "b/0"}]


def test_recipe_validation_names_stage_key_and_allowed():
    base = {"input": "x", "output": "y"}
    with pytest.raises(RecipeError, match=r"stages\[0\]: unknown stage 'nope'; available: .*filter"):
        from_dict({**base, "stages": [{"stage": "nope"}]})
    with pytest.raises(RecipeError, match=r"stages\[0\] \(filter\): unknown parameter 'bogus'; allowed: "):
        from_dict({**base, "stages": [{"stage": "filter", "bogus": 1}]})
    with pytest.raises(RecipeError, match=r"parameter 'workers'"):
        from_dict({**base, "workers": "many"})
    with pytest.raises(RecipeError, match="missing 'input'"):
        from_dict({"output": "y"})
    with pytest.raises(RecipeError, match="unknown key"):
        from_dict({**base, "stagez": []})


@pytest.mark.slow
def test_stage_table_written_to_stdout_and_read_from_stdin(corpus, tmp_path):
    src = (corpus / "s0.jsonl").read_bytes()
    res = subprocess.run(
        [sys.executable, "-m", "dcurate.cli.app", "reshard", "-", "-", "--shard-size", "7", "--workers", "1"],
        input=src, capture_output=True, cwd=ROOT, check=True,
    )
    out = [json.loads(line) for line in res.stdout.splitlines()]
    assert [r["id"] for r in out] == [json.loads(line)["id"] for line in src.splitlines()]
    assert pa.Table.from_pylist(out).num_rows == 40


def test_stage_seconds_are_counted_once(corpus, tmp_path):
    """A map stage fused with a global stage's scan is timed once: in one process the stages'
    seconds (disjoint intervals) cannot add up to more than the run took."""
    stages = [(ToyLen, LenParams(sleep=0.2)), (ToyTopK, TopParams(k=5)), (ToyLen, LenParams())]
    t0 = time.perf_counter()
    s = run(str(corpus), str(tmp_path / "out"), stages, RunOptions(workers=1, progress=False))
    elapsed = time.perf_counter() - t0
    assert s["stages"][0]["seconds"] >= 0.2
    assert sum(st["seconds"] for st in s["stages"]) <= elapsed


def test_context_mapping_sets_and_restores_the_mapper():
    from dcurate.core.stage import StageContext

    calls: list[int] = []

    def mapper(fn, items):
        calls.append(len(items))
        return [fn(x) for x in items]

    ctx = StageContext()
    with ctx.mapping(mapper) as c:
        assert c is ctx and ctx.map(abs, [-1, -2]) == [1, 2]
    assert calls == [2] and ctx.mapper is None
    with pytest.raises(ValueError), ctx.mapping(mapper):
        raise ValueError("the block failed")
    assert ctx.mapper is None  # cleared on failure too
    assert ctx.map(abs, [-3, -4]) == [3, 4] and calls == [2]
