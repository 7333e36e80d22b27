"""OUT and the work folder on object storage: a staging folder mirrored to the store.

Design. A run whose OUT or ``--workdir`` is a URI (``s3://bucket/prefix``) works in a local
*staging folder* per URI, ``$DCURATE_STAGING`` (default: the system temp folder) ``/dcurate-staging/
<hash of the URI>``. The path depends only on the URI, so the paths that markers and plans record
are the same on every run. At the start, once the run holds the store's lock, the staging folder is
emptied and filled from the store (``pull``): the store is the only state that survives the run.
The runner, the tasks and the stages then use local files exactly as on local disk (outputs stay
byte-identical, no stage needs to know about storage), and the driver publishes to the store:

* each task's outputs as soon as the task reports, then the task's marker (so a marker on the
  store always names outputs that are there: resume after kill -9 works from the store);
* after every phase (stage preparation, scan rounds, reduces, passes, finish) every file that is
  new or changed, data first, then markers and plans, then ``.dcurate/`` (manifest last);
  files removed locally (stale shards, superseded work entries, ``--force``) are deleted there.

Every object appears complete or not at all (:func:`dcurate.io.storage.publish`). The lock is an
object created with a conditional write (:class:`RemoteLock`).

Why not stages reading and writing the store directly: stages keep their scratch with ``np.save``,
``open()`` and memory maps under their work folder, and the reduce phases fan out through the
executor; a storage-aware file layer in every stage is the invasive route. The staging folder keeps
all of that unchanged, at a cost stated plainly: tasks must see the driver's staging folder, i.e.
run on the driver's node (the local pool, or a Ray instance on one machine: ``RAY_ADDRESS`` empty).
Inputs and targets are read from the store directly by the tasks, wherever they run.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import socket
import tempfile
import time
from pathlib import Path
from typing import Any

import pyarrow.fs as pafs

from dcurate.core.errors import DcurateError
from dcurate.io import storage
from dcurate.io.atomic import is_temp_name
from dcurate.runner.outdir import _alive, is_data_rel

log = logging.getLogger("dcurate")

#: Names never mirrored: the locks (the store has its own) and temporary files of writers
#: (dcurate's '.NAME.dctmp-PID' and the stages' 'NAME.tmp', 'NAME.tmp.npy', ...).
_SKIP = {".dcurate-lock", "lock"}
_STAGE_TMP = re.compile(r"\.tmp(\.[A-Za-z0-9]+)?$")
#: Modification time (ns) of a local copy of a file known to be on the store (downloaded by a task
#: through runner/nodesync.py, or published by one): never published again.
SYNCED_NS = 1_000_000_000


def staging_root() -> Path:
    return Path(os.environ.get("DCURATE_STAGING") or tempfile.gettempdir()) / "dcurate-staging"


def staging_dir(uri: str) -> Path:
    """The local staging folder of a folder URI (a function of the URI only)."""
    key = hashlib.sha256(uri.rstrip("/").encode()).hexdigest()[:20]
    return staging_root() / key


#: Files the driver copies from the store: the small ones (markers, plans, per-piece summaries), and
#: always the markers, plans and OUT/.dcurate files it reads itself. Larger ones (shards, scan
#: files) it only records, and copies when it reads them (runner/nodesync.py).
DRIVER_COPY_MAX = int(os.environ.get("DCURATE_DRIVER_COPY_MAX", str(1 << 20)))
_ALWAYS_COPY = (".done", ".plan", ".json", ".dcurate-work")


def driver_copies(rel: str, size: int) -> bool:
    """Whether the driver copies this file of the store into its staging folder right away."""
    return size <= DRIVER_COPY_MAX or rel.endswith(_ALWAYS_COPY) or rel.startswith(".dcurate/")


def _skip_name(rel: str) -> bool:
    """Names never mirrored: locks and temporary files of writers."""
    name = rel.rsplit("/", 1)[-1]
    return name in _SKIP or is_temp_name(name) or bool(_STAGE_TMP.search(name))


def _order(rel: str) -> tuple[int, str]:
    """Publishing order: data and work files, then markers and plans, then .dcurate/ (manifest last)."""
    parts = rel.split("/")
    if parts[0] == ".dcurate" and "work" not in parts[1:2]:
        return (3 if parts[-1] == "manifest.json" else 2), rel
    if parts[-1].endswith((".done", ".plan")) or parts[-1] == ".dcurate-work":
        return 1, rel
    return 0, rel


class Mirror:
    """A local folder mirrored to a folder URI (see the module's docstring)."""

    def __init__(self, uri: str, local: Path | None = None):
        self.uri = uri.rstrip("/")
        self.local = local or staging_dir(self.uri)
        self.state: dict[str, tuple[int, int]] = {}  # rel -> (size, mtime_ns) as last published/pulled
        #: rel -> size of files on the store that the driver holds no copy of (written by tasks on
        #: other nodes; see runner/nodesync.py). Their folders exist here, empty of them.
        self.remote: dict[str, int] = {}

    def _remote(self, rel: str) -> str:
        return f"{self.uri}/{rel}"

    def rel(self, path: str | os.PathLike) -> str | None:
        """``path`` relative to the staging folder, None when outside it."""
        p = os.path.abspath(str(path))
        root = str(self.local)
        if not p.startswith(root + os.sep):
            return None
        return os.path.relpath(p, root).replace(os.sep, "/")

    @staticmethod
    def _skip(rel: str) -> bool:
        return _skip_name(rel)

    def _stat(self, rel: str) -> tuple[int, int] | None:
        try:
            st = os.stat(self.local / rel)
        except OSError:
            return None
        return st.st_size, st.st_mtime_ns

    def pull(self, skip_prefix: str | None = None, lazy: bool = False) -> int:
        """Empty the staging folder and copy every object of the URI's folder into it (but those
        whose relative name starts with ``skip_prefix``). ``lazy``: copy only what the driver
        reads itself (:func:`driver_copies`) and record the others with their sizes (a run
        resumes from the store without downloading the intermediates it does not read)."""
        shutil.rmtree(self.local, ignore_errors=True)
        os.makedirs(self.local, exist_ok=True)
        self.state = {}
        self.remote = {}
        n = nbytes = 0
        fs, inner = storage.filesystem(self.uri)
        infos = fs.get_file_info(pafs.FileSelector(inner, recursive=True, allow_not_found=True))
        for info in sorted(infos, key=lambda i: i.path):
            if info.type != pafs.FileType.File:
                continue
            rel = info.path[len(inner):].lstrip("/")
            if not rel or self._skip(rel) or (skip_prefix and rel.startswith(skip_prefix)):
                continue
            if lazy and not driver_copies(rel, int(info.size)):
                self.record(rel, int(info.size))
                continue
            dest = self.local / rel
            os.makedirs(dest.parent, exist_ok=True)
            with storage.open_read(self._remote(rel)) as src, open(dest, "wb") as out:
                shutil.copyfileobj(src, out, 1 << 22)
            st = self._stat(rel)
            assert st is not None
            self.state[rel] = st
            n += 1
            nbytes += st[0]
        if self.remote or n:
            log.info("%s: copied %d objects (%s bytes) from the store; %d more (%s bytes) stay there until read",
                     self.uri, n, f"{nbytes:,}", len(self.remote), f"{sum(self.remote.values()):,}")
        return n

    def discard(self, rel: str) -> None:
        """Delete a file held on the store only."""
        if self.remote.pop(rel, None) is not None:
            storage.remove(self._remote(rel))

    # -- files on the store only (written on other nodes) ------------------------------------
    def record(self, rel: str, size: int) -> None:
        """``rel`` is on the store (``size`` bytes) and the driver keeps no copy of it."""
        try:
            os.remove(self.local / rel)  # an older copy of it is stale
        except OSError:
            pass
        os.makedirs((self.local / rel).parent, exist_ok=True)
        self.state.pop(rel, None)
        self.remote[rel] = size

    def size_of(self, path: str | os.PathLike) -> int | None:
        """The size of a file of this folder, held here or on the store only; None if neither."""
        try:
            return os.path.getsize(path)
        except OSError:
            rel = self.rel(path)
            return self.remote.get(rel) if rel is not None else None

    def fetch(self, path: str | os.PathLike) -> int:
        """Copy from the store the files recorded as there only: ``path`` itself, or the files
        under it when it is a folder. Returns how many were copied."""
        rel = self.rel(path)
        if rel is None:
            if os.path.abspath(str(path)) != str(self.local):
                return 0
            rel = ""
        names = [r for r in self.remote if r == rel or not rel or r.startswith(rel + "/")]
        for r in sorted(names):
            dest = self.local / r
            dest.parent.mkdir(parents=True, exist_ok=True)
            tmp = dest.parent / f".{dest.name}.dctmp-{os.getpid()}"
            with storage.open_read(self._remote(r)) as src, open(tmp, "wb") as out:
                shutil.copyfileobj(src, out, 1 << 22)
            os.replace(tmp, dest)
            st = self._stat(r)
            assert st is not None
            self.state[r] = st
            del self.remote[r]
        return len(names)

    def push(self, paths: list[str]) -> None:
        """Publish these files (in this order) when they lie in the staging folder and changed."""
        for path in paths:
            rel = self.rel(path)
            if rel is None or self._skip(rel):
                continue
            st = self._stat(rel)
            if st is None or self.state.get(rel) == st:
                continue
            with open(self.local / rel, "rb") as src, storage.publish(self._remote(rel)) as out:
                shutil.copyfileobj(src, out, 1 << 22)
            self.state[rel] = st

    def sync(self, under: Path | None = None) -> None:
        """Publish every new or changed file (data, then markers and plans, then .dcurate/) and
        delete from the store the files removed from the staging folder. With ``under`` (a folder
        in the staging folder): only the new or changed files there, markers and plans left out,
        nothing deleted (what a finished task may have written besides its listed outputs)."""
        now: dict[str, tuple[int, int]] = {}
        top = under if under is not None else self.local
        if under is not None and self.rel(under) is None:
            return
        for dirpath, _dirs, names in os.walk(top):
            for n in names:
                rel = os.path.relpath(os.path.join(dirpath, n), self.local).replace(os.sep, "/")
                if self._skip(rel):
                    continue
                st = self._stat(rel)
                if st is None:
                    continue
                if st[1] == SYNCED_NS and rel not in self.state:  # copied here from the store by a task
                    self.state[rel] = st
                self.remote.pop(rel, None)  # the copy here is the file (copied, or written since)
                now[rel] = st
        changed = sorted((r for r, st in now.items() if self.state.get(r) != st), key=_order)
        if under is not None:
            self.push([str(self.local / r) for r in changed if _order(r)[0] == 0])
            return
        self.push([str(self.local / r) for r in changed])
        for rel in sorted(set(self.state) - set(now)):
            storage.remove(self._remote(rel))
            del self.state[rel]
        for rel in sorted(self.remote):  # on the store only: gone with its folder here
            if not (self.local / rel).parent.is_dir():
                storage.remove(self._remote(rel))
                del self.remote[rel]

    def close(self) -> None:
        shutil.rmtree(self.local, ignore_errors=True)


def mirrored_size(mirrors: list[Mirror], path: str) -> int | None:
    """A file's size, also of a file kept on the store only (written on another node)."""
    for m in mirrors:
        if m.rel(path) is not None:
            return m.size_of(path)
    try:
        return os.path.getsize(path)
    except OSError:
        return None


def fetch_outputs(mirrors: list[Mirror], out_dir: Path, workdir: Path) -> None:
    """Copy from the store OUT's data shards and the --rejected files that only the store holds
    (written on other nodes), for what reads them at the end of a run (the report)."""
    for m in mirrors:
        if m.local == workdir or not m.remote:
            continue
        for rel in [r for r in m.remote if m.local != out_dir or is_data_rel(r)]:
            m.fetch(m.local / rel)


class RemoteLock:
    """The lock of a folder on the store: an object created only if absent (``If-None-Match: *``),
    holding host, pid and start time. A lock left by a dead run on this host is taken over."""

    def __init__(self, uri: str, what: str):
        self.uri = uri
        self.what = what
        self.held = False
        self.info = {"host": socket.gethostname(), "pid": os.getpid(),
                     "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}

    def _read(self) -> dict[str, Any]:
        try:
            d = json.loads(storage.read_bytes(self.uri))
            return d if isinstance(d, dict) else {}
        except (DcurateError, ValueError):
            return {}

    def acquire(self) -> None:
        data = (json.dumps(self.info) + "\n").encode()
        for _ in range(3):
            if storage.create_exclusive(self.uri, data):
                self.held = True
                return
            other = self._read()
            host, pid = other.get("host"), other.get("pid")
            if host == self.info["host"] and isinstance(pid, int) and not _alive(pid):
                log.warning("taking over the lock %s left by dcurate pid %s (no longer running)", self.uri, pid)
                storage.remove(self.uri)
                continue
            if not other and not storage.exists(self.uri):
                continue  # released in between
            raise DcurateError(
                f"{self.what} is in use by another dcurate run (pid {pid} on {host}, started "
                f"{other.get('started', '?')}; lock {self.uri}): wait for it to finish, or delete the "
                "lock object if that run is gone"
            )
        raise DcurateError(f"cannot take the lock {self.uri}")

    def release(self) -> None:
        if self.held:
            try:
                if self._read().get("pid") == os.getpid():
                    storage.remove(self.uri)
            except DcurateError:
                pass
            self.held = False
