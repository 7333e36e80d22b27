"""Runs with inputs, targets, OUT and the work folder on a local S3-compatible server (moto on
127.0.0.1) give the same shards as the run on local files, also after kill -9 and resume."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from test_storage import s3_env  # noqa: F401 (fixture)

from dcurate.io import storage as S

pytestmark = pytest.mark.s3


_WORDS = ("the of and to in is that it was for on are with as his they be at one have this from or had by "
          "river stone garden market winter summer music church bridge village forest mountain letter "
          "teacher doctor kitchen window morning evening history science animal island harbor engine "
          "painting library station festival journey lantern meadow orchard valley thunder").split()


def write_corpus(folder: Path, n_shards: int = 3, n: int = 90) -> None:
    """English-like documents, every fifth one a near copy of an earlier one."""
    rng = random.Random(7)
    texts: list[str] = []
    for i in range(n):
        if i % 5 == 4:
            words = texts[i - 3].split()
            words[len(words) // 2] = "lantern"
            texts.append(" ".join(words))
            continue
        sents = [" ".join(rng.choice(_WORDS) for _ in range(rng.randint(8, 14))).capitalize() + "."
                 for _ in range(rng.randint(6, 10))]
        texts.append(" ".join(sents))
    folder.mkdir(parents=True, exist_ok=True)
    for k in range(n_shards):
        with open(folder / f"part-{k}.jsonl", "w") as f:
            for i in range(k, n, n_shards):
                f.write(json.dumps({"id": f"d{i:03d}", "text": texts[i]}) + "\n")


def _recipe(tmp: Path, name: str, inp: str, out: str, work: str | None, target: str, executor: str = "local") -> Path:
    lines = [f"input: {inp}", f"output: {out}", f"executor: {executor}", "workers: 2", "seed: 0"]
    if work:
        lines.append(f"workdir: {work}")
    lines += ["stages:", "  - stage: filter", "  - stage: dedup", "  - stage: select",
              "    method: dsir", f"    target: {target}", "    k: 25"]
    p = tmp / f"{name}.yaml"
    p.write_text("\n".join(lines) + "\n")
    return p


def _dcurate(*args: str, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "dcurate", *args], capture_output=True, text=True, **kw)


def _files(root: str) -> dict[str, bytes]:
    """Data files under a folder (local or URI) by relative name, dcurate's own files left out."""
    prefix = root.rstrip("/") + "/"
    out = {}
    for f in S.list_files(root):
        rel = f[len(prefix):] if f.startswith(prefix) else os.path.relpath(f, root)
        if not any(part.startswith((".", "_")) for part in rel.split("/")):
            out[rel] = S.read_bytes(f)
    return out


@pytest.fixture
def staged(s3_env, tmp_path):  # noqa: F811
    """The corpus and a target set, locally and on the server."""
    write_corpus(tmp_path / "in")
    target = tmp_path / "target.jsonl"
    target.write_text("".join(json.dumps({"id": f"t{i}", "text": f"The river and the stone bridge in the valley {i}. "
                                          "It was a winter morning at the harbor."}) + "\n" for i in range(20)))
    S.remove_tree("s3://bkt/rr")
    for p in sorted((tmp_path / "in").iterdir()):
        S.write_bytes(f"s3://bkt/rr/in/{p.name}", p.read_bytes())
    S.write_bytes("s3://bkt/rr/target.jsonl", target.read_bytes())
    env = dict(os.environ, DCURATE_STAGING=str(tmp_path / "staging"))
    r = _dcurate("run", str(_recipe(tmp_path, "local", str(tmp_path / "in"), str(tmp_path / "out"), None,
                                    str(target))), env=env)
    assert r.returncode == 0, r.stderr[-2000:]
    local = _files(str(tmp_path / "out"))
    assert local and all(local.values())
    return tmp_path, env, local


def test_inputs_out_and_workdir_on_s3_equal_the_local_run(staged):
    tmp, env, local = staged
    rec = _recipe(tmp, "s3", "s3://bkt/rr/in", "s3://bkt/rr/out", "s3://bkt/rr/work", "s3://bkt/rr/target.jsonl")
    rec.write_text(rec.read_text().replace("workers: 2", "workers: 2\nrejected: s3://bkt/rr/rej"))
    r = _dcurate("run", str(rec), env=env)
    assert r.returncode == 0, r.stderr[-2000:]
    assert _files("s3://bkt/rr/out") == local
    rejected = _files("s3://bkt/rr/rej")  # --rejected on the store: the documents each stage removed
    assert any(k.startswith("01-dedup") for k in rejected) and any(k.startswith("02-select") for k in rejected)
    names = S.list_files("s3://bkt/rr/out")
    assert "s3://bkt/rr/out/.dcurate/manifest.json" in names and "s3://bkt/rr/out/.dcurate/lock" not in names
    assert any(n.endswith(".done") for n in S.list_files("s3://bkt/rr/work"))
    staging = tmp / "staging" / "dcurate-staging"
    assert not staging.exists() or not any(staging.iterdir())  # the staging folders are removed
    # a second run resumes everything from the store and changes nothing
    r = _dcurate("run", str(rec), env=env)
    assert r.returncode == 0, r.stderr[-2000:]
    assert _files("s3://bkt/rr/out") == local
    v = _dcurate("verify", "s3://bkt/rr/out", env=env)
    assert v.returncode == 0, v.stdout + v.stderr
    # the lock is a conditional create: a held lock refuses a second run
    S.write_bytes("s3://bkt/rr/out/.dcurate/lock", json.dumps({"host": "elsewhere", "pid": 1}).encode())
    r = _dcurate("run", str(rec), env=env)
    assert r.returncode == 1 and "in use by another dcurate run" in r.stderr
    S.remove("s3://bkt/rr/out/.dcurate/lock")


def test_output_on_s3_with_local_workdir_and_stale_shards_removed(staged):
    tmp, env, local = staged
    S.write_bytes("s3://bkt/rr/out3/keep.txt", b"not data")
    rec = _recipe(tmp, "s3w", "s3://bkt/rr/in", "s3://bkt/rr/out3", str(tmp / "work3"), "s3://bkt/rr/target.jsonl")
    r = _dcurate("run", str(rec), env=env)
    assert r.returncode == 2 and "s3://bkt/rr/out3 holds data files dcurate did not write (keep.txt)" in r.stderr
    rec.write_text(rec.read_text().replace("workers: 2", "workers: 2\nallow_foreign: true"))
    r = _dcurate("run", str(rec), env=env)
    assert r.returncode == 0, r.stderr[-2000:]
    assert _files("s3://bkt/rr/out3") == dict(local, **{"keep.txt": b"not data"})
    assert not S.exists("s3://bkt/rr/out3x")  # a folder URI is its prefix plus '/'
    # a changed recipe replaces the earlier run's shards on the store (stale ones are deleted)
    rec.write_text(rec.read_text().replace("workers: 2", "workers: 2\noutput_format: parquet"))
    r = _dcurate("run", str(rec), env=env)
    assert r.returncode == 0, r.stderr[-2000:]
    assert sorted(_files("s3://bkt/rr/out3")) == sorted([k.replace(".jsonl", ".parquet") for k in local] + ["keep.txt"])
    assert _dcurate("verify", "s3://bkt/rr/out3", env=env).returncode == 0


def test_s3_glob_input_and_target_with_local_output(staged):
    tmp, env, local = staged
    rec = _recipe(tmp, "glob", "s3://bkt/rr/in/part-*.jsonl", str(tmp / "out4"), None, "s3://bkt/rr/target.jsonl")
    dry = _dcurate("run", str(rec), "--dry-run", env=env)
    assert dry.returncode == 0 and "3 shard(s), jsonl" in dry.stdout, dry.stdout + dry.stderr
    r = _dcurate("run", str(rec), env=env)
    assert r.returncode == 0, r.stderr[-2000:]
    assert _files(str(tmp / "out4")) == local
    bad = _recipe(tmp, "bad", "s3://bkt/rr/nothing/*.jsonl", str(tmp / "out5"), None, "s3://bkt/rr/target.jsonl")
    r = _dcurate("run", str(bad), env=env)
    assert r.returncode == 1 and "s3://bkt/rr/nothing/*.jsonl: the glob matches no file" in r.stderr


@pytest.mark.slow
@pytest.mark.parametrize("after", [1, 7])  # markers on the store before the kill: first pass, later phase
def test_kill_9_then_resume_on_s3_equals_the_local_run(staged, after):
    tmp, env, local = staged
    rec = _recipe(tmp, "s3k", "s3://bkt/rr/in", "s3://bkt/rr/out2", "s3://bkt/rr/work2", "s3://bkt/rr/target.jsonl")
    p = subprocess.Popen([sys.executable, "-m", "dcurate", "run", str(rec)], env=env,
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        t0 = time.monotonic()
        while sum(n.endswith(".done") for n in S.list_files("s3://bkt/rr/work2")) < after and p.poll() is None:
            assert time.monotonic() - t0 < 300
            time.sleep(0.05)
    finally:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
        p.wait()
    assert p.returncode == -signal.SIGKILL  # killed mid-run, not finished
    r = _dcurate("run", str(rec), env=env)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "already complete (resumed)" in r.stderr
    assert _files("s3://bkt/rr/out2") == local


def test_mirror_publishes_data_before_markers_and_mirrors_deletions(tmp_path, monkeypatch):
    from dcurate.runner import remote

    store, staging = tmp_path / "store", tmp_path / "staging"
    (store / "old").mkdir(parents=True)
    (store / "old" / "gone.parquet").write_bytes(b"old")
    (store / "lock").write_bytes(b"someone's lock")
    m = remote.Mirror(str(store), staging)
    assert m.pull() == 1 and (staging / "old" / "gone.parquet").read_bytes() == b"old"
    assert not (staging / "lock").exists()  # locks are never copied
    order: list[str] = []
    real = remote.storage.publish

    def publish(path, *a, **kw):
        order.append(os.path.relpath(path, store))
        return real(path, *a, **kw)

    monkeypatch.setattr(remote.storage, "publish", publish)
    for rel, data in {".dcurate/manifest.json": b"{}", ".dcurate/stats.json": b"{}", "markers/p/0.done": b"m",
                      "stages/s/plan-round0.plan": b"p", "stages/s/x.npy": b"x", "part-0.parquet": b"d",
                      "stages/s/.y.npy.dctmp-7": b"t", "stages/s/z.tmp.npy": b"t"}.items():
        (staging / rel).parent.mkdir(parents=True, exist_ok=True)
        (staging / rel).write_bytes(data)
    (staging / "old" / "gone.parquet").unlink()
    m.sync(under=staging / "stages")  # what a finished task wrote besides its outputs: work files only
    assert order == ["stages/s/x.npy"]
    m.sync()
    assert order[1:] == ["part-0.parquet", "markers/p/0.done", "stages/s/plan-round0.plan", ".dcurate/stats.json",
                         ".dcurate/manifest.json"]
    assert not (store / "old" / "gone.parquet").exists() and (store / "lock").exists()
    assert not (store / "stages" / "s" / "z.tmp.npy").exists()
    m.sync()
    assert len(order) == 6  # nothing changed, nothing published
