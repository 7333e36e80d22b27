"""The Ray executor runs the same phase functions as the local pool: identical output."""

import pytest
from conftest import tree_digest
from toy_stages import LenParams, TopParams, ToyLen, ToyTopK

from dcurate.core.options import RunOptions
from dcurate.runner.driver import run

ray = pytest.importorskip("ray")
pytestmark = [pytest.mark.ray, pytest.mark.slow]


def test_ray_executor_output_identical_to_local(corpus, tmp_path):
    stages = [(ToyLen, LenParams(min_chars=40)), (ToyTopK, TopParams(k=9)), (ToyLen, LenParams())]
    run(str(corpus), str(tmp_path / "local"), stages, RunOptions(workers=2, progress=False))
    try:
        s = run(str(corpus), str(tmp_path / "ray"), stages, RunOptions(workers=2, executor="ray", progress=False))
    finally:
        ray.shutdown()
    assert tree_digest(tmp_path / "ray") == tree_digest(tmp_path / "local")
    assert s["stages"][1]["total_seen"] > 0


@pytest.mark.parametrize("fault", ["pass0:1:kill-worker", "scan1:1:kill-worker", "pass2:2:kill-worker"])
def test_a_killed_ray_worker_is_retried_and_the_output_is_unchanged(tmp_path, fault):
    """A Ray worker killed (SIGKILL) after writing a task's outputs and before its marker: Ray runs
    the task again elsewhere, and the run ends with the uninterrupted run's bytes."""
    import os
    import subprocess
    import sys

    from conftest import ROOT
    from test_ray_cluster import _corpus, _recipe

    inp, target = _corpus(tmp_path)
    want = subprocess.run([sys.executable, "-m", "dcurate", "run",
                           str(_recipe(tmp_path / "l.yaml", inp, tmp_path / "out-local", target, "local"))],
                          capture_output=True, text=True, cwd=ROOT)
    assert want.returncode == 0, want.stderr[-2000:]
    once = tmp_path / "killed"
    env = dict(os.environ, RAY_ADDRESS="", PYTHONPATH=str(ROOT), DCURATE_FAULT=fault, DCURATE_FAULT_ONCE=str(once))
    r = subprocess.run([sys.executable, "-m", "dcurate", "run",
                        str(_recipe(tmp_path / "r.yaml", inp, tmp_path / "out-ray", target, "ray"))],
                       capture_output=True, text=True, cwd=ROOT, env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    assert once.exists()  # a worker was killed
    assert tree_digest(tmp_path / "out-ray") == tree_digest(tmp_path / "out-local")
