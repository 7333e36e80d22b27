"""End-to-end tests of the dedup stage through the runner (dcurate.api.curate) and the CLI."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from dcurate import api  # noqa: E402
from dcurate.stages.dedup.stage import Dedup

SHARED = Path(__file__).resolve().parents[2] / "shared"
DCURATE = str(Path(sys.executable).parent / "dcurate")
needs_shared = pytest.mark.skipif(not SHARED.exists(), reason="needs ../shared")

from test_dedup import doc, edit  # noqa: E402


def write_corpus(folder: Path, n_shards: int = 3) -> list[dict]:
    """Documents with planted duplicates spread over shards (in order: shard 0 rows, shard 1 ...)."""
    base = [doc(i, 150) for i in range(30)]
    recs = []
    for i, t in enumerate(base):
        recs.append({"id": f"orig-{i:02d}", "text": t, "q": float(i % 7)})
    for i in range(0, 30, 3):
        recs.append({"id": f"near-{i:02d}", "text": edit(base[i], i, 0.015), "q": 9.0})
        recs.append({"id": f"copy-{i:02d}", "text": base[i].upper(), "q": 1.0})
    recs.append({"id": "empty", "text": "", "q": 0.0})
    recs.append({"id": "para", "text": "Share this page\n" + doc(500, 40), "q": 0.0})
    recs.append({"id": "para2", "text": doc(501, 40) + "\nshare THIS page", "q": 0.0})
    folder.mkdir(parents=True, exist_ok=True)
    cuts = [round(k * len(recs) / n_shards) for k in range(n_shards + 1)]
    for k in range(n_shards):
        with open(folder / f"part-{k}.jsonl", "w") as f:
            for r in recs[cuts[k] : cuts[k + 1]]:
                f.write(json.dumps(r) + "\n")
    return recs


def tree_digest(out: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(out.rglob("*")):
        rel = p.relative_to(out)
        # data files only: dcurate's own files live under names starting with '_' or '.'
        if p.is_file() and not any(x.startswith(("_", ".")) for x in rel.parts):
            h.update(str(rel).encode() + p.read_bytes())
    return h.hexdigest()


def kept_ids(out: Path) -> list[str]:
    ids = []
    for p in sorted(out.glob("*.jsonl*")):
        ids += [json.loads(line)["id"] for line in p.read_text().splitlines() if line]
    return ids


def clusters(out: Path) -> pa.Table:
    return pa.ipc.open_file(out / ".dcurate" / "clusters.arrow").read_all()


@pytest.mark.slow
def test_minhash_through_the_runner_with_one_and_two_workers(tmp_path):
    write_corpus(tmp_path / "in")
    s1 = api.curate(str(tmp_path / "in"), str(tmp_path / "w1"), [{"stage": "dedup"}], workers=1)
    s2 = api.curate(str(tmp_path / "in"), str(tmp_path / "w2"), [{"stage": "dedup"}], workers=2)
    ids = kept_ids(tmp_path / "w1")
    assert not any(i.startswith(("near-", "copy-")) for i in ids)
    assert len(ids) == 33 and "empty" in ids
    assert tree_digest(tmp_path / "w1") == tree_digest(tmp_path / "w2")
    assert clusters(tmp_path / "w1").equals(clusters(tmp_path / "w2"))
    d1, d2 = (next(x for x in s["stages"] if x["stage"] == "dedup") for s in (s1, s2))
    assert d1["docs_out"] == d2["docs_out"] == 33
    assert d1["removed"] == d2["removed"] and sum(d1["removed"].values()) == d1["docs_in"] - 33


@pytest.mark.slow
def test_resharding_the_input_gives_the_same_clusters(tmp_path):
    write_corpus(tmp_path / "a", n_shards=1)
    write_corpus(tmp_path / "b", n_shards=4)
    for name in ("a", "b"):
        api.curate(
            str(tmp_path / name), str(tmp_path / f"o{name}"), [{"stage": "dedup", "keep": "max:q"}], workers=2
        )
    assert kept_ids(tmp_path / "oa") == kept_ids(tmp_path / "ob")
    assert clusters(tmp_path / "oa").equals(clusters(tmp_path / "ob"))
    # keep max:q: the near-duplicate (q = 9) represents each cluster
    reps = set(clusters(tmp_path / "oa").column("representative").to_pylist())
    assert reps == {f"near-{i:02d}" for i in range(0, 30, 3)}


@pytest.mark.parametrize("phase", ["scan", "reduce", "apply"])
def test_crash_in_each_phase_then_resume_gives_identical_output(tmp_path, monkeypatch, phase):
    write_corpus(tmp_path / "in")
    stages = [{"stage": "dedup", "threshold": 0.7}]
    api.curate(str(tmp_path / "in"), str(tmp_path / "ref"), stages, workers=1)
    original = getattr(Dedup, phase)
    calls = {"n": 0}

    def crashing(self, *args, **kw):
        calls["n"] += 1
        if calls["n"] == 2 or phase == "reduce":
            raise RuntimeError(f"injected crash in {phase}")
        return original(self, *args, **kw)

    monkeypatch.setattr(Dedup, phase, crashing)
    with pytest.raises(RuntimeError, match="injected crash"):
        api.curate(str(tmp_path / "in"), str(tmp_path / "out"), stages, workers=1)
    monkeypatch.setattr(Dedup, phase, original)
    api.curate(str(tmp_path / "in"), str(tmp_path / "out"), stages, workers=1)
    assert tree_digest(tmp_path / "out") == tree_digest(tmp_path / "ref")
    assert clusters(tmp_path / "out").equals(clusters(tmp_path / "ref"))


@pytest.mark.slow
def test_exact_annotate_and_paragraphs_through_the_runner(tmp_path):
    write_corpus(tmp_path / "in")
    api.curate(str(tmp_path / "in"), str(tmp_path / "e"), [{"stage": "dedup", "method": "exact"}], workers=2)
    ids = kept_ids(tmp_path / "e")
    assert "near-00" in ids and "copy-00" not in ids and len(ids) == 43
    api.curate(str(tmp_path / "in"), str(tmp_path / "n"), [{"stage": "dedup", "annotate": True}], workers=2)
    rows = [
        json.loads(line)
        for p in sorted((tmp_path / "n").glob("*.jsonl"))
        for line in p.read_text().splitlines()
    ]
    by_id = {r["id"]: r for r in rows}
    assert len(rows) == 53
    assert (
        by_id["orig-00"]["dup_cluster"] == by_id["near-00"]["dup_cluster"] == by_id["copy-00"]["dup_cluster"]
    )
    assert by_id["orig-00"]["dup_cluster_size"] == 3 and by_id["orig-01"]["dup_cluster"] is None
    api.curate(
        str(tmp_path / "in"), str(tmp_path / "p"), [{"stage": "dedup", "method": "paragraphs"}], workers=2
    )
    rows = [
        json.loads(line)
        for p in sorted((tmp_path / "p").glob("*.jsonl"))
        for line in p.read_text().splitlines()
    ]
    by_id = {r["id"]: r for r in rows}
    assert by_id["para"]["text"].startswith("Share this page\n")
    assert not by_id["para2"]["text"].lower().endswith("share this page")
    assert "copy-00" not in by_id  # every line of an exact (case-changed) copy is a repeat


@pytest.mark.slow
@pytest.mark.skipif(not Path(DCURATE).exists(), reason="dcurate script not installed")
def test_cli_dedup_and_clusters_file(tmp_path):
    write_corpus(tmp_path / "in")
    ref = tmp_path / "ref.jsonl"
    recs = [json.loads(line) for line in (tmp_path / "in" / "part-0.jsonl").read_text().splitlines()]
    ref.write_text(json.dumps({"id": "bench-1", "text": recs[0]["text"]}) + "\n")
    out = tmp_path / "out"
    cmd = [DCURATE, "dedup", str(tmp_path / "in"), str(out), "--against", str(ref)]
    cmd += ["--clusters", str(tmp_path / "c.parquet"), "--workers", "1"]
    r = subprocess.run(cmd, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "bands x" in r.stderr
    ids = kept_ids(out)
    # orig-00 and its near/upper-case copies match the reference; nothing else is removed
    assert sorted(
        set(
            json.loads(line)["id"]
            for p in (tmp_path / "in").glob("*.jsonl")
            for line in p.read_text().splitlines()
        )
        - set(ids)
    ) == ["copy-00", "near-00", "orig-00"]
    t = pq.read_table(tmp_path / "c.parquet")
    assert set(t.column("representative").to_pylist()) == {"bench-1"}
    r = subprocess.run(
        [
            DCURATE,
            "dedup",
            str(tmp_path / "in"),
            str(tmp_path / "x"),
            "--keep",
            "oldest",
        ],
        capture_output=True,
        text=True,
    )
    assert r.returncode != 0 and "keep must be first, longest or max:COLUMN" in r.stderr


@needs_shared
@pytest.mark.shared
@pytest.mark.slow
@pytest.mark.parametrize("threshold, target", [(0.8, 0.97), (0.7, 0.95)])
def test_accuracy_on_the_shared_benchmark(tmp_path, threshold, target):
    gt = SHARED / "corpus" / "dedup"
    out = tmp_path / "out"
    api.curate(str(gt / "docs.jsonl.zst"), str(out), [{"stage": "dedup", "threshold": threshold}], workers=2)
    r = subprocess.run(
        [
            sys.executable,
            str(SHARED / "eval" / "score_dedup.py"),
            "--gt",
            str(gt),
            "--kept",
            str(out),
            "--threshold",
            str(threshold),
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    res = json.loads(r.stdout.strip().splitlines()[-1])
    assert res["f1"] >= target and res["lost_clusters"] == 0 and res["dup_kept_ids"] == 0


def test_standalone_dedup_removes_its_scratch_and_never_uses_tmpdir(tmp_path):
    """Scratch lives under the work folder and is removed after a successful standalone run
    (markers, plans and the cluster table stay); nothing is written to $TMPDIR."""
    import os

    write_corpus(tmp_path / "in")
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    out = tmp_path / "out"
    env = {**os.environ, "TMPDIR": str(tmp)}
    p = subprocess.run([DCURATE, "dedup", str(tmp_path / "in"), str(out), "--workers", "2"], env=env,
                       capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    assert list(tmp.iterdir()) == []
    (stage_dir,) = (out / ".dcurate" / "work" / "stages").iterdir()
    left = sorted(x.name for x in stage_dir.iterdir())
    assert not {"scan", "cand", "candidates", "pairs.npz", "pairs_u.npy", "pairs_v.npy", "ref"} & set(left), left
    assert {"plan-round0.plan", "plan-round1.plan", "scan-round0", "scan-round1"} <= set(left)
    assert any((out / ".dcurate" / "work" / "markers").rglob("*.done"))
    # a second run resumes from the markers and plans alone, with the same output
    before = tree_digest(out)
    p = subprocess.run([DCURATE, "dedup", str(tmp_path / "in"), str(out), "--workers", "1"], env=env,
                       capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    assert tree_digest(out) == before


def test_candidate_storage_layout_does_not_change_results(tmp_path, monkeypatch):
    """Tiny compressed blocks and chunks, and the second scan's per-class storage, give the same
    output and cluster table as the defaults."""
    from dcurate.stages.dedup import stage as dedup_stage
    from dcurate.stages.dedup import store

    write_corpus(tmp_path / "in")
    stages = [{"stage": "dedup", "threshold": 0.7, "keep": "longest"}]
    api.curate(str(tmp_path / "in"), str(tmp_path / "a"), stages, workers=1)
    monkeypatch.setattr(store, "SET_BLOCK", 2)
    monkeypatch.setattr(dedup_stage, "FLUSH_DOCS", 3)
    monkeypatch.setattr(dedup_stage, "VERIFY_SLICE", 2)
    api.curate(str(tmp_path / "in"), str(tmp_path / "b"), stages, workers=1)
    assert tree_digest(tmp_path / "a") == tree_digest(tmp_path / "b")
    assert clusters(tmp_path / "a").equals(clusters(tmp_path / "b"))
    # upper-cased copies have the same shingle set as their original (one class): Jaccard 1 to
    # the original, and the original's Jaccard to any other kept document
    t = clusters(tmp_path / "a").to_pydict()
    j = dict(zip(t["id"], t["jaccard"], strict=True))
    rep = dict(zip(t["id"], t["representative"], strict=True))
    for i in range(0, 30, 3):
        copy, orig = f"copy-{i:02d}", f"orig-{i:02d}"
        assert j[copy] == (1.0 if rep[copy] == orig else j[orig])
