"""Model-like files and trained outputs on object storage (a local moto S3 server on 127.0.0.1):
fastText models, ARPA LMs and mix-fit tables read from s3:// through a local cache fetched once,
train-quality / train-lm / mix-fit writing --out to s3:// atomically, and resume keyed on the
object's version."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow.parquet as pq
import pytest
from test_quality import labelled
from test_remote_run import _files, write_corpus
from test_storage import s3_env  # noqa: F401 (fixture)

from dcurate.io import storage as S

pytestmark = pytest.mark.s3


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("DCURATE_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def _fetched(cache: Path) -> list[Path]:
    return sorted(p for p in (cache / "fetched").rglob("*") if p.is_file() and not p.name.startswith(".")) \
        if cache.exists() else []


def test_local_copy_fetches_once_per_object_version(s3_env, cache):  # noqa: F811
    S.write_bytes("s3://bkt/lc/model.bin", b"version one")
    first = S.local_copy("s3://bkt/lc/model.bin")
    assert Path(first).read_bytes() == b"version one" and first.endswith("/model.bin")
    os.utime(first, (1, 1))  # a second call must not write it again
    assert S.local_copy("s3://bkt/lc/model.bin") == first and os.stat(first).st_mtime == 1
    assert S.stamp("s3://bkt/lc/model.bin")[0] == len(b"version one")
    S.write_bytes("s3://bkt/lc/model.bin", b"version two!")  # a new version of the key: a new copy
    second = S.local_copy("s3://bkt/lc/model.bin")
    assert second != first and Path(second).read_bytes() == b"version two!"
    assert S.stamp("s3://bkt/lc/none.bin") is None
    with pytest.raises(S.StorageError, match=r"^s3://bkt/lc/none.bin: no such file or object$"):
        S.local_copy("s3://bkt/lc/none.bin")
    from dcurate.core.errors import ModelError

    with pytest.raises(ModelError, match=r"^s3://bkt/lc/model.bin: bad$"):  # errors name the URI
        with S.fetched("s3://bkt/lc/model.bin") as local:
            raise ModelError(f"{local}: bad")


def test_local_target_publishes_on_success_only(s3_env, tmp_path):  # noqa: F811
    with S.local_target("s3://bkt/lt/m.bin") as local:
        Path(local).write_bytes(b"model")
        Path(local + ".json").write_text("{}")
    assert S.list_files("s3://bkt/lt") == ["s3://bkt/lt/m.bin", "s3://bkt/lt/m.bin.json"]
    assert S.read_bytes("s3://bkt/lt/m.bin") == b"model" and not os.path.exists(local)
    with pytest.raises(RuntimeError):
        with S.local_target("s3://bkt/lt/n.bin") as local:
            Path(local).write_bytes(b"half")
            raise RuntimeError("training failed")
    assert not S.exists("s3://bkt/lt/n.bin")
    with S.local_target(str(tmp_path / "x.bin")) as local:  # local: the path itself
        assert local == str(tmp_path / "x.bin")


def test_train_lm_and_mix_fit_to_s3_from_s3(s3_env, tmp_path, cache):  # noqa: F811
    from dcurate.stages.mix.fit import mix_fit
    from dcurate.stages.perplexity import lm as ngram_lm
    from dcurate.stages.perplexity.stage import train_lm

    write_corpus(tmp_path / "ref", n_shards=1, n=30)
    S.write_bytes("s3://bkt/tl/ref.jsonl", (tmp_path / "ref/part-0.jsonl").read_bytes())
    remote = train_lm(["s3://bkt/tl/ref.jsonl"], "s3://bkt/tl/lm.arpa", order=3)
    local = train_lm([str(tmp_path / "ref/part-0.jsonl")], str(tmp_path / "lm.arpa"), order=3)
    assert S.read_bytes("s3://bkt/tl/lm.arpa") == (tmp_path / "lm.arpa").read_bytes()
    assert remote["counts"] == local["counts"]
    assert ngram_lm.read_sidecar("s3://bkt/tl/lm.arpa")["counts"] == local["counts"]
    # mix-fit: runs from the store, weights to the store
    rng = np.random.default_rng(0)
    X = rng.dirichlet(np.ones(3), size=40)
    runs = pl.DataFrame({"a": X[:, 0], "b": X[:, 1], "c": X[:, 2], "loss": (X[:, 0] - 0.5) ** 2 + X[:, 1]})
    runs.write_csv(tmp_path / "runs.csv")
    S.write_bytes("s3://bkt/tl/runs.csv", (tmp_path / "runs.csv").read_bytes())
    kw = dict(target="loss", trees=20, learning_rate=0.1, samples=300, top=8, say=lambda _: None)
    res = mix_fit("s3://bkt/tl/runs.csv", out="s3://bkt/tl/w.yaml", **kw)
    mix_fit(str(tmp_path / "runs.csv"), out=str(tmp_path / "w.yaml"), **kw)
    assert res["out"] == "s3://bkt/tl/w.yaml"
    assert S.read_bytes("s3://bkt/tl/w.yaml") == (tmp_path / "w.yaml").read_bytes()
    with pytest.raises(Exception, match=r"s3://bkt/tl/none.csv: no such file"):
        mix_fit("s3://bkt/tl/none.csv", out=str(tmp_path / "w2.yaml"), **kw)


def _dcurate(*args: str, env: dict) -> subprocess.CompletedProcess:
    r = subprocess.run([sys.executable, "-m", "dcurate", *args], capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stderr[-2000:]
    return r


@pytest.mark.slow
def test_quality_and_perplexity_with_models_on_s3_equal_local_models(s3_env, tmp_path):  # noqa: F811
    env = dict(os.environ, DCURATE_CACHE=str(tmp_path / "cache"))
    pq.write_table(labelled(300), tmp_path / "train.parquet")
    S.write_bytes("s3://bkt/qm/train.parquet", (tmp_path / "train.parquet").read_bytes())
    fast = ["--epoch", "20", "--dim", "16", "--bucket", "5000", "--lr", "0.2", "--label-field", "label"]
    _dcurate("train-quality", "--input", "s3://bkt/qm/train.parquet", "--out", "s3://bkt/qm/q.bin", *fast, env=env)
    _dcurate("train-quality", "--input", str(tmp_path / "train.parquet"), "--out", str(tmp_path / "q.bin"), *fast,
             env=env)
    assert S.read_bytes("s3://bkt/qm/q.bin") == (tmp_path / "q.bin").read_bytes()  # threads 1: deterministic
    side = json.loads(S.read_bytes("s3://bkt/qm/q.bin.json"))
    assert side["model"] == "q.bin" and side["threshold"] == json.loads((tmp_path / "q.bin.json").read_text())[
        "threshold"]
    pq.write_table(labelled(120, seed=5, prefix="e"), tmp_path / "eval.parquet")
    inp = str(tmp_path / "eval.parquet")
    q = ["--label", "__label__hq", "--threshold", "auto", "--workers", "2"]
    _dcurate("quality", inp, str(tmp_path / "ql"), "--model", str(tmp_path / "q.bin"), *q, env=env)
    _dcurate("quality", inp, str(tmp_path / "qs"), "--model", "s3://bkt/qm/q.bin", *q, env=env)
    assert _files(str(tmp_path / "qs")) == _files(str(tmp_path / "ql"))
    cached = _fetched(tmp_path / "cache")
    assert [p.name for p in cached] == ["q.bin"]  # fetched once for the driver and both workers
    inode = cached[0].stat().st_ino
    _dcurate("quality", inp, str(tmp_path / "qs"), "--model", "s3://bkt/qm/q.bin", *q, "--force", env=env)
    assert _fetched(tmp_path / "cache") == cached and cached[0].stat().st_ino == inode  # reused by a later run
    # a new version of the model object: the run is not resumed, it scores with the new model
    _dcurate("train-quality", "--input", str(tmp_path / "train.parquet"), "--out", str(tmp_path / "q2.bin"), *fast,
             "--seed", "3", "--holdout", "0.3", env=env)
    _dcurate("quality", inp, str(tmp_path / "ql2"), "--model", str(tmp_path / "q2.bin"), *q, env=env)
    assert _files(str(tmp_path / "ql2")) != _files(str(tmp_path / "ql"))
    S.write_bytes("s3://bkt/qm/q.bin", (tmp_path / "q2.bin").read_bytes())
    S.write_bytes("s3://bkt/qm/q.bin.json", (tmp_path / "q2.bin.json").read_bytes())
    _dcurate("quality", inp, str(tmp_path / "qs"), "--model", "s3://bkt/qm/q.bin", *q, env=env)
    assert _files(str(tmp_path / "qs")) == _files(str(tmp_path / "ql2"))
    # perplexity with an ARPA LM trained to the store (builtin scorer and KenLM)
    write_corpus(tmp_path / "ref", n_shards=1, n=40)
    _dcurate("train-lm", "--input", str(tmp_path / "ref"), "--order", "3", "--out", "s3://bkt/qm/lm.arpa", env=env)
    _dcurate("train-lm", "--input", str(tmp_path / "ref"), "--order", "3", "--out", str(tmp_path / "lm.arpa"), env=env)
    for backend in ("builtin", "kenlm"):
        p = ["--backend", backend, "--workers", "2"]
        _dcurate("perplexity", str(tmp_path / "ref"), str(tmp_path / f"pl-{backend}"), "--lm", str(tmp_path / "lm.arpa"),
                 *p, env=env)
        _dcurate("perplexity", str(tmp_path / "ref"), str(tmp_path / f"ps-{backend}"), "--lm", "s3://bkt/qm/lm.arpa",
                 *p, env=env)
        assert _files(str(tmp_path / f"ps-{backend}")) == _files(str(tmp_path / f"pl-{backend}"))
    r = subprocess.run([sys.executable, "-m", "dcurate", "perplexity", str(tmp_path / "ref"), str(tmp_path / "px"),
                        "--lm", "s3://bkt/qm/none.arpa"], capture_output=True, text=True, env=env)
    assert r.returncode == 1 and "s3://bkt/qm/none.arpa" in r.stderr and "Traceback" not in r.stderr, r.stderr


def test_dedup_clusters_file_to_s3(s3_env, tmp_path):  # noqa: F811
    write_corpus(tmp_path / "in", n_shards=2, n=40)
    env = dict(os.environ)
    for dest in (str(tmp_path / "c.parquet"), "s3://bkt/dc/c.parquet"):
        out = str(tmp_path / ("o-local" if dest.startswith("/") else "o-s3"))
        _dcurate("dedup", str(tmp_path / "in"), out, "--clusters", dest, "--workers", "1", env=env)
    assert S.read_bytes("s3://bkt/dc/c.parquet") == (tmp_path / "c.parquet").read_bytes()
    assert pq.read_table(tmp_path / "c.parquet").num_rows > 0
    assert not (tmp_path / "s3:").exists() and not Path("s3:").exists()  # never a local 's3:' folder
