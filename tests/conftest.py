import gzip
import json
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import zstandard

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
sys.path.insert(0, str(Path(__file__).parent))


def write_jsonl(path: Path, records: list[dict], fmt: str | None = None) -> Path:
    data = b"".join(json.dumps(r).encode() + b"\n" for r in records)
    path.parent.mkdir(parents=True, exist_ok=True)
    name = path.name
    if name.endswith(".zst"):
        data = zstandard.ZstdCompressor(level=3).compress(data)
    elif name.endswith(".gz"):
        data = gzip.compress(data, mtime=0)
    path.write_bytes(data)
    return path


def write_parquet(path: Path, records: list[dict], row_group_size: int | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(records), path, row_group_size=row_group_size)
    return path


def docs(n: int, prefix: str = "d", start: int = 0) -> list[dict]:
    words = "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu".split()
    out = []
    for i in range(start, start + n):
        text = " ".join(words[(i * 7 + j) % len(words)] for j in range(5 + (i * 13) % 40))
        out.append({"id": f"{prefix}{i:05d}", "text": text, "domain": ["a", "b", "c"][i % 3], "score": i / 10})
    return out


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    """A small corpus in every supported format (one shard each)."""
    d = tmp_path / "in"
    write_jsonl(d / "s0.jsonl", docs(40, "a"))
    write_jsonl(d / "s1.jsonl.gz", docs(30, "b"))
    write_jsonl(d / "s2.jsonl.zst", docs(50, "c"))
    write_parquet(d / "s3.parquet", docs(60, "d"), row_group_size=16)
    return d


def tree_digest(path: Path) -> dict[str, bytes]:
    """Contents of every output shard (skipping names starting with '_' or '.')."""
    out = {}
    for p in sorted(Path(path).rglob("*")):
        rel = p.relative_to(path)
        if any(part.startswith(("_", ".")) for part in rel.parts) or not p.is_file() or p.name == "stats.json":
            continue
        out[str(rel)] = p.read_bytes()
    return out


needs_shared = pytest.mark.skipif(not SHARED.exists(), reason="needs ../shared")


@pytest.fixture(autouse=True)
def _no_run_report(request, monkeypatch):
    """Runs inside tests skip the end-of-run HTML report (seconds of chart drawing each) unless the
    test is marked ``report``; tests/test_report.py covers it."""
    if request.node.get_closest_marker("report") is None:
        monkeypatch.setattr("dcurate.report.html.report_after_run", lambda out, shown=None: None)
