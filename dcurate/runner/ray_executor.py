"""Run tasks on Ray (``executor: ray``): a local private instance or an existing cluster.

Where it connects: ``--ray-address`` (recipe key ``ray_address``), else the ``RAY_ADDRESS``
variable; with neither (or ``RAY_ADDRESS`` empty) it starts a private local instance with
``workers`` CPUs. It never attaches to a cluster that an earlier ``ray start`` left running on this
machine unless told to (``ray.init()`` alone would).

How tasks run:

* at most ``IN_FLIGHT_PER_CPU`` x the cluster's CPUs tasks are submitted at a time (a plan of a
  million shards never becomes a million pending objects in the driver); each finished task
  submits the next;
* the first failed task raises its own exception in the driver (one line for dcurate's errors,
  not Ray's wrapper) and cancels every pending task; Ctrl-C (or ``terminate``) does the same;
* a task whose worker or node dies is retried by Ray (``max_retries``): every task writes its
  outputs under final names only when complete, so running it twice is safe;
* the ``AWS_*`` variables of the driver and the recipe's ``storage_options`` (as JSON in
  ``DCURATE_STORAGE_OPTIONS``, read by :mod:`dcurate.io.storage`) reach every task through the job's
  runtime environment, with EC2 instance-metadata lookups switched off.

On a private instance the workers get the driver's import path, so stages defined in the user's own
modules work; on a cluster, dcurate (and any such modules) must be installed on every node."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Iterator
from typing import Any

from dcurate.core.errors import DcurateError, RecipeError, RunError
from dcurate.runner.executor_api import Executor, describe_task
from dcurate.runner.nodesync import NodeOutcome, NodeStaging, run_on_node

#: Tasks in flight per CPU of the cluster: one running, one queued so no CPU idles between tasks.
IN_FLIGHT_PER_CPU = 2
#: Ray retries of a task whose worker or node died (not of a task that raised).
MAX_RETRIES = 3
#: Seconds between checks for Ctrl-C while waiting for tasks.
_POLL_S = 0.5

_THREAD_VARS = ("POLARS_MAX_THREADS", "OMP_NUM_THREADS", "NUMBA_NUM_THREADS", "OPENBLAS_NUM_THREADS")
_worker_ready = False


def _run_task(fn: Callable, x: Any, staging: NodeStaging | None = None) -> Any:
    """The Ray task body: one task, with single-threaded Arrow (parallelism comes from tasks), on a
    node without the driver's disk through the store (:mod:`dcurate.runner.nodesync`)."""
    global _worker_ready
    if not _worker_ready:
        import pyarrow as pa

        from dcurate.core import faults

        pa.set_cpu_count(1)
        pa.set_io_thread_count(1)
        faults.WORKER = True  # a task process: test-only kill-worker faults may hit it
        _worker_ready = True
    return run_on_node(staging, fn, x)


def resolve_address(address: str | None) -> str | None:
    """The cluster to attach to: ``address``, else a non-empty ``RAY_ADDRESS``, else None (private)."""
    if address:
        return address
    return os.environ.get("RAY_ADDRESS") or None


def task_env(storage_options: dict | None = None) -> dict[str, str]:
    """Variables every task gets: the driver's ``AWS_*``, the storage options, single-threaded
    native libraries, and no instance-metadata credential lookups."""
    env = {k: v for k, v in os.environ.items() if k.startswith("AWS_")}
    env.setdefault("AWS_EC2_METADATA_DISABLED", "true")
    if storage_options:
        env["DCURATE_STORAGE_OPTIONS"] = json.dumps(storage_options, sort_keys=True)
    for var in _THREAD_VARS:
        env[var] = "1"
    for var in ("DCURATE_FAULT", "DCURATE_FAULT_ONCE"):  # test-only fault injection (core/faults.py)
        if os.environ.get(var):
            env[var] = os.environ[var]
    return env


class RayExecutor(Executor):
    """Tasks as Ray tasks; see the module docstring."""

    def __init__(self, workers: int, address: str | None = None, storage_options: dict | None = None):
        try:
            import ray
        except ImportError:
            raise RecipeError("executor 'ray' needs the ray extra: pip install 'dcurate[ray]'") from None
        self._ray = ray
        self._owns = False
        self._pending: dict[Any, int] = {}
        self._mirrors: list[Any] = []
        #: The most tasks that were ever in flight at once (for tests and logs).
        self.peak_in_flight = 0
        address = resolve_address(address)
        if not ray.is_initialized():
            env = task_env(storage_options)
            if address:
                try:
                    ray.init(address=address, log_to_driver=False, runtime_env={"env_vars": env})
                except ConnectionError as e:
                    raise DcurateError(f"cannot reach the Ray cluster at {address}: {e}") from None
            else:
                # A private instance, even when RAY_ADDRESS is set to '' or a `ray start` cluster
                # is running here; its workers see the driver's import path.
                os.environ.pop("RAY_ADDRESS", None)
                env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p and os.path.isdir(p))
                ray.init(address="local", num_cpus=max(1, workers), include_dashboard=False,
                         log_to_driver=False, runtime_env={"env_vars": env})
            self._owns = True
        cpus = int(ray.cluster_resources().get("CPU", workers) or workers)
        self.workers = max(1, cpus)
        self.max_in_flight = IN_FLIGHT_PER_CPU * self.workers
        self._remote = ray.remote(max_retries=MAX_RETRIES, retry_exceptions=False)(_run_task)

    def imap_unordered(self, fn: Callable, items: list) -> Iterator[tuple[int, Any]]:
        ray = self._ray
        if not items:
            return
        for m in self._mirrors:  # what the driver wrote since the last phase, before tasks look for it
            m.sync()
        if self.staging is not None:
            self.staging.lazy = any(m.remote for m in self._mirrors)
        fn_ref = ray.put(fn)  # shipped once, not with every task
        staging_ref = ray.put(self.staging)
        pending = self._pending
        nxt = 0
        try:
            while nxt < len(items) or pending:
                while nxt < len(items) and len(pending) < self.max_in_flight:
                    pending[self._remote.remote(fn_ref, items[nxt], staging_ref)] = nxt
                    nxt += 1
                self.peak_in_flight = max(self.peak_in_flight, len(pending))
                done, rest = ray.wait(list(pending), num_returns=1, timeout=_POLL_S)
                if done and rest:  # take every other finished task too: one wait per batch, not per task
                    more, _ = ray.wait(rest, num_returns=len(rest), timeout=0)
                    done += more
                for ref in done:
                    i = pending.pop(ref)
                    yield i, self._result(ref, items[i])
        finally:
            self._cancel()

    def _result(self, ref: Any, task: Any) -> Any:
        ray = self._ray
        try:
            out = ray.get(ref)
            if isinstance(out, NodeOutcome):
                assert self.staging is not None
                return self.staging.absorb(out, self._mirrors)
            return out
        except ray.exceptions.RayTaskError as e:
            cause = getattr(e, "cause", None)
            if isinstance(cause, BaseException):
                raise cause from None
            raise DcurateError(f"a Ray task failed: {e}") from None
        except (ray.exceptions.WorkerCrashedError, ray.exceptions.NodeDiedError,
                ray.exceptions.ObjectLostError, ray.exceptions.OutOfMemoryError) as e:
            raise RunError(
                f"a worker was killed (out of memory?) while running {describe_task(task)}, "
                f"{MAX_RETRIES + 1} times ({type(e).__name__}); re-run to resume"
            ) from None

    def _cancel(self) -> None:
        """Cancel every task still in flight (queued ones never start; running ones are killed)."""
        for ref in list(self._pending):
            try:
                self._ray.cancel(ref, force=True)
            except Exception:  # noqa: BLE001 - already finished or gone
                pass
        self._pending.clear()

    def terminate(self) -> None:
        self._cancel()
        self._shutdown()

    def close(self) -> None:
        self._shutdown()

    def _shutdown(self) -> None:
        self._release_staging()
        if self._owns and self._ray.is_initialized():
            self._ray.shutdown()
        self._owns = False
