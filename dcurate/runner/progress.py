"""Progress of a run's passes, counted in documents while tasks are still running.

Workers report rows as they read them: each task of a pass gets one int64 slot in a small file
that every process maps (``numpy.memmap``), and :func:`tick` adds to the current task's slot (one
writer per slot, so no locks; works with the fork-server pool, whose processes are not children
of the driver's objects). A thread in the driver sums the slots:

* on a terminal (and ``progress`` on): a tqdm bar counting documents;
* elsewhere (CI, cluster logs): a log line when a pass starts, when it ends and every
  :data:`INTERVAL` seconds in between, e.g.
  ``pass 2/3 dedup: 12,345/21,574 docs (57%), 3,100 docs/s, ETA 0:04``.

``-q`` (log level above INFO) silences both. Tasks that do not read documents (merges, reshards)
count in tasks only.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger("dcurate")

#: Seconds between two progress lines outside a terminal (DCURATE_PROGRESS_INTERVAL overrides).
INTERVAL = 10.0

# -- worker side -----------------------------------------------------------------------------------

_SLOT: tuple[np.ndarray, int] | None = None
_MAPS: dict[str, np.ndarray] = {}


def tick(rows: int) -> None:
    """Count ``rows`` documents read by the task running in this process (no-op outside one)."""
    if _SLOT is not None:
        arr, i = _SLOT
        arr[i] += rows


def _open(path: str) -> np.ndarray | None:
    arr = _MAPS.get(path)
    if arr is None:
        try:
            arr = np.memmap(path, dtype=np.int64, mode="r+")
        except (OSError, ValueError):  # e.g. a Ray node that cannot see the driver's work folder
            return None
        if len(_MAPS) > 8:
            _MAPS.clear()
        _MAPS[path] = arr
    return arr


class Tracked:
    """A task function wrapped to report its rows in slot ``item[0]`` of the file at ``path``."""

    def __init__(self, fn: Callable[[Any], Any], path: str):
        self.fn = fn
        self.path = path

    def __call__(self, item: tuple[int, Any]) -> Any:
        global _SLOT
        slot, task = item
        arr = _open(self.path)
        prev = _SLOT
        _SLOT = (arr, slot) if arr is not None else None
        try:
            return self.fn(task)
        finally:
            _SLOT = prev


# -- driver side -----------------------------------------------------------------------------------


def task_rows(task: Any) -> int | None:
    """Documents the task will read, when known without reading (Parquet metadata), else None."""
    src = getattr(task, "source", None)
    piece = getattr(src, "piece", None)
    if piece is None:
        return None
    if piece.limit is not None:
        return int(piece.limit)
    if piece.shard.fmt != "parquet":
        return None
    try:
        import pyarrow.parquet as pq

        from dcurate.io.storage import parquet_source

        md = pq.ParquetFile(parquet_source(piece.shard.path)).metadata
    except Exception:  # noqa: BLE001 - an estimate only; the real read reports errors
        return None
    groups = piece.row_groups if piece.row_groups is not None else range(md.num_row_groups)
    return int(sum(md.row_group(g).num_rows for g in groups))


def fmt_duration(seconds: float) -> str:
    s = int(round(seconds))
    h, rem = divmod(s, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def progress_line(desc: str, docs: int, total: int | None, seconds: float, tasks_done: int, tasks: int) -> str:
    """``pass 2/3 dedup: 12,345/21,574 docs (57%), 3,100 docs/s, ETA 0:04`` (without a known
    total: documents, rate and tasks done)."""
    rate = docs / seconds if seconds > 0 else 0.0
    if total:
        pct = min(100, int(100 * docs / total))
        eta = f", ETA {fmt_duration((total - docs) / rate)}" if rate > 0 and docs < total else ""
        return f"{desc}: {docs:,}/{total:,} docs ({pct}%), {rate:,.0f} docs/s{eta}"
    return f"{desc}: {docs:,} docs, {rate:,.0f} docs/s, {tasks_done}/{tasks} tasks"


def _interval() -> float:
    try:
        return float(os.environ.get("DCURATE_PROGRESS_INTERVAL", INTERVAL))
    except ValueError:
        return INTERVAL


class PassProgress:
    """Progress of one call of the runner's task loop (a pass, a scan round, merges...)."""

    def __init__(self, desc: str, tasks: list, skipped: int, workdir: Path, enabled: bool = True):
        self.desc = desc
        self.n = len(tasks)
        self.skipped = skipped
        self.done = 0
        self.finished_rows = 0
        self.t0 = time.perf_counter()
        self.mode = "off"
        if enabled and log.isEnabledFor(logging.INFO) and self.n:
            self.mode = "bar" if sys.stderr.isatty() else "lines"
        self.path: str | None = None
        self.slots: np.ndarray | None = None
        self.total: int | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._bar: Any = None
        self.reads = False
        if self.mode == "off":
            return
        counts = [task_rows(t) for t in tasks]
        reads = any(getattr(t, "source", None) is not None for t in tasks)
        self.total = sum(c for c in counts if c is not None) if reads and all(c is not None for c in counts) else None
        if reads:
            d = Path(workdir) / "progress"
            d.mkdir(parents=True, exist_ok=True)
            self.path = str(d / f"{os.getpid()}-{id(self):x}.bin")
            with open(self.path, "wb") as f:
                f.write(b"\x00" * (8 * self.n))
            self.slots = np.memmap(self.path, dtype=np.int64, mode="r")
        self.reads = reads
        if self.mode == "bar":
            from tqdm import tqdm

            if reads:
                self._bar = tqdm(total=self.total, desc=desc, unit="doc", unit_scale=True, file=sys.stderr,
                                 leave=False, dynamic_ncols=True)
            else:
                self._bar = tqdm(total=self.n, desc=desc, unit="task", file=sys.stderr, leave=False)
        else:
            extra = f", {self.total:,} docs" if self.total else ""
            resumed = f" ({skipped} already done)" if skipped else ""
            log.info("%s: started, %d task(s)%s%s", desc, self.n, resumed, extra)
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()

    def wrap(self, fn: Callable[[Any], Any], tasks: list) -> tuple[Callable[[Any], Any], list]:
        """The (function, items) to hand the executor: tasks that report their rows."""
        if self.path is None:
            return fn, tasks
        return Tracked(fn, self.path), list(enumerate(tasks))

    def docs(self) -> int:
        """Documents read so far: the workers' live counts, or at least the finished tasks' rows
        (where workers cannot reach the counter file, e.g. Ray on other nodes)."""
        live = int(self.slots.sum()) if self.slots is not None else 0
        return max(live, self.finished_rows)

    def task_done(self, result: Any = None) -> None:
        self.done += 1
        self.finished_rows += int(getattr(result, "rows_read", 0) or 0)
        if self._bar is not None and not self.reads:
            self._bar.update(1)

    def _watch(self) -> None:
        every = 0.5 if self.mode == "bar" else _interval()
        while not self._stop.wait(every):
            if self.mode == "bar":
                if self.reads:
                    self._bar.n = self.docs()
                    self._bar.set_postfix_str(f"{self.done}/{self.n} tasks", refresh=False)
                    self._bar.refresh()
            else:
                log.info("%s", self.line())

    def line(self) -> str:
        if not self.reads:
            return f"{self.desc}: {self.done}/{self.n} tasks"
        return progress_line(self.desc, self.docs(), self.total, time.perf_counter() - self.t0, self.done, self.n)

    def close(self, ok: bool = True) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        if self._bar is not None:
            self._bar.close()
        elif self.mode == "lines" and ok:
            secs = time.perf_counter() - self.t0
            docs = self.docs() if self.reads else 0
            if docs:
                rate = docs / secs if secs > 0 else 0.0
                log.info("%s: done, %s docs in %.1f s (%s docs/s)", self.desc, f"{docs:,}", secs, f"{rate:,.0f}")
            else:
                log.info("%s: done, %d task(s) in %.1f s", self.desc, self.n, secs)
        if self.path is not None:
            self.slots = None
            try:
                os.unlink(self.path)
            except OSError:
                pass
