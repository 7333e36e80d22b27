"""ZIP-FIT's sampled self-check: about 1 in 1,000 pairs the deflate model scores are also compressed
by zlib, chosen by a seeded hash of (document id, target index); on any mismatch the whole stage is
rescored with zlib, so the output equals a zlib run whenever the model is wrong."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest

from dcurate.api import curate
from dcurate.stages.select import deflate_model
from dcurate.stages.select import zipfit as Z

WORDS = "river valley town bridge mill harvest market church school road field farm forest hill".split()


def _doc(rng: random.Random, n: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(n)) + "."


def _write(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_sample_is_a_pure_function_of_ids_and_seed_at_about_one_in_a_thousand():
    keys = Z.target_keys(500)
    picks = [Z.check_sample(f"doc-{i}", keys, seed=0) for i in range(2000)]
    n = sum(len(p) for p in picks)
    assert 800 < n < 1200  # 1,000,000 pairs / 1,000
    assert all(np.array_equal(Z.check_sample(f"doc-{i}", keys, seed=0), picks[i]) for i in range(0, 2000, 97))
    other = sum(len(Z.check_sample(f"doc-{i}", keys, seed=1)) for i in range(2000))
    assert 800 < other < 1200
    assert any(not np.array_equal(Z.check_sample(f"doc-{i}", keys, seed=1), picks[i]) for i in range(50))


def _faulty(monkeypatch) -> None:
    """A deflate model that is wrong on every pair (by an amount that depends on the document)."""
    real = deflate_model.PreparedTargets.sizes

    def sizes(self, x: bytes) -> np.ndarray:
        out = real(self, x)
        return np.where(out >= 0, out + 1 + (len(x) * 7919) % 97, out)

    monkeypatch.setattr(deflate_model.PreparedTargets, "sizes", sizes)


def test_target_set_counts_checked_pairs_and_mismatches(monkeypatch):
    if not deflate_model.self_check():
        pytest.skip("the deflate model does not match this zlib (zlib is used throughout)")
    rng = random.Random(3)
    targets = [_doc(rng, 80) for _ in range(60)]
    pool = [_doc(rng, 60) for _ in range(200)]
    ids = [f"p{i}" for i in range(200)]
    ts = Z.TargetSet(targets)
    exact = ts.scores(pool, ids)
    assert ts.checked > 0 and ts.mismatched == 0
    assert np.array_equal(exact, Z.TargetSet(targets, engine="zlib").scores(pool))
    _faulty(monkeypatch)
    bad = Z.TargetSet(targets)
    bad.scores(pool, ids)
    assert bad.checked == ts.checked and bad.mismatched == bad.checked


def test_a_faulty_model_is_caught_and_the_stage_rescored_with_zlib(tmp_path, monkeypatch):
    if not deflate_model.self_check():
        pytest.skip("the deflate model does not match this zlib (zlib is used throughout)")
    rng = random.Random(11)
    pool = _write(tmp_path / "pool.jsonl", [{"id": f"p{i:04d}", "text": _doc(rng, rng.randint(20, 120))}
                                            for i in range(400)])
    target = _write(tmp_path / "target.jsonl", [{"id": f"t{i}", "text": _doc(rng, 100)} for i in range(40)])

    def select(out: str, engine: str = "auto", workers: int = 1) -> tuple[dict, str]:
        stats = curate(str(pool), str(tmp_path / out), workers=workers,
                       stages=[{"stage": "select", "method": "zipfit", "target": str(target), "k": 100,
                                "num_targets": None, "gzip_engine": engine}])
        return stats, (tmp_path / out / "pool.jsonl").read_text()

    _, want = select("zlib", engine="zlib")
    stats, good = select("model")
    assert good == want
    assert stats["stages"][0]["deflate_check"]["checked_pairs"] > 0
    assert stats["stages"][0]["deflate_check"]["mismatches"] == 0
    stats2, good2 = select("model2", workers=2)  # the same sample whatever the workers
    assert good2 == want and stats2["stages"][0]["deflate_check"] == stats["stages"][0]["deflate_check"]
    _faulty(monkeypatch)
    monkeypatch.setattr(Z, "CHECK_EVERY", 10**12)  # no sample: the fault goes unnoticed ...
    _, unnoticed = select("unchecked")
    assert unnoticed != want  # ... and changes the output (so this test can fail)
    monkeypatch.setattr(Z, "CHECK_EVERY", 1000)
    stats, caught = select("caught")
    assert caught == want
    check = stats["stages"][0]["deflate_check"]
    assert check["mismatches"] == check["checked_pairs"] > 0 and check["rescored_with_zlib"]
