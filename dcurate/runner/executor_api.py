"""The interface every executor implements. The driver only talks to this: tasks are plain
picklable ``fn(item)`` calls, so the local pool and Ray run the same code and give the same
results, whatever the number of workers."""

from __future__ import annotations

import abc
import functools
from collections.abc import Callable, Iterator
from typing import Any


class Executor(abc.ABC):
    """Runs ``fn`` over a list of items.

    ``imap_unordered`` yields ``(index, result)`` as tasks finish (the driver advances progress
    bars and writes nothing that depends on the order); the first failure raises in the caller and
    cancels every task not yet finished. ``terminate`` stops everything at once (Ctrl-C, errors);
    ``close`` releases resources after a successful run."""

    #: Processes (or Ray CPUs) that run tasks; planners size work by it.
    workers: int

    def start(self) -> None:  # noqa: B027 - optional hook
        """Start workers in the background while the driver prepares (optional)."""

    #: OUT / the work folder on object storage: how tasks reach the staging folders (or None).
    staging: Any = None

    def attach_staging(self, mirrors: list[Any], no_pull: list[str]) -> None:
        """OUT or the work folder is on object storage (staged by the driver, runner/remote.py):
        tasks copy from the store the files the driver keeps there only, and tasks on nodes
        without the driver's disk work through the store (runner/nodesync.py)."""
        from dcurate.runner.nodesync import NodeStaging

        self._mirrors = list(mirrors)
        self.staging = NodeStaging.for_mirrors(self._mirrors, no_pull)

    def _staged(self, fn: Callable) -> Callable:
        """``fn`` as it must run when OUT or the work folder is on object storage."""
        if self.staging is None:
            return fn
        from dcurate.runner.nodesync import run_on_node

        self.staging.lazy = any(m.remote for m in self._mirrors)

        return functools.partial(run_on_node, self.staging, fn)

    def _release_staging(self) -> None:
        if self.staging is not None:
            self.staging.close()
            self.staging = None

    @abc.abstractmethod
    def imap_unordered(self, fn: Callable, items: list) -> Iterator[tuple[int, Any]]: ...

    def map(self, fn: Callable, items: list) -> list:
        """Results in item order."""
        out: list[Any] = [None] * len(items)
        for i, r in self.imap_unordered(fn, items):
            out[i] = r
        return out

    @abc.abstractmethod
    def terminate(self) -> None: ...

    @abc.abstractmethod
    def close(self) -> None: ...


def unwrap_task(task: Any) -> Any:
    """The task itself from the (slot, task) pairs that progress tracking hands the executor."""
    if isinstance(task, tuple) and len(task) == 2 and isinstance(task[0], int):
        return task[1]
    return task


def describe_task(task: Any) -> str:
    """What a task works on, for error messages: its input file (and piece), else its kind."""
    task = unwrap_task(task)
    for attr in ("source", "piece", "shard"):
        obj = getattr(task, attr, None)
        if obj is None:
            continue
        piece = getattr(obj, "piece", obj)
        shard = getattr(piece, "shard", piece)
        path = getattr(shard, "path", None)
        if path is not None:
            n = getattr(piece, "n_pieces", 1)
            return f"{path} (piece {piece.index + 1} of {n})" if n > 1 else str(path)
    for attr in ("path", "out_path", "marker"):
        v = getattr(task, attr, None)
        if isinstance(v, str):
            return v
    return f"a {type(task).__name__}"
