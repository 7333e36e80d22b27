"""The pieces that let Ray tasks on nodes without the driver's disk work through the store
(dcurate.runner.nodesync) and the driver keep files on the store only (Mirror.record/fetch)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import pytest
from test_storage import s3_env  # noqa: F401 (fixture)

from dcurate.io import storage as S
from dcurate.runner import nodesync
from dcurate.runner.remote import SYNCED_NS, Mirror


@dataclass
class _Src:
    piece: object


@dataclass
class _Task:
    source: _Src
    plan: str
    folders: dict


def test_mentions_find_staging_paths_in_nested_tasks(tmp_path):
    root = str(tmp_path / "stage")
    task = _Task(_Src(None), f"{root}/plan-round0.plan",
                 {"a": [Path(root) / "x" / "000001-0000.npz", ("elsewhere/file", 3)], f"{root}/k": None})
    found: set[str] = set()
    nodesync._mentions(task, [root], found, 0)
    assert found == {f"{root}/plan-round0.plan", f"{root}/x/000001-0000.npz", f"{root}/k"}


def test_a_folder_brings_shared_files_and_only_the_tasks_own_pieces():
    assert nodesync._wanted("target_counts.npy", "000001-0000")
    assert nodesync._wanted("000001-0000.keys.npz", "000001-0000")
    assert not nodesync._wanted("000002-0000.keys.npz", "000001-0000")
    assert nodesync._wanted("scan/000001-0000/c00000/keys.npy", "000001-0000")
    assert not nodesync._wanted("scan/000003-0000/c00000/keys.npy", "000001-0000")
    assert not nodesync._wanted("000001-0000.keys.npz", None)  # a fan-out item names its files itself


def test_late_pulls_rerun_only_when_the_missing_file_could_be_copied(tmp_path):
    missing = tmp_path / "w" / "a.npy"
    calls = []

    def fn():
        calls.append(1)
        return missing.read_bytes()

    def pull(path):
        if path == str(missing):
            missing.parent.mkdir(parents=True, exist_ok=True)
            missing.write_bytes(b"x")
            return True
        return False

    assert nodesync.late_pulls(fn, pull) == b"x" and len(calls) == 2
    other = tmp_path / "w" / "b.npy"
    with pytest.raises(FileNotFoundError):
        nodesync.late_pulls(lambda: other.read_bytes(), lambda p: False)


@pytest.mark.s3
def test_files_on_the_store_only(s3_env, tmp_path):  # noqa: F811
    uri = "s3://bkt/nodesync"
    S.remove_tree(uri)
    m = Mirror(uri, tmp_path / "staging")
    m.pull()
    S.write_bytes(f"{uri}/stages/s1/000001-0000.keys.npz", b"0123456789")  # as a task on another node
    m.record("stages/s1/000001-0000.keys.npz", 10)
    path = m.local / "stages/s1/000001-0000.keys.npz"
    assert not path.exists() and path.parent.is_dir()
    assert m.size_of(path) == 10
    m.sync()  # a file the driver never copied is not a deleted one
    assert S.exists(f"{uri}/stages/s1/000001-0000.keys.npz")
    assert m.fetch(m.local / "stages") == 1 and path.read_bytes() == b"0123456789"
    assert not m.remote and m.size_of(path) == 10
    m.record("stages/s1/000002-0000.keys.npz", 3)
    S.write_bytes(f"{uri}/stages/s1/000002-0000.keys.npz", b"abc")
    import shutil

    shutil.rmtree(m.local / "stages")  # the driver drops the stage's folder: gone from the store too
    m.sync()
    assert not S.list_files(f"{uri}/stages")
    # a copy a task made from the store (SYNCED mtime) counts as published, not as a change
    S.write_bytes(f"{uri}/p/x.bin", b"data")
    (m.local / "p").mkdir()
    (m.local / "p" / "x.bin").write_bytes(b"data")
    os.utime(m.local / "p" / "x.bin", ns=(SYNCED_NS, SYNCED_NS))
    m.sync()
    assert "p/x.bin" in m.state


def test_kinds_group_the_pieces_files():
    assert nodesync._kind("stages/s/000003-0000.keys.npz") == nodesync._kind("stages/s/000011-0002.keys.npz")
    assert nodesync._kind("stages/s/000003-0000.keys.npz") != nodesync._kind("stages/s/000003-0000.ids.arrow")
    assert nodesync._kind("stages/d/scan/000001-0000/c00000/keys.npy") == "stages/d/scan/*/c#/keys.npy"
    assert nodesync._kind("stages/d/scan/000001-0000/c00002/keys.npy") == "stages/d/scan/*/c#/keys.npy"
    assert nodesync._kind("stages/s/target_counts.npy") == "stages/s/target_counts.npy"
