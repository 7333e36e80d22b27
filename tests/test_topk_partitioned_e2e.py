"""The partitioned top-k cut-off end to end: select (DSIR, ZIP-FIT), quality keep_top and
perplexity keep_top write byte-identical outputs and the same stage statistics with the
partitioned path forced (DCURATE_TOPK_PARTITIONED=1) and with the in-memory path, with 1 and 2
workers."""

from __future__ import annotations

import hashlib
import random
from pathlib import Path

import pytest
from test_quality import labelled, model, write_shards  # noqa: F401 (fixture)
from test_select import COMMON, COOK, SPORT, _doc, _read, _write_jsonl

from dcurate.api import curate
from dcurate.core import topk_partitioned
from dcurate.stages.perplexity import lm


def _digest(out: Path) -> dict[str, str]:
    """Every data file under OUT (not the run's own .dcurate folder), by content."""
    return {
        str(p.relative_to(out)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(out.rglob("*"))
        if p.is_file() and ".dcurate" not in p.relative_to(out).parts
    }


def _stage_stats(stats: dict) -> list:
    """The stages' own statistics (no timings)."""
    return [{k: v for k, v in s.items() if "time" not in k and "second" not in k} for s in stats["stages"]]


def _both_ways(monkeypatch, tmp_path: Path, name: str, inputs: list[str], stages: list[dict], **kw) -> None:
    runs = {}
    for force in ("0", "1"):
        for workers in (1, 2):
            monkeypatch.setenv(topk_partitioned.ENV, force)
            out = tmp_path / f"{name}-{force}-{workers}"
            stats = curate(inputs, str(out), stages=stages, workers=workers, seed=3, **kw)
            runs[(force, workers)] = (_digest(out), _stage_stats(stats))
    first = runs[("0", 1)]
    assert first[0], "no output written"
    for key, got in runs.items():
        assert got[0] == first[0], f"outputs differ: {key}"
        assert got[1] == first[1], f"stage statistics differ: {key}"


@pytest.fixture
def pool(tmp_path) -> dict:
    rng = random.Random(11)
    rows = []
    for i in range(90):
        vocab = SPORT if i % 3 == 0 else COOK
        n = 20 if i % 9 == 4 else 60 + (i % 5) * 10
        # repeated texts give equal keys (ties at the cut-off, broken by id and input order)
        text = _doc(random.Random(i % 7), vocab, n) if i % 4 == 0 else _doc(rng, vocab + COMMON, n)
        rows.append({"id": None if i % 17 == 5 else f"p{(i * 37) % 90:03d}", "text": text})
    d = tmp_path / "pool"
    d.mkdir()
    for k in range(3):
        _write_jsonl(d / f"part-{k}.jsonl", rows[k * 30 : (k + 1) * 30])
    target = _write_jsonl(tmp_path / "target.jsonl", [{"id": f"t{i}", "text": _doc(rng, SPORT, 80)} for i in range(6)])
    return {"dir": d, "target": target}


def test_select_dsir_k(monkeypatch, tmp_path, pool):
    stages = [{"stage": "select", "target": str(pool["target"]), "method": "dsir", "k": 17, "min_words": 30}]
    _both_ways(monkeypatch, tmp_path, "dsir-k", [str(pool["dir"])], stages)


@pytest.mark.slow
@pytest.mark.parametrize(
    "size",
    [{"fraction": 0.35}, {"tokens": 900}, {"k": 0}, {"k": 1000}, {"k": 20, "noise": False}],
    ids=["fraction", "tokens", "k0", "k-all", "no-noise"],
)
def test_select_dsir_budgets(monkeypatch, tmp_path, pool, size):
    stages = [{"stage": "select", "target": str(pool["target"]), "method": "dsir", "min_words": 30, **size}]
    _both_ways(monkeypatch, tmp_path, "dsir", [str(pool["dir"])], stages)


@pytest.mark.slow
@pytest.mark.parametrize("size", [{"k": 23}, {"fraction": 0.5}, {"tokens": 1500}], ids=["k", "fraction", "tokens"])
def test_select_zipfit(monkeypatch, tmp_path, pool, size):
    stages = [{"stage": "select", "target": str(pool["target"]), "method": "zipfit", "num_targets": 3, **size}]
    _both_ways(monkeypatch, tmp_path, "zipfit", [str(pool["dir"])], stages)


@pytest.mark.slow
def test_quality_keep_top(monkeypatch, tmp_path, model):  # noqa: F811 (fixture)
    t = labelled(120, seed=5)
    t = t.set_column(0, "id", [[None if i % 11 == 3 else f"q{(i * 7) % 120:04d}" for i in range(120)]])
    # duplicated texts: equal scores at the cut-off
    t = t.set_column(1, "text", [[t["text"][i % 40].as_py() for i in range(120)]])
    d = write_shards(tmp_path, t.drop_columns(["label"]), 3)
    for frac in (0.3, 0.5):
        stages = [{"stage": "quality", "model": str(model), "keep_top": frac}]
        _both_ways(monkeypatch, tmp_path, f"quality{frac}", [str(d)], stages)


@pytest.mark.slow
def test_perplexity_keep_top_and_median(monkeypatch, tmp_path):
    train = ["the cat sat on the mat", "a dog and a cat played", "the mat was red and the dog sat"]
    arpa = tmp_path / "lm.arpa"
    lm.write_arpa(lm.train(train, order=3), arpa)
    rng = random.Random(2)
    words = "the cat sat on mat a dog and played red zebra quantum".split()
    texts = [" ".join(rng.choice(words) for _ in range(rng.randint(0, 8))) for _ in range(40)]
    texts = texts + texts[:20]  # ties
    rows = [{"id": f"x{(i * 13) % 60:02d}", "text": t} for i, t in enumerate(texts)]
    d = tmp_path / "ppl"
    d.mkdir()
    for k in range(3):
        _write_jsonl(d / f"part-{k}.jsonl", rows[k * 20 : (k + 1) * 20])
    variants: list[dict] = [
        {"keep_top": 0.4},
        {"keep_top": 1.0},
        {"keep_top": 0.25, "buckets": ["head", "tail"], "percentiles": ["50"]},
        {"buckets": ["head", "middle", "tail"], "percentiles": ["30", "60"]},  # no keep_top
    ]
    for i, extra in enumerate(variants):
        stages = [{"stage": "perplexity", "lm": str(arpa), "backend": "builtin", **extra}]
        _both_ways(monkeypatch, tmp_path, f"ppl{i}", [str(d)], stages)


@pytest.fixture
def tied_pool(tmp_path) -> dict:
    """36 documents, 6 distinct texts (equal keys): every cut-off falls inside a tie group."""
    rng = random.Random(5)
    texts = [_doc(rng, SPORT if j % 2 else COOK, 60 + j) for j in range(6)]
    order = list(range(36))
    rng.shuffle(order)
    rows = [{"id": None if i % 7 == 2 else f"t{(i * 11) % 36:02d}", "text": texts[i % 6]} for i in order]
    d = tmp_path / "tied"
    d.mkdir()
    for k in range(3):
        _write_jsonl(d / f"part-{k}.jsonl", rows[k * 12 : (k + 1) * 12])
    target = _write_jsonl(tmp_path / "tt.jsonl", [{"id": "t", "text": _doc(rng, SPORT, 80)}])
    return {"dir": d, "target": target}


@pytest.mark.slow
@pytest.mark.parametrize(
    "params",
    [
        {"method": "dsir", "noise": False, "k": 8},
        {"method": "dsir", "noise": False, "tokens": 500},
        {"method": "zipfit", "k": 9},
        {"method": "zipfit", "fraction": 0.3},
    ],
    ids=["dsir-k", "dsir-tokens", "zipfit-k", "zipfit-fraction"],
)
def test_select_ties_at_the_cutoff(monkeypatch, tmp_path, tied_pool, params):
    stages = [{"stage": "select", "target": str(tied_pool["target"]), "min_words": 10, **params}]
    _both_ways(monkeypatch, tmp_path, "tied", [str(tied_pool["dir"])], stages)


def test_partitioned_path_is_taken(monkeypatch, tmp_path, pool):
    """The forced path really runs (the in-memory gather is not called)."""
    from dcurate.stages.select.stage import Select

    def boom(self, partials):
        raise AssertionError("gathered in the driver")

    monkeypatch.setattr(Select, "_gather", boom)
    monkeypatch.setenv(topk_partitioned.ENV, "1")
    stages = [{"stage": "select", "target": str(pool["target"]), "method": "dsir", "k": 5, "min_words": 30}]
    curate([str(pool["dir"])], str(tmp_path / "o"), stages=stages, workers=1)
    assert len(_read(tmp_path / "o")) == 5
