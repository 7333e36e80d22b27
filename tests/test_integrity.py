"""The user's data is safe: inputs are never written, OUT holds exactly this run's result, work
files cannot run code, one run per OUT, verify and clean, resume of a changed last stage."""

import json
import os
import pickle
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from conftest import ROOT, docs, tree_digest, write_jsonl
from toy_stages import LenParams, TopParams, ToyLen, ToyTopK
from typer.testing import CliRunner

from dcurate.cli.app import app
from dcurate.core import workfile
from dcurate.core.errors import DcurateError, RecipeError
from dcurate.core.options import RunOptions
from dcurate.runner.driver import run
from dcurate.runner.outdir import data_files, read_manifest
from dcurate.stages.filter.stage import FilterParams

cli = CliRunner()


def opts(**kw):
    kw.setdefault("workers", 1)
    kw.setdefault("progress", False)
    return RunOptions(**kw)


def none_filter():
    return [("filter", FilterParams(preset="none"))]


def make_inputs(folder: Path, n: int, rows: int = 10) -> Path:
    for s in range(n):
        write_jsonl(folder / f"p{s}.jsonl", docs(rows, f"s{s}-"))
    return folder


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def out_rows(out: Path) -> int:
    n = 0
    for rel in data_files(out):
        p = out / rel
        n += pq.read_metadata(p).num_rows if rel.endswith(".parquet") else len(p.read_bytes().splitlines())
    return n


# -- 1. inputs are never written, moved or deleted -----------------------------------------------------


def test_written_paths_may_not_overlap_inputs(tmp_path):
    inp = make_inputs(tmp_path / "in", 2)
    before = snapshot(inp)
    refused = [
        dict(output=str(tmp_path / "out"), workdir=str(inp), force=True),  # workdir is the input
        dict(output=str(tmp_path / "out"), workdir=str(inp / "w")),  # workdir inside the input
        dict(output=str(tmp_path)),  # OUT contains the input
        dict(output=str(inp / "o")),  # OUT inside the input
        dict(output=str(tmp_path / "out"), rejected=str(inp / "rej")),  # --rejected in the input
        dict(output=str(tmp_path / "out"), rejected=str(tmp_path / "out" / "rejected")),  # --rejected in OUT
        dict(output=str(tmp_path / "out"), workdir=str(tmp_path / "out" / "work")),  # work files among data
    ]
    for case in refused:
        out = case.pop("output")
        with pytest.raises(RecipeError, match="refusing"):
            run(str(inp), out, none_filter(), opts(**case))
        assert snapshot(inp) == before, case
    assert not (tmp_path / "out").exists()
    theirs = tmp_path / "theirs"
    (theirs / "markers").mkdir(parents=True)
    (theirs / "markers" / "keep").write_text("not dcurate's")
    with pytest.raises(RecipeError, match="not a dcurate work folder"):
        run(str(inp), str(tmp_path / "o"), none_filter(), opts(workdir=str(theirs)))
    assert (theirs / "markers" / "keep").exists()


def test_symlinks_and_globs_are_resolved(tmp_path):
    inp = make_inputs(tmp_path / "in", 2)
    before = snapshot(inp)
    (tmp_path / "alias").symlink_to(inp)
    with pytest.raises(RecipeError, match="refusing"):  # OUT is the input under another name
        run(str(inp), str(tmp_path / "alias"), none_filter(), opts(force=True))
    with pytest.raises(RecipeError, match="refusing"):  # a glob's files lie inside OUT
        run(str(inp / "*.jsonl"), str(inp), none_filter(), opts())
    with pytest.raises(RecipeError, match="refusing"):  # the workdir through a symlink
        run(str(tmp_path / "alias" / "*.jsonl"), str(tmp_path / "o"), none_filter(), opts(workdir=str(inp)))
    assert snapshot(inp) == before


def test_stage_and_model_outputs_may_not_overwrite_inputs(tmp_path):
    from dcurate.stages.dedup.stage import Params as DedupParams
    from dcurate.stages.perplexity.stage import train_lm

    inp = make_inputs(tmp_path / "in", 2)
    before = snapshot(inp)
    with pytest.raises(RecipeError, match="--clusters"):
        run(str(inp), str(tmp_path / "o"), [("dedup", DedupParams(clusters=str(inp / "p0.jsonl")))], opts())
    ref = make_inputs(tmp_path / "ref", 1)
    with pytest.raises(RecipeError, match="refusing"):  # OUT inside the reference set of --against
        run(str(inp / "p0.jsonl"), str(ref / "o"), [("dedup", DedupParams(against=str(ref)))], opts())
    with pytest.raises(RecipeError, match="--out"):
        train_lm([str(inp / "p0.jsonl")], str(inp / "p0.jsonl"), order=2)
    assert snapshot(inp) == before


# -- 2. the output folder holds exactly this run's result ---------------------------------------------


@pytest.mark.parametrize("force", [False, True])
def test_shards_of_earlier_runs_are_removed(tmp_path, force):
    inp = make_inputs(tmp_path / "in", 4)
    out = tmp_path / "out"
    run(str(inp), str(out), none_filter(), opts())
    assert out_rows(out) == 40
    for s in (2, 3):
        (inp / f"p{s}.jsonl").unlink()
    (out / ".keep-me").write_text("a user's dot-file")
    run(str(inp), str(out), none_filter(), opts(force=force))
    assert data_files(out) == ["p0.jsonl", "p1.jsonl"] and out_rows(out) == 20
    assert (out / ".keep-me").read_text() == "a user's dot-file"
    assert [s["path"] for s in read_manifest(out)["shards"]] == ["p0.jsonl", "p1.jsonl"]


def test_shard_size_change_leaves_only_the_new_shards(tmp_path):
    inp = make_inputs(tmp_path / "in", 3)
    out = tmp_path / "out"
    run(str(inp), str(out), none_filter(), opts(shard_size=4))
    assert len(data_files(out)) == 8
    run(str(inp), str(out), none_filter(), opts(shard_size=16))
    assert data_files(out) == ["part-00000.jsonl", "part-00001.jsonl"] and out_rows(out) == 30


def test_deleted_output_shard_is_recreated(tmp_path):
    inp = make_inputs(tmp_path / "in", 2)
    out = tmp_path / "out"
    run(str(inp), str(out), none_filter(), opts())
    first = snapshot(out)
    (out / "p1.jsonl").unlink()
    run(str(inp), str(out), none_filter(), opts())
    assert (out / "p1.jsonl").read_bytes() == first["p1.jsonl"]
    # markers kept elsewhere do not make a deleted OUT look done
    work = tmp_path / "work"
    run(str(inp), str(tmp_path / "o2"), none_filter(), opts(workdir=str(work)))
    import shutil

    shutil.rmtree(tmp_path / "o2")
    run(str(inp), str(tmp_path / "o2"), none_filter(), opts(workdir=str(work)))
    assert out_rows(tmp_path / "o2") == 20


def test_foreign_data_files_are_refused_unless_allowed(tmp_path):
    inp = make_inputs(tmp_path / "in", 1)
    out = tmp_path / "out"
    write_jsonl(out / "theirs.jsonl", docs(3))
    with pytest.raises(RecipeError, match=r"did not write \(theirs.jsonl\).*--allow-foreign"):
        run(str(inp), str(out), none_filter(), opts())
    run(str(inp), str(out), none_filter(), opts(allow_foreign=True))
    assert sorted(data_files(out)) == ["p0.jsonl", "theirs.jsonl"]
    assert len((out / "theirs.jsonl").read_text().splitlines()) == 3
    clash = tmp_path / "o2"
    write_jsonl(clash / "p0.jsonl", docs(2))
    with pytest.raises(RecipeError, match="would overwrite a data file"):
        run(str(inp), str(clash), none_filter(), opts(allow_foreign=True))
    assert len((clash / "p0.jsonl").read_text().splitlines()) == 2


def test_a_tampered_manifest_cannot_delete_outside_out(tmp_path):
    inp = make_inputs(tmp_path / "in", 1)
    out = tmp_path / "out"
    run(str(inp), str(out), none_filter(), opts())
    victim = tmp_path / "victim.jsonl"
    victim.write_text("precious")
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "x.jsonl").write_text("precious")
    (out / "link").symlink_to(tmp_path / "elsewhere")
    m = read_manifest(out)
    m["owned"] += [str(victim), "../victim.jsonl", "link/x.jsonl"]
    (out / ".dcurate" / "manifest.json").write_text(json.dumps(m))
    run(str(inp), str(out), none_filter(), opts(allow_foreign=True))
    assert victim.read_text() == "precious" and (tmp_path / "elsewhere" / "x.jsonl").read_text() == "precious"


def test_an_output_of_the_old_layout_is_adopted(tmp_path):
    inp = make_inputs(tmp_path / "in", 1)
    out = tmp_path / "out"
    write_jsonl(out / "old-shard.jsonl", docs(2))
    (out / "stats.json").write_text("{}")
    (out / "_dcurate").mkdir()
    (out / "_dcurate" / "manifest.json").write_text("{}")
    run(str(inp), str(out), none_filter(), opts())
    assert data_files(out) == ["p0.jsonl"]


def test_rejected_outside_out_and_nothing_of_ours_looks_like_data(tmp_path):
    from dcurate.stages.dedup.stage import Params as DedupParams

    inp = tmp_path / "in"
    recs = docs(20)
    write_jsonl(inp / "a.jsonl", recs + [dict(r, id=r["id"] + "-copy") for r in recs[:5]])
    out = tmp_path / "out"
    run(str(inp), str(out), [("dedup", DedupParams()), ("filter", FilterParams(preset="none"))],
        opts(output_format="parquet", rejected=str(tmp_path / "rej")))
    assert data_files(out) == ["a.parquet"]
    owned = [p for p in out.rglob("*") if p.is_file() and out / "a.parquet" != p]
    assert owned and all(".parquet" not in p.name and ".jsonl" not in p.name for p in owned)
    assert (out / ".dcurate" / "clusters.arrow").exists() and (out / ".dcurate" / "stats.json").exists()


def test_readers_see_the_data_only(tmp_path):
    import random

    from dcurate.stages.dedup.stage import Params as DedupParams

    rng = random.Random(0)
    words = [f"w{i}" for i in range(5000)]
    recs = [{"id": f"d{i}", "text": " ".join(rng.choice(words) for _ in range(60))} for i in range(60)]
    inp = tmp_path / "in"
    for s in range(3):
        write_jsonl(inp / f"p{s}.jsonl", recs[20 * s: 20 * s + 20])
    write_jsonl(inp / "dup.jsonl", [dict(r, id=r["id"] + "-copy") for r in recs[:20]])  # a cluster table
    out = tmp_path / "out"
    run(str(inp), str(out), [("dedup", DedupParams())], opts(output_format="parquet"))
    n = out_rows(out)
    assert n == 60
    import pyarrow.dataset as ds

    assert ds.dataset(str(out), format="parquet").count_rows() == n
    duckdb = pytest.importorskip("duckdb")
    assert duckdb.sql(f"select count(*) from read_parquet('{out}/**/*.parquet')").fetchall()[0][0] == n
    datasets = pytest.importorskip("datasets")
    got = datasets.load_dataset("parquet", data_dir=str(out), split="train", cache_dir=str(tmp_path / "hf"))
    assert got.num_rows == n


# -- 4. nothing on disk can run code --------------------------------------------------------------------


class _Boom:
    def __init__(self, flag):
        self.flag = flag

    def __reduce__(self):
        return (os.system, (f"touch {self.flag}",))


def test_tampered_work_files_never_run_code(tmp_path):
    inp = make_inputs(tmp_path / "in", 3)
    out = tmp_path / "out"
    stages = [(ToyLen, LenParams(min_chars=10)), (ToyTopK, TopParams(k=5)), (ToyLen, LenParams(min_chars=1))]
    run(str(inp), str(out), stages, opts())
    first = tree_digest(out)
    flag = tmp_path / "PWNED"
    payload = pickle.dumps(_Boom(flag))
    tampered = 0
    for p in (out / ".dcurate").rglob("*"):
        if p.is_file() and p.name != "manifest.json":
            p.write_bytes(payload)
            tampered += 1
    assert tampered > 5
    run(str(inp), str(out), stages, opts())
    assert not flag.exists()
    assert tree_digest(out) == first


def test_workfile_round_trip_and_refusals():
    from collections import Counter

    import numpy as np

    from dcurate.runner.plan import StageStats, TaskResult

    value = {"a": [1, 2.5, None, "x"], 3: (np.arange(4), {"s"}), "c": Counter(x=2), "n": np.int64(7),
             "r": TaskResult(stats={0: StageStats(docs_in=3)}, partial=[("k", np.zeros(2))])}
    back = workfile.loads(workfile.dumps(value))
    assert back["a"] == value["a"] and back[3][1] == {"s"} and back["c"] == Counter(x=2) and back["n"] == 7
    assert np.array_equal(back[3][0], np.arange(4)) and back["r"].stats[0].docs_in == 3
    for bad in (pickle.dumps(_Boom("/nonexistent")), b"", b"PK\x03\x04junk", b'{"__dc": "obj", "c": "os.system", "v": {}}'):
        with pytest.raises(workfile.BadWorkFile):
            workfile.loads(bad)
    with pytest.raises(TypeError):
        workfile.dumps(np.array([object()]))


# -- 5. one run per output folder ----------------------------------------------------------------------


def test_lock_refuses_a_second_run_and_takes_over_a_stale_one(tmp_path):
    inp = make_inputs(tmp_path / "in", 1)
    out = tmp_path / "out"
    lock = out / ".dcurate" / "lock"
    lock.parent.mkdir(parents=True)
    live = {"host": socket.gethostname(), "pid": os.getpid(), "started": "2026-01-01T00:00:00Z"}
    lock.write_text(json.dumps(live))
    with pytest.raises(DcurateError, match=rf"in use by another dcurate run \(pid {os.getpid()}"):
        run(str(inp), str(out), none_filter(), opts())
    assert not data_files(out)
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    lock.write_text(json.dumps(dict(live, pid=gone.pid)))
    run(str(inp), str(out), none_filter(), opts())
    assert data_files(out) == ["p0.jsonl"] and not lock.exists()
    # a shared --workdir is locked too
    work = tmp_path / "work"
    work.mkdir()
    (work / ".dcurate-lock").write_text(json.dumps(live))
    with pytest.raises(DcurateError, match="work folder"):
        run(str(inp), str(tmp_path / "o2"), none_filter(), opts(workdir=str(work)))


def test_sweep_removes_only_dcurate_temp_names(tmp_path):
    inp = make_inputs(tmp_path / "in", 1)
    out = tmp_path / "out"
    run(str(inp), str(out), none_filter(), opts())
    (out / ".model.tmp-1234").write_text("not ours")
    (out / ".p0.jsonl.dctmp-999").write_text("ours, from a killed run")
    run(str(inp), str(out), none_filter(), opts())
    assert (out / ".model.tmp-1234").exists() and not (out / ".p0.jsonl.dctmp-999").exists()


# -- verify and clean ----------------------------------------------------------------------------------


def test_verify_exit_codes(tmp_path):
    inp = make_inputs(tmp_path / "in", 2)
    out = tmp_path / "out"
    run(str(inp), str(out), none_filter(), opts())
    r = cli.invoke(app, ["verify", str(out)])
    assert r.exit_code == 0, r.output
    (out / "p1.jsonl").write_bytes((out / "p1.jsonl").read_bytes() + b"\n")  # size changed
    write_jsonl(out / "extra.jsonl", docs(1))
    (out / "p0.jsonl").unlink()
    r = cli.invoke(app, ["verify", str(out)])
    lines = r.output.strip().splitlines()
    assert r.exit_code == 1 and len(lines) == 3, r.output
    assert any("p0.jsonl: missing" in x for x in lines) and any("extra.jsonl: data file" in x for x in lines)
    assert cli.invoke(app, ["verify", str(inp)]).exit_code == 2
    (out / ".dcurate" / "manifest.json").write_text("{nope")
    r = cli.invoke(app, ["verify", str(out)])
    assert r.exit_code == 2 and "manifest" in r.output


def test_verify_checks_checksums_and_row_counts(tmp_path):
    from dcurate.api import verify

    inp = make_inputs(tmp_path / "in", 1)
    out = tmp_path / "out"
    run(str(inp), str(out), none_filter(), opts())
    data = bytearray((out / "p0.jsonl").read_bytes())
    data[10] ^= 1  # same size, different bytes
    (out / "p0.jsonl").write_bytes(bytes(data))
    assert [p for p in verify(str(out)) if "checksum" in p]
    stats = json.loads((out / ".dcurate" / "stats.json").read_text())
    (out / ".dcurate" / "stats.json").write_text(json.dumps(dict(stats, docs_out=99)))
    assert [p for p in verify(str(out)) if "docs_out 99" in p]


def test_clean_drops_work_files_only(tmp_path):
    inp = make_inputs(tmp_path / "in", 2)
    out = tmp_path / "out"
    stages = [(ToyLen, LenParams(min_chars=10)), (ToyTopK, TopParams(k=5)), (ToyLen, LenParams(min_chars=1))]
    run(str(inp), str(out), stages, opts())
    data = tree_digest(out)
    assert (out / ".dcurate" / "work" / "passes").is_dir()
    r = cli.invoke(app, ["clean", str(out)])
    assert r.exit_code == 0, r.output
    assert not (out / ".dcurate" / "work" / "passes").exists() and not (out / ".dcurate" / "work" / "markers").exists()
    assert tree_digest(out) == data
    assert cli.invoke(app, ["verify", str(out)]).exit_code == 0


# -- 3. resume as the README promises ------------------------------------------------------------------


def test_changing_only_the_last_stage_reruns_only_it(tmp_path):
    inp = make_inputs(tmp_path / "in", 3, rows=20)
    out = tmp_path / "out"
    first_calls, last_calls = tmp_path / "c1", tmp_path / "c3"

    def stages(last_min):
        return [(ToyLen, LenParams(min_chars=10, calls_dir=str(first_calls))), (ToyTopK, TopParams(k=30)),
                (ToyLen, LenParams(min_chars=last_min, calls_dir=str(last_calls)))]

    run(str(inp), str(out), stages(1), opts())
    n_first = len((first_calls / "calls.txt").read_text().split())
    assert n_first == 3
    run(str(inp), str(out), stages(60), opts())
    assert len((first_calls / "calls.txt").read_text().split()) == n_first  # the first pass was not redone
    assert len((last_calls / "calls.txt").read_text().split()) == 6
    fresh = tmp_path / "fresh"
    run(str(inp), str(fresh), stages(60), opts())
    assert tree_digest(out) == tree_digest(fresh)
    # work files stay bounded: one set of entries per pass
    for name in ("passes", "stages"):
        assert len(list((out / ".dcurate" / "work" / name).iterdir())) == {"passes": 1, "stages": 3}[name]


def test_changing_a_last_global_stage_reuses_the_pass_before_it(tmp_path):
    inp = make_inputs(tmp_path / "in", 3, rows=20)
    calls = tmp_path / "calls"

    def stages(k):
        return [(ToyLen, LenParams(min_chars=10, calls_dir=str(calls))), (ToyTopK, TopParams(k=k))]

    out = tmp_path / "out"
    run(str(inp), str(out), stages(5), opts())
    run(str(inp), str(out), stages(12), opts())
    assert len((calls / "calls.txt").read_text().split()) == 3  # the filter pass ran once
    run(str(inp), str(tmp_path / "fresh"), stages(12), opts())
    assert tree_digest(out) == tree_digest(tmp_path / "fresh") and out_rows(out) == 12
    run(str(inp), str(out), stages(12), opts())  # a third run still reuses the pass
    assert len((calls / "calls.txt").read_text().split()) == 6  # 3 of them by the fresh run


def test_a_deleted_stage_work_file_is_recomputed(tmp_path):
    inp = make_inputs(tmp_path / "in", 3)
    out = tmp_path / "out"
    stages = [(ToyTopK, TopParams(k=4))]  # scans the input directly: scan tasks of its own
    run(str(inp), str(out), stages, opts())
    first = tree_digest(out)
    work = out / ".dcurate" / "work" / "stages"
    counts = sorted(work.rglob("*.count"))
    assert len(counts) == 3
    counts[1].unlink()
    for p in work.rglob("plan-round*.plan"):
        p.unlink()
    (out / "p1.jsonl").unlink()
    run(str(inp), str(out), stages, opts())
    assert tree_digest(out) == first and counts[1].exists()


# -- fault injection: kill -9 of the driver, then resume == uninterrupted run --------------------------

KILL_GLOBAL = """
import sys, time
sys.path.insert(0, {tests!r})
from toy_stages import ToyLen, LenParams, ToyTopK, TopParams
from dcurate.core.options import RunOptions
from dcurate.runner.driver import run

class SlowTop(ToyTopK):
    name = "slow_topk"
    def scan(self, batches, shard, round, plan):
        time.sleep(0.4)
        return super().scan(batches, shard, round, plan)

if __name__ == "__main__":
    run({inp!r}, {out!r}, [(ToyLen, LenParams(min_chars=10, sleep={sleep})), (SlowTop, TopParams(k=20)),
        (ToyLen, LenParams(min_chars=5))], RunOptions(workers=2, progress=False))
"""


@pytest.mark.slow
@pytest.mark.parametrize("phase,sleep,wait_for", [("pass", 0.3, "pass00-"), ("global", 0.0, "scan-round1")])
def test_kill_9_of_the_driver_then_resume_is_identical(tmp_path, phase, sleep, wait_for):
    inp = make_inputs(tmp_path / "in", 8, rows=15)
    script = tmp_path / "job.py"

    def write(out):
        script.write_text(KILL_GLOBAL.format(tests=str(Path(__file__).parent), inp=str(inp), out=str(out), sleep=sleep))

    out = tmp_path / "k"
    write(out)
    proc = subprocess.Popen([sys.executable, str(script)], start_new_session=True, cwd=ROOT)
    work = out / ".dcurate" / "work"
    while proc.poll() is None and not any(wait_for in str(p) for p in work.rglob("*.done")):
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    subprocess.run([sys.executable, str(script)], check=True, cwd=ROOT)
    clean = tmp_path / "clean"
    write(clean)
    subprocess.run([sys.executable, str(script)], check=True, cwd=ROOT)
    assert tree_digest(out) == tree_digest(clean)
    assert cli.invoke(app, ["verify", str(out)]).exit_code == 0


@pytest.mark.slow
def test_a_second_run_on_a_busy_out_fails_at_once_naming_the_first(tmp_path):
    inp = make_inputs(tmp_path / "in", 4, rows=15)
    out = tmp_path / "out"
    script = tmp_path / "job.py"
    script.write_text(KILL_GLOBAL.format(tests=str(Path(__file__).parent), inp=str(inp), out=str(out), sleep=0.5))
    proc = subprocess.Popen([sys.executable, str(script)], start_new_session=True, cwd=ROOT)
    try:
        lock = out / ".dcurate" / "lock"
        while proc.poll() is None and not lock.exists():
            time.sleep(0.02)
        with pytest.raises(DcurateError, match=rf"pid {proc.pid} on "):
            run(str(inp), str(out), none_filter(), opts())
        assert proc.poll() is None  # the first run goes on
    finally:
        proc.wait()
    assert proc.returncode == 0
    assert cli.invoke(app, ["verify", str(out)]).exit_code == 0


def test_object_store_paths_are_checked_as_key_prefixes(tmp_path, monkeypatch):
    """A URI is never a local path (a folder named 's3:' in the working directory changes nothing),
    and a folder URI means its prefix plus '/'."""
    from dcurate.core import paths

    monkeypatch.chdir(tmp_path)
    (tmp_path / "s3:" / "b" / "in").mkdir(parents=True)  # what an old, URI-unaware run left behind
    with pytest.raises(RecipeError, match="inside the input s3://b/in"):
        paths.check_writes(["s3://b/in"], {"the output": "s3://b/in/out"})
    with pytest.raises(RecipeError, match=r"inside the input s3://b/in/\*.parquet"):
        paths.check_writes(["s3://b/in/*.parquet"], {"the output": "s3://b/in/sub"})
    paths.check_writes(["s3://b/out"], {"the output": "s3://b/out2"})
    paths.check_writes(["s3:/b/in"], {"the output": "s3://b/in/out"})  # a local folder 's3:/b/in'
