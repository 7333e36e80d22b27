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
