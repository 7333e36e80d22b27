"""Executors run task functions over lists of tasks: in the driver and a local process pool (here),
or on Ray (:mod:`dcurate.runner.ray_executor`). Both implement
:class:`dcurate.runner.executor_api.Executor`; tasks are plain picklable (function, argument) pairs,
so every executor runs the same code and results never depend on which one ran them."""

from __future__ import annotations

import functools
import multiprocessing as mp
import os
import queue
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any

from dcurate.core import faults
from dcurate.core.errors import RunError
from dcurate.runner.executor_api import Executor, describe_task, unwrap_task


def _killed(task: Any) -> RunError:
    return RunError(f"a worker was killed (out of memory?) while running {describe_task(task)}; re-run to resume")


def _die_with_parent() -> None:
    """Linux: get SIGKILL when the parent process dies (a pool worker's parent is the fork server,
    which itself exits when the driver dies), so a ``kill -9`` of the driver leaves nothing
    running. Elsewhere a no-op."""
    if not sys.platform.startswith("linux"):
        return
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        parent = os.getppid()
        libc.prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG
        if os.getppid() != parent:  # the parent died before prctl took effect
            os._exit(1)
    except (OSError, AttributeError):
        pass


def _exit_with_driver(driver: int) -> None:
    """Exit this pool process as soon as the driver process ends (even by ``kill -9``).

    A pool process is a child of the fork server, not of the driver, and it holds the pipes that
    would tell the fork server (and itself) that the driver is gone; so it watches the driver:
    a daemon thread blocks on a pidfd (Linux), or polls once a second elsewhere."""
    try:
        os.kill(driver, 0)
    except ProcessLookupError:
        os._exit(1)
    except PermissionError:
        pass

    def watch() -> None:
        try:
            import select

            fd = os.pidfd_open(driver)  # type: ignore[attr-defined]
            poller = select.poll()
            poller.register(fd, select.POLLIN)
            while not poller.poll():
                pass
        except (AttributeError, OSError):
            import time

            while True:
                time.sleep(1.0)
                try:
                    os.kill(driver, 0)
                except ProcessLookupError:
                    break
                except PermissionError:
                    pass
        os._exit(1)

    threading.Thread(target=watch, name="dcurate-driver-watch", daemon=True).start()


def _init_worker(driver: int | None = None) -> None:
    import pyarrow as pa

    _die_with_parent()
    faults.WORKER = True
    if driver is not None:
        _exit_with_driver(driver)
    # Ctrl-C reaches the whole process group: the driver handles it and stops the workers.
    signal.signal(signal.SIGINT, signal.SIG_IGN)

    pa.set_cpu_count(1)
    pa.set_io_thread_count(1)


def prestart_fork_server(modules: list[str]) -> None:
    """Start the fork server that pool processes fork from, with ``modules`` imported and warmed.

    The server is one per driver process; the first call decides what it preloads. The CLI calls
    this in a background thread at start-up, so the server imports on the second core while the
    driver imports on the first, and pools later start in milliseconds."""
    global _PRESTARTED
    _PRESTARTED = True
    for var in ("POLARS_MAX_THREADS", "OMP_NUM_THREADS", "NUMBA_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ.setdefault(var, "1")
    if not os.environ.get("DCURATE_WARMUP"):
        os.environ["DCURATE_WARMUP"] = ",".join(modules)
    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload(["dcurate.runner.driver", "dcurate.runner.warmup"])
    from multiprocessing import forkserver, resource_tracker

    # The fork server is a fresh interpreter: a Ctrl-C reaching it while it starts would print a
    # traceback. It starts with SIGINT blocked (inherited across exec; the driver handles Ctrl-C
    # and stops everything). The resource tracker starts first: it ignores SIGINT itself, and its
    # start unblocks SIGINT.
    resource_tracker.ensure_running()
    old = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT}) if hasattr(signal, "pthread_sigmask") else None
    try:
        forkserver.ensure_running()
    finally:
        if old is not None:
            signal.pthread_sigmask(signal.SIG_SETMASK, old)


def _result(fut: Any, task: Any) -> Any:
    try:
        return fut.result()
    except BrokenProcessPool:
        raise _killed(task) from None
    except OSError as e:
        raise _located(e, task) from None


def _run_here(fn: Callable, task: Any) -> Any:
    try:
        return fn(task)
    except OSError as e:
        raise _located(e, task) from None


def _located(e: OSError, task: Any) -> OSError:
    """A write that failed without naming its file (``write()`` on a full disk) names the task's
    output, so the one-line message can say where."""
    if e.filename is None:
        task = unwrap_task(task)
        where = getattr(task, "out_path", None)
        e.filename = where if isinstance(where, str) else describe_task(task)
    return e


#: Tasks kept in flight per pool process.
PREFETCH = 2
#: Whether this process started the fork server at start-up (the CLI does for inputs large enough
#: to use a pool); otherwise pools start on the first map with more than one task.
_PRESTARTED = False


class LocalExecutor(Executor):
    """A process pool over tasks: ``workers - 1`` pool processes plus the driver (``workers=1``
    runs everything in the driver, no pool).

    Built on ``concurrent.futures``: a worker that dies (killed, out of memory) fails the run with
    ``BrokenProcessPool`` instead of leaving it waiting forever."""

    def __init__(self, workers: int, preload: list[str] | None = None):
        self.workers = max(1, workers)
        self.preload = ["dcurate.runner.driver"] + [m for m in (preload or []) if m != "dcurate.runner.driver"]
        self._pool: ProcessPoolExecutor | None = None
        self._ready = threading.Event()
        self._start_error: BaseException | None = None
        self._starter: threading.Thread | None = None

    def start(self) -> None:
        """Start the pool's processes in the background (the fork server imports the stage
        modules, about a second); the driver runs tasks itself until they are ready. Only when
        the fork server was prestarted: a small job whose maps have one task never starts a pool."""
        if _PRESTARTED:
            self._start_now()

    def _start_now(self) -> None:
        if self.workers > 1 and self._starter is None:
            self._starter = threading.Thread(target=self._start_pool, daemon=True)
            self._starter.start()

    def _start_pool(self) -> None:
        try:
            pool = self._get_pool()
            pool.submit(int).result()  # forces the processes to start
        except BaseException as e:  # noqa: BLE001 - reported on first use
            self._start_error = e
        finally:
            self._ready.set()

    def _get_pool(self) -> ProcessPoolExecutor:
        if self._pool is None:
            # Single-threaded native libraries per worker: parallelism comes from processes.
            for var in ("POLARS_MAX_THREADS", "OMP_NUM_THREADS", "NUMBA_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
                os.environ.setdefault(var, "1")
            ctx = mp.get_context("forkserver")
            # Workers fork from a server that has already imported the run's stage modules and
            # run their warmup() (see dcurate.runner.warmup).
            prestart_fork_server(self.preload)
            self._pool = ProcessPoolExecutor(
                self.workers - 1, mp_context=ctx, initializer=_init_worker, initargs=(os.getpid(),)
            )
        return self._pool

    def imap_unordered(self, fn: Callable, items: list) -> Iterator[tuple[int, Any]]:
        """Yield (index, result) as tasks finish; the first failure cancels the rest.

        With N workers the pool has N - 1 processes and the driver is the N-th: it runs tasks
        itself while the pool works (and while the pool's processes are still starting). Pool
        processes always have the next task queued (a done-callback submits another)."""
        fn = self._staged(fn)
        if self.workers == 1 or (len(items) <= 1 and not faults.pool_only()):
            for i, x in enumerate(items):
                yield i, _run_here(fn, x)
            return
        self._start_now()
        todo = list(range(len(items)))
        todo.reverse()  # pop() takes the next index
        lock = threading.Lock()
        done_q: queue.SimpleQueue = queue.SimpleQueue()
        futures: list = []
        state: dict[str, Any] = {"outstanding": 0, "stop": False, "broken": None}

        def submit_next() -> None:
            pool = self._pool
            with lock:
                if state["stop"] or not todo or pool is None:  # no pool: the driver runs the rest
                    return
                i = todo.pop()
                state["outstanding"] += 1
            try:
                fut = pool.submit(fn, items[i])
            except BrokenProcessPool:  # the pool is broken: the driver reports it on the next result
                with lock:
                    state["outstanding"] -= 1
                    state["broken"] = i
                return
            futures.append(fut)
            fut.add_done_callback(functools.partial(on_done, i))

        def on_done(i: int, fut: Future) -> None:
            done_q.put((i, fut))
            if not fut.cancelled() and fut.exception() is None:
                submit_next()

        started = False
        pool_only = faults.pool_only()  # test-only: a worker must run the task it kills itself in
        if pool_only:
            self._ready.wait()
        try:
            while True:
                if not started and self._ready.is_set():
                    if isinstance(self._start_error, BrokenProcessPool):
                        raise RunError("a worker was killed (out of memory?) while starting; re-run to resume")
                    if self._start_error is not None:
                        raise self._start_error
                    started = True
                    # Two tasks in flight per pool process: the next one waits in the process's
                    # queue, so it never idles while this (busy, GIL-holding) driver gets round
                    # to handing it more work. With few tasks, one: a queued task could not be
                    # taken back by the driver at the end.
                    depth = PREFETCH if len(items) >= 4 * PREFETCH * self.workers else 1
                    for _ in range(len(items) if pool_only else depth * (self.workers - 1)):
                        submit_next()
                while not done_q.empty():
                    i, fut = done_q.get()
                    with lock:
                        state["outstanding"] -= 1
                    yield i, _result(fut, items[i])
                with lock:
                    if state["broken"] is not None:
                        raise _killed(items[state["broken"]])
                    mine = todo.pop() if todo else None
                if mine is None:
                    break
                yield mine, _run_here(fn, items[mine])
            while True:
                with lock:
                    if state["broken"] is not None:
                        raise _killed(items[state["broken"]])
                    if state["outstanding"] == 0:
                        break
                i, fut = done_q.get()
                with lock:
                    state["outstanding"] -= 1
                yield i, _result(fut, items[i])
        finally:
            state["stop"] = True
            for fut in futures:
                fut.cancel()

    def close(self) -> None:
        self._release_staging()
        if self._starter is not None:
            self._starter.join()
            self._starter = None
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None

    def terminate(self) -> None:
        self._release_staging()
        if self._starter is not None:
            self._starter.join(timeout=30)
            self._starter = None
        if self._pool is not None:
            procs = list((self._pool._processes or {}).values())  # no public kill in the API
            manager = getattr(self._pool, "_executor_manager_thread", None)
            self._pool.shutdown(wait=False, cancel_futures=True)
            for p in procs:
                if p.is_alive():
                    p.terminate()
            for p in procs:
                p.join(timeout=5)
            # Let the pool's manager thread finish closing its wake-up pipe: otherwise the
            # interpreter's exit hook may write to it as it closes (a traceback after the one line).
            if manager is not None:
                manager.join(timeout=5)
            self._pool = None


def make_executor(
    kind: str, workers: int, preload: list[str] | None = None, ray_address: str | None = None,
    storage_options: dict | None = None,
) -> Executor:
    """The executor of a run: ``local`` (the default, a process pool) or ``ray``."""
    if kind == "ray":
        from dcurate.runner.ray_executor import RayExecutor

        return RayExecutor(workers, address=ray_address, storage_options=storage_options)
    return LocalExecutor(workers, preload)
