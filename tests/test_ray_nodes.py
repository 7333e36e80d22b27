"""A two-node Ray cluster whose second node does not share the driver's disk, with input, OUT, the
work folder and the target on a local S3-compatible server: tasks on the second node reach the
driver's files only through the store, tasks on the head node copy from the store what the driver
keeps there only, and the output equals the local run.

The second node runs in a private mount namespace with an empty tmpfs over the staging folder (the
test is skipped where mount namespaces are not allowed), so nothing the driver writes there is
visible to its tasks."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from conftest import ROOT
from test_ray_cluster import _free_ports, _ray_start, _stop_ours
from test_remote_run import _dcurate, _files, _recipe, staged  # noqa: F401 (fixture)
from test_storage import s3_env  # noqa: F401 (fixture)

from dcurate.io import storage as S

pytest.importorskip("ray")
pytestmark = [pytest.mark.ray, pytest.mark.slow, pytest.mark.s3]


def _private_mounts_allowed(where: str) -> bool:
    if not shutil.which("unshare"):
        return False
    r = subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c",
                        f"mount -t tmpfs tmpfs {where} && touch {where}/probe"], capture_output=True)
    return r.returncode == 0 and not os.path.exists(os.path.join(where, "probe"))


def test_node_without_the_drivers_disk_reaches_everything_through_the_store(staged):  # noqa: F811
    tmp, env, local = staged
    staging = tempfile.mkdtemp(prefix="dcs-", dir="/tmp")
    if not _private_mounts_allowed(staging):
        shutil.rmtree(staging, ignore_errors=True)
        pytest.skip("mount namespaces (unshare --mount) are not allowed here")
    t1, t2 = tempfile.mkdtemp(prefix="dcr1-", dir="/tmp"), tempfile.mkdtemp(prefix="dcr2-", dir="/tmp")
    env = dict(env, RAY_AUTH_MODE="disabled", PYTHONPATH=str(ROOT), RAY_ADDRESS="", DCURATE_STAGING=staging)
    (port,) = _free_ports(1)
    try:
        _ray_start(["--head", f"--port={port}", "--include-dashboard=false"], t1, env, cpus=1)
        private = ("unshare", "--mount", "--propagation", "private", "sh", "-c",
                   f'mount -t tmpfs tmpfs {staging} && exec "$0" "$@"')
        _ray_start([f"--address=127.0.0.1:{port}", '--resources={"private_disk": 1}'], t2, env, cpus=2,
                   prefix=private)
        import ray

        ray.init(address=f"127.0.0.1:{port}")
        try:
            deadline = time.monotonic() + 120
            while len([n for n in ray.nodes() if n["Alive"]]) < 2 and time.monotonic() < deadline:
                time.sleep(0.5)
            assert len([n for n in ray.nodes() if n["Alive"]]) == 2
            Path(staging, "probe").write_text("driver's disk")
            probe = ray.remote(resources={"private_disk": 1})(lambda p: os.path.exists(p))
            seen = ray.get(probe.remote(os.path.join(staging, "probe")))
            assert seen is False  # the task node does not see the driver's staging folder
        finally:
            ray.shutdown()
        rec = _recipe(tmp, "nodes", "s3://bkt/rr/in", "s3://bkt/rr/out-nodes", "s3://bkt/rr/work-nodes",
                      "s3://bkt/rr/target.jsonl", executor="ray")
        # the driver copies no file written on the other node unless it reads it itself
        r = _dcurate("run", "--ray-address", f"127.0.0.1:{port}", str(rec), env=dict(env, DCURATE_DRIVER_COPY_MAX="0"),
                     cwd=ROOT)
        assert r.returncode == 0, r.stderr[-3000:]
        assert _files("s3://bkt/rr/out-nodes") == local
        m = re.search(r"published (\d+) files \(([\d,]+) bytes\); the driver copied (\d+) of them \(([\d,]+) bytes", r.stderr)
        assert m, r.stderr[-2000:]
        print(m.group(0))
        assert 0 < int(m.group(3)) < int(m.group(1))  # markers and what its reduces read, not the rest
        v = _dcurate("verify", "s3://bkt/rr/out-nodes", env=env)
        assert v.returncode == 0, v.stdout + v.stderr
        # a second run on the cluster resumes every task from the store and changes nothing
        r = _dcurate("run", "--ray-address", f"127.0.0.1:{port}", str(rec), env=env, cwd=ROOT)
        assert r.returncode == 0, r.stderr[-3000:]
        assert _files("s3://bkt/rr/out-nodes") == local
        # kill -9 of the driver mid-run, then a resume on the same cluster: the same bytes again
        rec2 = _recipe(tmp, "nodes2", "s3://bkt/rr/in", "s3://bkt/rr/out-nodes2", "s3://bkt/rr/work-nodes2",
                       "s3://bkt/rr/target.jsonl", executor="ray")
        p = subprocess.Popen([sys.executable, "-m", "dcurate", "run", "--ray-address", f"127.0.0.1:{port}",
                              str(rec2)], env=env, cwd=ROOT, start_new_session=True,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and p.poll() is None and not any(
                n.endswith(".done") for n in S.list_files("s3://bkt/rr/work-nodes2")):
            time.sleep(0.2)
        assert p.poll() is None, "the run ended before it could be killed"
        os.killpg(p.pid, signal.SIGKILL)
        p.wait()
        r = _dcurate("run", "--ray-address", f"127.0.0.1:{port}", str(rec2), env=env, cwd=ROOT)
        assert r.returncode == 0, r.stderr[-3000:]
        assert _files("s3://bkt/rr/out-nodes2") == local
    finally:
        _stop_ours([t1, t2])
        for d in (t1, t2, staging):
            shutil.rmtree(d, ignore_errors=True)
