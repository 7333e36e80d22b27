"""scripts/make_demo_corpus.py: deterministic, multi-domain, with planted duplicates and junk."""

from __future__ import annotations

import hashlib
import importlib.util
import io
import json
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import zstandard

from dcurate.core.params import build
from dcurate.core.stage import ShardInfo, StageContext
from dcurate.stages.filter.stage import Filter, FilterParams

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "make_demo_corpus.py"


@pytest.fixture(scope="module")
def demo():
    spec = importlib.util.spec_from_file_location("make_demo_corpus", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def tree(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def read_corpus(root: Path) -> list[dict]:
    rows: list[dict] = []
    for p in sorted((root / "corpus").iterdir()):
        if p.name.endswith(".parquet"):
            rows += pq.read_table(p).to_pylist()
        else:
            data = zstandard.ZstdDecompressor().stream_reader(io.BytesIO(p.read_bytes())).read()
            rows += [json.loads(line) for line in data.decode().splitlines()]
    return rows


@pytest.fixture(scope="module")
def made(demo, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("demo")
    assert demo.main(["--out", str(out), "--docs", "600", "--seed", "0"]) == 0
    return out


@pytest.mark.slow
def test_byte_identical_on_rerun(demo, made: Path, tmp_path: Path) -> None:
    assert demo.main(["--out", str(tmp_path), "--docs", "600", "--seed", "0"]) == 0
    assert tree(tmp_path) == tree(made)
    # rerunning into the same folder replaces the files with the same bytes
    assert demo.main(["--out", str(tmp_path), "--docs", "600", "--seed", "0"]) == 0
    assert tree(tmp_path) == tree(made)
    other = tmp_path / "other"
    demo.main(["--out", str(other), "--docs", "600", "--seed", "1"])
    assert tree(other) != tree(made)


def test_layout_and_schema(made: Path) -> None:
    names = sorted(p.name for p in (made / "corpus").iterdir())
    assert names == [
        "part-00000.jsonl.zst",
        "part-00001.parquet",
        "part-00002.jsonl.zst",
        "part-00003.parquet",
    ]
    assert sorted(p.name for p in (made / "extra").iterdir()) == [
        "planted.json",
        "quality_train.jsonl",
        "target.jsonl",
    ]
    schema = pq.read_schema(made / "corpus" / "part-00001.parquet")
    assert schema.names == ["id", "text", "domain"] and schema.field("text").type == pa.string()
    rows = read_corpus(made)
    assert len(rows) == 600
    assert len({r["id"] for r in rows}) == 600
    assert all(set(r) == {"id", "text", "domain"} and r["text"] for r in rows)


def test_domains_of_unequal_size(made: Path) -> None:
    counts = Counter(r["domain"] for r in read_corpus(made))
    assert set(counts) == {"wiki", "forum", "code", "legal", "short"}
    assert len(set(counts.values())) == len(counts)
    assert counts.most_common(1)[0][0] == "wiki"


def test_planted_duplicates(made: Path, demo) -> None:
    rows = {r["id"]: r for r in read_corpus(made)}
    planted = json.loads((made / "extra" / "planted.json").read_text())
    assert planted["exact_dups"] and planted["near_dups"] and planted["low_quality"]
    for orig, dup in planted["exact_dups"]:
        assert rows[orig]["text"] == rows[dup]["text"] and dup.startswith(orig + "~dup")
    for orig, near, j in planted["near_dups"]:
        a, b = rows[orig]["text"], rows[near]["text"]
        assert a != b and 0.8 <= j <= 0.95
        assert demo.jaccard(demo.shingles(a), demo.shingles(b)) == pytest.approx(j, abs=1e-4)
    kinds = Counter(planted["low_quality"].values())
    assert set(kinds) == set(demo.LQ_KINDS)
    assert all(i in rows for i in planted["low_quality"])


def test_filter_removes_planted_junk(made: Path) -> None:
    rows = read_corpus(made)
    planted = json.loads((made / "extra" / "planted.json").read_text())
    stage = Filter(build(FilterParams, {"preset": "gopher-all"}, "x"), StageContext())
    res = stage.process(pa.RecordBatch.from_pylist(rows), ShardInfo("demo", 0), 0)
    kept = set(res.batch.column("id").to_pylist())
    assert not kept & set(planted["low_quality"])
    wiki = [r["id"] for r in rows if r["domain"] == "wiki" and not r["id"].startswith("lq-")]
    assert sum(i in kept for i in wiki) / len(wiki) > 0.9  # clean prose survives


def test_extra_sets(made: Path) -> None:
    quality = [json.loads(x) for x in (made / "extra" / "quality_train.jsonl").read_text().splitlines()]
    assert Counter(q["label"] for q in quality) == {"hq": 60, "lq": 60}
    target = [json.loads(x) for x in (made / "extra" / "target.jsonl").read_text().splitlines()]
    assert len(target) == 60 and {t["domain"] for t in target} == {"wiki"}
    corpus_texts = {r["text"] for r in read_corpus(made)}
    assert not corpus_texts & {t["text"] for t in target}  # held out


def test_rejects_tiny_corpus(demo, tmp_path: Path) -> None:
    with pytest.raises(SystemExit):
        demo.main(["--out", str(tmp_path), "--docs", "10"])
