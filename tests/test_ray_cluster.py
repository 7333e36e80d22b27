"""A real two-node Ray cluster on this machine (loopback only): `ray start --head` plus a second
node joining it, each with its own temp folder and ports. A filter + dedup + select recipe run on it
with --ray-address writes exactly the local executor's output."""

import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from conftest import ROOT, tree_digest, write_jsonl

pytest.importorskip("ray")
psutil = pytest.importorskip("psutil")
pytestmark = [pytest.mark.ray, pytest.mark.slow]

WORDS = ("the of and to in that is was for with as on by at from this which are be it an or have "
         "river valley town castle king army church music school island bridge railway station "
         "harbour village council election parliament museum garden forest mountain lake season").split()


def _doc(rng: random.Random, n_sent: int) -> str:
    sents = []
    for _ in range(n_sent):
        words = [rng.choice(WORDS) for _ in range(rng.randint(8, 16))]
        sents.append(" ".join(words).capitalize() + ".")
    return " ".join(sents)


def _corpus(folder: Path) -> tuple[Path, Path]:
    rng = random.Random(7)
    recs = []
    for i in range(240):
        recs.append({"id": f"d{i:04d}", "text": _doc(rng, rng.randint(1, 12))})
    for i in range(0, 240, 12):  # near duplicates: one word changed
        w = recs[i]["text"].split(" ")
        w[len(w) // 2] = "meadow"
        recs.append({"id": f"d{i:04d}-copy", "text": " ".join(w)})
    for k in range(4):
        write_jsonl(folder / "in" / f"part-{k}.jsonl", recs[k::4])
    target = write_jsonl(folder / "target.jsonl",
                         [{"id": f"t{i}", "text": _doc(random.Random(100 + i), 6) + " castle king army"}
                          for i in range(30)])
    return folder / "in", target


def _recipe(path: Path, inp: Path, out: Path, target: Path, executor: str) -> Path:
    path.write_text(
        f"input: {inp}\noutput: {out}\nexecutor: {executor}\nworkers: 2\nseed: 0\nprogress: false\n"
        "stages:\n  - stage: filter\n  - stage: dedup\n    threshold: 0.8\n"
        f"  - stage: select\n    method: dsir\n    target: {target}\n    k: 40\n"
    )
    return path


def _free_ports(n: int) -> list[int]:
    socks, ports = [], []
    for _ in range(n):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        socks.append(s)
        ports.append(s.getsockname()[1])
    for s in socks:
        s.close()
    return ports


def _ray_start(args: list[str], temp_dir: str, env: dict, cpus: int = 1, prefix: tuple[str, ...] = ()) -> None:
    """``ray start`` with its own ports and temp folder; ``prefix`` wraps the command (e.g. a
    private mount namespace)."""
    ports = _free_ports(7)
    cmd = [*prefix, sys.executable, "-m", "ray.scripts.scripts", "start", "--node-ip-address=127.0.0.1",
           f"--num-cpus={cpus}",
           f"--temp-dir={temp_dir}", "--disable-usage-stats",
           f"--node-manager-port={ports[0]}", f"--object-manager-port={ports[1]}",
           f"--metrics-export-port={ports[2]}", f"--dashboard-agent-listen-port={ports[3]}",
           f"--dashboard-agent-grpc-port={ports[4]}", f"--runtime-env-agent-port={ports[5]}",
           *args]
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]


def _stop_ours(temp_dirs: list[str]) -> None:
    """Kill only the processes of the nodes this test started (their command lines name our temp
    folders), never other Ray instances on the machine."""
    ours = []
    for p in psutil.process_iter(["pid", "cmdline"]):
        try:
            cmd = " ".join(p.info["cmdline"] or [])
        except psutil.Error:
            continue
        if p.pid != os.getpid() and any(t in cmd for t in temp_dirs):
            ours.append(p)
    for p in ours:
        try:
            p.send_signal(signal.SIGTERM)
        except psutil.Error:
            pass
    _, alive = psutil.wait_procs(ours, timeout=10)
    for p in alive:
        try:
            p.kill()
        except psutil.Error:
            pass


def test_two_node_cluster_output_identical_to_local(tmp_path):
    inp, target = _corpus(tmp_path)
    local = subprocess.run([sys.executable, "-m", "dcurate", "run",
                            str(_recipe(tmp_path / "l.yaml", inp, tmp_path / "out-local", target, "local"))],
                           capture_output=True, text=True, cwd=ROOT)
    assert local.returncode == 0, local.stderr[-2000:]
    # Short temp folders: Ray's socket paths must stay under 107 characters.
    t1, t2 = tempfile.mkdtemp(prefix="dcr1-", dir="/tmp"), tempfile.mkdtemp(prefix="dcr2-", dir="/tmp")
    env = dict(os.environ, RAY_AUTH_MODE="disabled", PYTHONPATH=str(ROOT), RAY_ADDRESS="")
    (port,) = _free_ports(1)
    try:
        _ray_start(["--head", f"--port={port}", "--include-dashboard=false"],
                   t1, env)
        _ray_start([f"--address=127.0.0.1:{port}"], t2, env)
        import ray

        ray.init(address=f"127.0.0.1:{port}")
        try:
            deadline = time.monotonic() + 120  # the second node registers asynchronously
            while len([n for n in ray.nodes() if n["Alive"]]) < 2 and time.monotonic() < deadline:
                time.sleep(0.5)
            assert len([n for n in ray.nodes() if n["Alive"]]) == 2
        finally:
            ray.shutdown()
        r = subprocess.run([sys.executable, "-m", "dcurate", "run", "--ray-address", f"127.0.0.1:{port}",
                            str(_recipe(tmp_path / "r.yaml", inp, tmp_path / "out-ray", target, "ray"))],
                           capture_output=True, text=True, env=env, cwd=ROOT)
        assert r.returncode == 0, r.stderr[-3000:]
    finally:
        _stop_ours([t1, t2])
        shutil.rmtree(t1, ignore_errors=True)
        shutil.rmtree(t2, ignore_errors=True)
    got, want = tree_digest(tmp_path / "out-ray"), tree_digest(tmp_path / "out-local")
    assert want and got == want
    assert sum(p.read_bytes().count(b"\n") for p in (tmp_path / "out-local").glob("*.jsonl")) == 40
