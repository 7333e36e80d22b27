"""URIs beyond s3://: gs:// and hf:// resolve to their file systems (construction only, no
network), and any fsspec protocol serves every read end to end (a test protocol, ``dctest://``,
backed by a local folder and registered through fsspec's entry point, as a plugin would be)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pyarrow.fs as pafs
import pytest
from test_remote_run import _files, write_corpus

from dcurate.core.errors import RecipeError
from dcurate.core.paths import check_writes
from dcurate.io import storage as S

TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent

pytest.importorskip("fsspec")


@pytest.fixture
def dctest(tmp_path, monkeypatch):
    """The ``dctest`` protocol registered in this process, its root folder, and its options."""
    import fsspec

    monkeypatch.syspath_prepend(str(TESTS))
    fsspec.register_implementation("dctest", "fsspec_testfs.FolderBackedFS", clobber=True)
    root = tmp_path / "store"
    root.mkdir()
    S._fsspec.cache_clear()
    yield root, {"dctest": {"root": str(root)}}
    S._fsspec.cache_clear()


# .. resolution ....................................................................................

def test_gs_uri_resolves_to_pyarrow_gcs_with_its_options():
    opts = {"gs": {"anonymous": True, "endpoint_override": "127.0.0.1:9", "scheme": "http"}}
    fs, inner = S.filesystem("gs://bucket/some/prefix/", opts)
    assert isinstance(fs, pafs.GcsFileSystem) and inner == "bucket/some/prefix"
    fs2, inner2 = S.filesystem("gcs://bucket/x.parquet", opts)  # gcs:// is an alias with the same options
    assert fs2 is fs and inner2 == "bucket/x.parquet"
    with pytest.raises(S.StorageError, match="storage_options for gs://.*bogus"):
        S.filesystem("gs://bucket/x", {"gs": {"bogus": 1}})
    with pytest.raises(S.StorageError, match="no bucket"):
        S.filesystem("gs:///x", opts)
    assert S._uri("gs://bucket/some", "bucket/some/a.jsonl", "bucket/some") == "gs://bucket/some/a.jsonl"


def test_hf_uri_resolves_through_fsspec_with_its_options():
    pytest.importorskip("huggingface_hub")
    from huggingface_hub import HfFileSystem

    fs, inner = S.filesystem("hf://datasets/org/name/data/train.parquet", {"hf": {"token": False}})
    assert isinstance(fs, pafs.PyFileSystem) and inner == "datasets/org/name/data/train.parquet"
    assert isinstance(fs.handler.fs, HfFileSystem)
    assert S._uri("hf://datasets/org/name", "datasets/org/name/data/a.parquet", "datasets/org/name") == \
        "hf://datasets/org/name/data/a.parquet"


def test_missing_fsspec_package_and_unknown_scheme_are_one_line(monkeypatch):
    import fsspec

    def no_hf(name):
        raise ImportError("No module named 'huggingface_hub'")

    monkeypatch.setattr(fsspec, "get_filesystem_class", no_hf)
    S._fsspec.cache_clear()
    with pytest.raises(S.StorageError, match=r"^reading hf:// needs huggingface_hub: pip install huggingface_hub$"):
        S.filesystem("hf://datasets/org/name/x.parquet")
    monkeypatch.undo()
    S._fsspec.cache_clear()
    with pytest.raises(S.StorageError, match="unsupported storage scheme 'nosuchproto://'"):
        S.filesystem("nosuchproto://a/b")


def test_storage_options_take_a_mapping_per_scheme():
    assert S.resolve_options({"gs": {"anonymous": True}, "region": "eu-west-1"})["gs"] == {"anonymous": True}
    with pytest.raises(S.StorageError, match="unknown key.*anonymous"):
        S.resolve_options({"anonymous": True})  # a gs option at the top level is a typo
    with pytest.raises(S.StorageError, match="unknown key.*s3.*for s3://, at the top level"):
        S.resolve_options({"s3": {"region": "eu-west-1"}})  # S3's options are the top-level keys


def test_only_local_and_s3_are_writable():
    for uri in ("gs://b/out", "hf://datasets/o/n/out", "memory://x/out"):
        assert not S.writable(uri)
        with pytest.raises(S.StorageError, match=r"read-only"):
            S.write_bytes(f"{uri}/f.txt", b"x")
        with pytest.raises(S.StorageError, match=r"read-only"):
            S.create_exclusive(f"{uri}/lock", b"x")
        with pytest.raises(RecipeError, match=rf"refusing to write the output {uri}: .* local paths or s3://"):
            check_writes([], {"the output": uri})
    assert S.writable("s3://b/out") and S.writable("/tmp/out") and S.writable("file:///tmp/out")


def test_path_safety_treats_fsspec_uris_as_key_prefixes():
    check_writes(["hf://datasets/o/n/in"], {"the output": "/tmp/hf:/datasets/o/n/in"})  # a local path
    check_writes(["gs://b/in"], {"the output": "s3://b/in"})  # another store
    check_writes(["s3://b/in"], {"the output": "s3://b/in2"})  # a prefix plus '/'
    with pytest.raises(RecipeError, match="is inside the input"):
        check_writes(["s3://b/in"], {"the output": "s3://b/in/out"})


# .. the generic fsspec read path ...................................................................

def test_listing_globs_reads_and_local_copy_through_fsspec(dctest, tmp_path, monkeypatch):
    root, opts = dctest
    (root / "bkt/in/sub").mkdir(parents=True)
    (root / "bkt/in/a.jsonl").write_text('{"id": "1", "text": "x"}\n')
    (root / "bkt/in/sub/b.jsonl").write_text('{"id": "2", "text": "y"}\n')
    (root / "bkt/in/_hidden.jsonl").write_text("")
    (root / "bkt/in2").mkdir()
    (root / "bkt/in2/c.jsonl").write_text("")
    assert S.list_files("dctest://bkt/in", opts) == [
        "dctest://bkt/in/_hidden.jsonl", "dctest://bkt/in/a.jsonl", "dctest://bkt/in/sub/b.jsonl"]
    assert S.glob("dctest://bkt/in/**/*.jsonl", opts)[-1] == "dctest://bkt/in/sub/b.jsonl"
    got = S.expand_input("dctest://bkt/in", None, opts)
    assert [(p, stem, size) for p, stem, size, _ in got] == [
        ("dctest://bkt/in/a.jsonl", "a", 25), ("dctest://bkt/in/sub/b.jsonl", "sub/b", 25)]
    assert S.read_bytes("dctest://bkt/in/a.jsonl", opts) == b'{"id": "1", "text": "x"}\n'
    assert S.exists("dctest://bkt/in", opts) and not S.exists("dctest://bkt/i", opts)
    with pytest.raises(S.StorageError, match="dctest://bkt/in/none.jsonl: no such file"):
        S.read_bytes("dctest://bkt/in/none.jsonl", opts)
    # model-like files: fetched once into the cache, by URI + size + mtime, named as on the store
    monkeypatch.setenv("DCURATE_CACHE", str(tmp_path / "cache"))
    first = S.local_copy("dctest://bkt/in/a.jsonl", opts)
    assert first.startswith(str(tmp_path / "cache")) and first.endswith("/a.jsonl")
    assert Path(first).read_bytes() == b'{"id": "1", "text": "x"}\n'
    os.utime(first, (1, 1))
    assert S.local_copy("dctest://bkt/in/a.jsonl", opts) == first and os.stat(first).st_mtime == 1  # reused
    (root / "bkt/in/a.jsonl").write_text('{"id": "1", "text": "changed"}\n')
    os.utime(root / "bkt/in/a.jsonl", (5, 5))
    second = S.local_copy("dctest://bkt/in/a.jsonl", opts)
    assert second != first and Path(second).read_text().endswith('"changed"}\n')
    assert not [p for p in (tmp_path / "cache").rglob("*") if ".tmp-" in p.name]
    assert S.local_copy(str(root / "bkt/in/a.jsonl")) == str(root / "bkt/in/a.jsonl")  # local: as it is


def _plugin_env(tmp_path: Path) -> dict[str, str]:
    """Environment of a fresh ``dcurate`` process (and its workers) in which fsspec finds the
    ``dctest`` protocol through an ``fsspec.specs`` entry point, as an installed plugin declares it."""
    site = tmp_path / "site"
    dist = site / "dctest_plugin-0.1.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: dctest-plugin\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[fsspec.specs]\ndctest = fsspec_testfs:FolderBackedFS\n")
    path = os.pathsep.join([str(site), str(TESTS), str(REPO), os.environ.get("PYTHONPATH", "")])
    return dict(os.environ, PYTHONPATH=path)


def _recipe(tmp: Path, name: str, inp: str, out: str, target: str, workers: int, extra: str = "") -> Path:
    p = tmp / f"{name}.yaml"
    p.write_text(f"input: {inp}\noutput: {out}\nworkers: {workers}\nseed: 0\n{extra}"
                 "stages:\n  - stage: filter\n  - stage: dedup\n  - stage: select\n    method: dsir\n"
                 f"    target: {target}\n    k: 25\n")
    return p


def _run(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "dcurate", *args], capture_output=True, text=True, env=env)


@pytest.mark.slow
def test_run_reading_inputs_target_and_recipe_through_fsspec_equals_the_local_run(tmp_path):
    store = tmp_path / "store"
    write_corpus(store / "bkt/in")
    target = store / "bkt/target.jsonl"
    target.write_text("".join(json.dumps({"id": f"t{i}", "text": f"The river and the stone bridge {i}. "
                                          "A winter morning at the harbor."}) + "\n" for i in range(20)))
    env = _plugin_env(tmp_path)
    r = _run("run", str(_recipe(tmp_path, "local", str(store / "bkt/in"), str(tmp_path / "out"), str(target), 2)),
             env=env)
    assert r.returncode == 0, r.stderr[-2000:]
    local = _files(str(tmp_path / "out"))
    assert local and all(local.values())
    opts = {"dctest": {"root": str(store)}}
    # 1 worker: options in the recipe; the inputs a folder URI, the target an object URI
    rec = _recipe(tmp_path, "w1", "dctest://bkt/in", str(tmp_path / "out1"), "dctest://bkt/target.jsonl", 1,
                  f"storage_options: {json.dumps(opts)}\n")
    r = _run("run", str(rec), env=env)
    assert r.returncode == 0, r.stderr[-2000:]
    assert _files(str(tmp_path / "out1")) == local
    # 2 workers: options from DCURATE_STORAGE_OPTIONS, the recipe itself on the store, the inputs a glob
    rec = _recipe(store / "bkt", "w2", "dctest://bkt/in/*.jsonl", str(tmp_path / "out2"),
                  "dctest://bkt/target.jsonl", 2)
    r = _run("run", "dctest://bkt/w2.yaml", env=dict(env, DCURATE_STORAGE_OPTIONS=json.dumps(opts)))
    assert r.returncode == 0, r.stderr[-2000:]
    assert _files(str(tmp_path / "out2")) == local
    assert rec.exists()
    # writing OUT to a read-only scheme: a usage error naming what is supported
    r = _run("run", str(_recipe(tmp_path, "bad", "dctest://bkt/in", "dctest://bkt/out", str(target), 1,
                                f"storage_options: {json.dumps(opts)}\n")), env=env)
    assert r.returncode == 2 and "dctest:// is read-only" in r.stderr and "s3://" in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    assert not (store / "bkt/out").exists()


def test_stamp_includes_a_content_tag_where_the_store_gives_one(dctest, monkeypatch):
    root, opts = dctest
    (root / "m.bin").write_bytes(b"model")
    plain = S.stamp("dctest://m.bin", opts)
    assert plain is not None and plain[0] == 5 and len(plain) == 2
    import fsspec_testfs

    real = fsspec_testfs.FolderBackedFS.info

    def info(self, path, **kw):  # as hf:// does: the git blob id of the file's content
        return dict(real(self, path, **kw), blob_id="abc123")

    monkeypatch.setattr(fsspec_testfs.FolderBackedFS, "info", info)
    assert S.stamp("dctest://m.bin", opts) == [*plain, "abc123"]


def test_concurrent_first_fetches_download_once(dctest, tmp_path, monkeypatch):
    import threading

    root, opts = dctest
    (root / "lm.arpa").write_bytes(b"x" * 100_000)
    monkeypatch.setenv("DCURATE_CACHE", str(tmp_path / "cache"))
    opened = []
    real = S.open_input

    def counting(path, storage_options=None):
        opened.append(path)
        return real(path, storage_options)

    monkeypatch.setattr(S, "open_input", counting)
    barrier = threading.Barrier(6)
    real_stamp = S.stamp

    def together(path, storage_options=None):  # every thread past the "is it cached?" check at once
        st = real_stamp(path, storage_options)
        barrier.wait(timeout=60)
        return st

    monkeypatch.setattr(S, "stamp", together)
    got: list[str] = []
    threads = [threading.Thread(target=lambda: got.append(S.local_copy("dctest://lm.arpa", opts))) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(got)) == 1 and len(got) == 6 and opened == ["dctest://lm.arpa"]
    assert Path(got[0]).read_bytes() == b"x" * 100_000
