"""dcurate.io.storage on local folders and on a local S3-compatible server (moto, 127.0.0.1)."""

import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from unittest import mock

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from dcurate.io import storage as S

pytestmark = pytest.mark.s3


@pytest.fixture(scope="module")
def s3_env():
    """A moto server on a free loopback port, and the AWS variables that point at it."""
    server_mod = pytest.importorskip("moto.server")
    boto3 = pytest.importorskip("boto3")
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    server = server_mod.ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    env = {"AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}", "AWS_ACCESS_KEY_ID": "test",
           "AWS_SECRET_ACCESS_KEY": "test", "AWS_DEFAULT_REGION": "us-east-1"}
    try:
        with mock.patch.dict(os.environ, env):
            os.environ.pop("DCURATE_STORAGE_OPTIONS", None)
            client = boto3.client("s3")
            client.create_bucket(Bucket="bkt")
            yield client
    finally:
        server.stop()
        S._boto3_s3.cache_clear()
        S._pyarrow_s3.cache_clear()


@pytest.fixture(params=["local", "s3"])
def root(request, tmp_path):
    if request.param == "local":
        return str(tmp_path / "root")
    request.getfixturevalue("s3_env")
    prefix = f"s3://bkt/{request.node.name.replace('[', '-').rstrip(']')}"
    S.remove_tree(prefix)
    return prefix


def test_publish_read_list_size_remove(root):
    S.write_bytes(f"{root}/out/a.txt", b"hello")
    S.write_bytes(f"{root}/out/sub/b.txt", b"world!")
    S.write_bytes(f"{root}/out2/c.txt", b"other folder")
    assert S.read_bytes(f"{root}/out/a.txt") == b"hello"
    assert S.size(f"{root}/out/sub/b.txt") == 6
    assert S.exists(f"{root}/out/a.txt") and S.exists(f"{root}/out")
    assert not S.exists(f"{root}/out/missing.txt")
    # A folder is its prefix plus '/': out and out2 are different folders.
    assert S.list_files(f"{root}/out") == [f"{root}/out/a.txt", f"{root}/out/sub/b.txt"]
    assert S.list_files(f"{root}/nothing") == []
    assert S.glob(f"{root}/out/*.txt") == [f"{root}/out/a.txt"]
    assert S.glob(f"{root}/out/**/*.txt") == [f"{root}/out/a.txt", f"{root}/out/sub/b.txt"]
    assert S.glob(f"{root}/out*/c.txt") == [f"{root}/out2/c.txt"]
    S.write_bytes(f"{root}/out/a.txt", b"replaced")
    assert S.read_bytes(f"{root}/out/a.txt") == b"replaced"
    S.remove(f"{root}/out/a.txt")
    S.remove(f"{root}/out/a.txt")  # missing is fine
    assert not S.exists(f"{root}/out/a.txt")
    S.remove_tree(f"{root}/out")
    assert S.list_files(f"{root}/out") == [] and S.list_files(f"{root}/out2") == [f"{root}/out2/c.txt"]
    with pytest.raises(S.StorageError, match="missing.txt"):
        S.read_bytes(f"{root}/out/missing.txt")


def test_publish_failure_leaves_nothing(root):
    S.write_bytes(f"{root}/x.bin", b"old")
    with pytest.raises(RuntimeError):
        with S.publish(f"{root}/x.bin", {"part_size": 5 * 2**20} if root.startswith("s3") else None) as f:
            f.write(b"n" * (11 * 2**20))  # two parts already uploaded on S3
            raise RuntimeError("writer failed")
    assert S.read_bytes(f"{root}/x.bin") == b"old"
    assert S.list_files(root) == [f"{root}/x.bin"]  # no temporary file or object left


def test_multipart_publish_roundtrip_and_parquet_read(root):
    big = os.urandom(1 << 20) * 12  # 12 MiB: three 5 MiB parts on S3
    with S.publish(f"{root}/big.bin", {"part_size": 5 * 2**20} if root.startswith("s3") else None) as f:
        for i in range(0, len(big), 3 << 20):
            f.write(big[i:i + (3 << 20)])
    assert S.size(f"{root}/big.bin") == len(big) and S.read_bytes(f"{root}/big.bin") == big
    t = pa.table({"id": [f"d{i}" for i in range(1000)], "text": ["x" * (i % 50) for i in range(1000)]})
    sink = pa.BufferOutputStream()
    pq.write_table(t, sink, row_group_size=100)
    S.write_bytes(f"{root}/t.parquet", sink.getvalue().to_pybytes())
    fs, p = S.filesystem(f"{root}/t.parquet")
    assert pq.ParquetFile(p, filesystem=fs).metadata.num_row_groups == 10
    with S.open_input(f"{root}/t.parquet") as f:
        assert pq.read_table(f).equals(t)


def test_create_exclusive(root):
    assert S.create_exclusive(f"{root}/lock", b"pid 1")
    assert not S.create_exclusive(f"{root}/lock", b"pid 2")
    assert S.read_bytes(f"{root}/lock") == b"pid 1"
    S.remove(f"{root}/lock")
    assert S.create_exclusive(f"{root}/lock", b"pid 3")


def test_storage_options_override_the_environment(s3_env):
    port = os.environ["AWS_ENDPOINT_URL"].rsplit(":", 1)[1]
    opts = {"endpoint_url": f"http://127.0.0.1:{port}", "access_key": "test", "secret_key": "test"}
    with mock.patch.dict(os.environ, {"AWS_ENDPOINT_URL": "http://127.0.0.1:9"}):  # nothing listens there
        S.write_bytes("s3://bkt/opts/a", b"1", opts)
        assert S.read_bytes("s3://bkt/opts/a", opts) == b"1"
        with mock.patch.dict(os.environ, {"DCURATE_STORAGE_OPTIONS": f'{{"endpoint_url": "{opts["endpoint_url"]}"}}'}):
            assert S.list_files("s3://bkt/opts") == ["s3://bkt/opts/a"]  # as a Ray task receives them
    with pytest.raises(S.StorageError, match="unknown key"):
        S.resolve_options({"endpont_url": "x"})


def test_uris_and_errors():
    assert S.is_uri("s3://bkt/k") and not S.is_uri("/tmp/x") and not S.is_uri("file:///tmp/x")
    assert not S.is_uri("C:/data")  # a drive letter is not a scheme
    with pytest.raises(S.StorageError, match="unsupported storage scheme 'nosuchscheme://'"):
        S.filesystem("nosuchscheme://b/k")  # gs://, hf:// and fsspec's: tests/test_storage_fsspec.py
    with pytest.raises(S.StorageError, match="no bucket"):
        S.filesystem("s3:///k")


@pytest.mark.slow
def test_killed_writer_leaves_no_object(s3_env, tmp_path):
    """kill -9 in the middle of a multipart upload: nothing appears under the key."""
    script = tmp_path / "w.py"
    script.write_text(textwrap.dedent("""
        import sys, time
        from dcurate.io import storage as S
        with S.publish("s3://bkt/killed/part.bin", {"part_size": 5 * 2**20}) as f:
            f.write(b"x" * (6 * 2**20))
            f.flush()
            print("uploading", flush=True)
            time.sleep(600)
    """))
    p = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True,
                         env=dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path)))
    try:
        assert p.stdout.readline().strip() == "uploading"
        uploads = s3_env.list_multipart_uploads(Bucket="bkt", Prefix="killed/").get("Uploads", [])
        assert len(uploads) == 1  # one part is already on the server
    finally:
        p.send_signal(signal.SIGKILL)
        p.wait()
    time.sleep(0.1)
    assert S.list_files("s3://bkt/killed") == []
    assert not S.exists("s3://bkt/killed/part.bin")


def test_expand_input_like_local_inputs(root):
    for name in ("a.parquet", "sub/b.jsonl.zst", "_work/x.parquet", ".hidden.jsonl", "notes.txt", "stats.json"):
        S.write_bytes(f"{root}/in/{name}", b"12345")
    got = S.expand_input(f"{root}/in")
    assert [(p, stem, n) for p, stem, n, _ in got] == [
        (f"{root}/in/a.parquet", "a", 5), (f"{root}/in/sub/b.jsonl.zst", "sub/b", 5)]
    assert all(t > 0 for *_, t in got)
    assert [g[1] for g in S.expand_input(f"{root}/in/*.parquet")] == ["a"]
    assert [g[1] for g in S.expand_input(f"{root}/in/sub/b.jsonl.zst")] == ["b"]
    assert [g[1] for g in S.expand_input(f"{root}/in/notes.txt", "jsonl")] == ["notes"]
    from dcurate.core.errors import InputError

    with pytest.raises(InputError, match="no such file"):
        S.expand_input(f"{root}/missing")
    with pytest.raises(InputError, match="glob matches no file"):
        S.expand_input(f"{root}/in/*.jsonl.gz")
    S.write_bytes(f"{root}/empty/readme.txt", b"")
    with pytest.raises(InputError, match="folder has no"):
        S.expand_input(f"{root}/empty")
