"""The standalone Ray executor: bounded submission, cancellation on the first failure, errors
unwrapped, the task environment, and where it connects."""

import os
import time

import pytest

from dcurate.core.errors import DcurateError
from dcurate.runner import ray_executor as rx
from dcurate.runner.executor import LocalExecutor, make_executor
from dcurate.runner.executor_api import Executor


def test_resolve_address(monkeypatch):
    monkeypatch.setenv("RAY_ADDRESS", "")
    assert rx.resolve_address(None) is None  # empty: a private instance
    monkeypatch.delenv("RAY_ADDRESS")
    assert rx.resolve_address(None) is None
    monkeypatch.setenv("RAY_ADDRESS", "10.0.0.1:6379")
    assert rx.resolve_address(None) == "10.0.0.1:6379"
    assert rx.resolve_address("127.0.0.1:1234") == "127.0.0.1:1234"  # the option wins


def test_task_env_carries_aws_and_storage_options(monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-west-3")
    monkeypatch.delenv("AWS_EC2_METADATA_DISABLED", raising=False)
    env = rx.task_env({"endpoint_url": "http://127.0.0.1:10", "anon": False})
    assert env["AWS_ENDPOINT_URL"] == "http://127.0.0.1:9"
    assert env["AWS_DEFAULT_REGION"] == "eu-west-3"
    assert env["AWS_EC2_METADATA_DISABLED"] == "true"
    assert env["DCURATE_STORAGE_OPTIONS"] == '{"anon": false, "endpoint_url": "http://127.0.0.1:10"}'
    assert "DCURATE_STORAGE_OPTIONS" not in rx.task_env(None)


def test_recipe_keys_ray_address_and_storage_options():
    from dcurate.core.errors import RecipeError
    from dcurate.runner.recipe import from_dict

    opts = {"endpoint_url": "http://127.0.0.1:9000", "part_size": 8388608}
    r = from_dict({"input": "in", "output": "out", "executor": "ray", "ray_address": "10.0.0.1:6379",
                   "storage_options": opts})
    assert r.options.ray_address == "10.0.0.1:6379"
    assert r.options.storage_options == opts  # values kept as given, not coerced to numbers
    with pytest.raises(RecipeError, match="storage_options"):
        from_dict({"input": "in", "output": "out", "storage_options": "endpoint_url=x"})


def test_local_executor_implements_the_interface():
    ex = make_executor("local", 1)
    assert isinstance(ex, LocalExecutor) and isinstance(ex, Executor)
    assert ex.map(abs, [-1, 2, -3]) == [1, 2, 3]
    ex.close()


# -- on a private Ray instance -------------------------------------------------------------------

def _square(x):
    return x * x


def _env(_):
    return os.environ.get("AWS_ACCESS_KEY_ID"), os.environ.get("DCURATE_STORAGE_OPTIONS")


def _fail_first(arg):
    i, folder = arg
    if i == 0:
        raise DcurateError("shard 0: bad record at line 3, field 'text'")
    time.sleep(0.2)
    open(os.path.join(folder, f"{i}.done"), "w").close()
    return i


@pytest.fixture(scope="module")
def ray_ex():
    ray = pytest.importorskip("ray")
    old = {k: os.environ.get(k) for k in ("RAY_ADDRESS", "AWS_ACCESS_KEY_ID")}
    os.environ["RAY_ADDRESS"] = ""  # empty: must start a private instance, not attach
    os.environ["AWS_ACCESS_KEY_ID"] = "test-key"
    try:
        ex = rx.RayExecutor(2, storage_options={"endpoint_url": "http://127.0.0.1:1"})
        yield ex
        ex.close()
        assert not ray.is_initialized()
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@pytest.mark.ray
@pytest.mark.slow
def test_ray_map_bounded_in_flight(ray_ex):
    items = list(range(60))
    assert ray_ex.map(_square, items) == [x * x for x in items]
    assert ray_ex.workers == 2
    assert 0 < ray_ex.peak_in_flight <= 2 * ray_ex.workers


@pytest.mark.ray
@pytest.mark.slow
def test_ray_tasks_see_aws_and_storage_options(ray_ex):
    key, opts = ray_ex.map(_env, [0])[0]
    assert key == "test-key"
    assert opts == '{"endpoint_url": "http://127.0.0.1:1"}'


@pytest.mark.ray
@pytest.mark.slow
def test_ray_first_failure_raises_its_error_and_cancels_the_rest(ray_ex, tmp_path):
    items = [(i, str(tmp_path)) for i in range(40)]
    with pytest.raises(DcurateError, match="shard 0: bad record at line 3"):
        list(ray_ex.imap_unordered(_fail_first, items))
    assert ray_ex._pending == {}
    # Only what was in flight when task 0 failed may have run: never the whole list.
    assert len(list(tmp_path.glob("*.done"))) <= ray_ex.max_in_flight
    # The executor stays usable after a failure.
    assert ray_ex.map(_square, [3]) == [9]


def _slow(arg):
    i, folder = arg
    time.sleep(0.5)
    open(os.path.join(folder, f"{i}.done"), "w").close()
    return i


@pytest.mark.ray
@pytest.mark.slow
def test_ray_interrupt_cancels_pending(ray_ex, tmp_path):
    items = [(i, str(tmp_path)) for i in range(40)]
    it = ray_ex.imap_unordered(_slow, items)
    with pytest.raises(KeyboardInterrupt):
        for _ in it:
            raise KeyboardInterrupt  # Ctrl-C in the driver: the generator is closed, pending tasks cancelled
    it.close()
    assert ray_ex._pending == {}
    assert len(list(tmp_path.glob("*.done"))) <= ray_ex.max_in_flight + 1
