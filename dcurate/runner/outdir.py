"""The output folder: what dcurate owns in OUT, the lock, the manifest, verify and clean.

OUT holds the data shards and one folder of dcurate's own, ``OUT/.dcurate/``: ``manifest.json``
(every output shard with its size, checksum and rows, and every data file dcurate ever wrote
there), ``stats.json``, ``lock``, the cluster table and other reports. The work folder (markers,
plans, intermediates) is ``OUT/.dcurate/work`` unless ``--workdir`` puts it elsewhere; the
manifest records where. A *data file* is any file under OUT with no path component starting
with ``_`` or ``.``.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import socket
import time
from pathlib import Path
from typing import Any

import xxhash

from dcurate.core.errors import EXIT_USAGE, DcurateError, RecipeError
from dcurate.io.atomic import is_temp_name, write_json

log = logging.getLogger("dcurate")

OWN = ".dcurate"
MANIFEST = "manifest.json"
WORK_TAG = ".dcurate-work"  # marks a folder as a dcurate work folder (clean removes only those)
WORK_ENTRIES = ("markers", "passes", "stages", "parts", "prereshard", "stdin", "plans")
CHECKSUM = "xxh3_64"


class NotAnOutput(DcurateError):
    """OUT is not a dcurate output folder, or its manifest is unreadable (verify/clean exit 2)."""

    exit_code = EXIT_USAGE


def own_dir(out: str | Path) -> Path:
    return Path(out) / OWN


def file_checksum(path: str) -> str:
    h = xxhash.xxh3_64()
    with open(path, "rb") as f:
        while True:
            b = f.read(1 << 20)
            if not b:
                break
            h.update(b)
    return h.hexdigest()


def data_files(out: str | Path) -> list[str]:
    """Data files under ``out`` (relative, sorted): no path component starts with '_' or '.'."""
    root = str(out)
    found: list[str] = []
    if not os.path.isdir(root):
        return found
    for dirpath, dirs, names in os.walk(root):
        dirs[:] = [d for d in dirs if not d.startswith(("_", "."))]
        for n in names:
            if n.startswith(("_", ".")):
                continue
            found.append(os.path.relpath(os.path.join(dirpath, n), root))
    return sorted(found)


def read_manifest(out: str | Path) -> dict[str, Any] | None:
    """The manifest of OUT, None when there is none; NotAnOutput when it is unreadable."""
    path = own_dir(out) / MANIFEST
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as e:
        raise NotAnOutput(f"{path}: cannot read the manifest ({e.strerror})") from None
    try:
        m = json.loads(data)
    except (ValueError, UnicodeDecodeError):
        raise NotAnOutput(f"{path}: the manifest is not valid JSON") from None
    if not isinstance(m, dict) or not isinstance(m.get("owned", []), list) or not isinstance(m.get("shards", []), list):
        raise NotAnOutput(f"{path}: not a dcurate manifest")
    return m


# -- lock ---------------------------------------------------------------------------------------


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class Lock:
    """An exclusive lock file (O_CREAT|O_EXCL) holding host, pid and start time."""

    def __init__(self, path: Path, what: str):
        self.path = path
        self.what = what
        self.held = False

    def acquire(self) -> None:
        os.makedirs(self.path.parent, exist_ok=True)
        info = {"host": socket.gethostname(), "pid": os.getpid(),
                "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        for _ in range(3):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                other = self._read()
                host, pid = other.get("host"), other.get("pid")
                if host == info["host"] and isinstance(pid, int) and not _alive(pid):
                    log.warning("taking over the lock %s left by dcurate pid %s (no longer running)", self.path, pid)
                    try:
                        os.remove(self.path)
                    except FileNotFoundError:
                        pass
                    continue
                raise DcurateError(
                    f"{self.what} is in use by another dcurate run (pid {pid} on {host}, started "
                    f"{other.get('started', '?')}; lock {self.path}): wait for it to finish"
                ) from None
            with os.fdopen(fd, "w") as f:
                f.write(json.dumps(info) + "\n")
                f.flush()
                os.fsync(f.fileno())
            self.held = True
            return
        raise DcurateError(f"cannot take the lock {self.path}")

    def _read(self) -> dict[str, Any]:
        try:
            d = json.loads(self.path.read_text())
            return d if isinstance(d, dict) else {}
        except (OSError, ValueError):
            return {}

    def release(self) -> None:
        if self.held:
            try:
                if self._read().get("pid") == os.getpid():
                    os.remove(self.path)
            except OSError:
                pass
            self.held = False


def sweep_temp_files(folders: list[Path]) -> None:
    """Remove dcurate's own temporary files ('.NAME.dctmp-PID') left by an interrupted run."""
    for root in folders:
        if not root.is_dir():
            continue
        for dirpath, _dirs, names in os.walk(root):
            for n in names:
                if is_temp_name(n):
                    try:
                        os.remove(os.path.join(dirpath, n))
                    except OSError:
                        pass


# -- the output folder of a run ----------------------------------------------------------------------


class OutDir:
    """OUT as one run sees it: what it owns, the manifest it writes, stale shards it removes."""

    def __init__(self, out: Path, workdir: Path | str, allow_foreign: bool, store: Any = None):
        self.out = out
        #: OUT on object storage: its staging mirror (runner/remote.py), whose ``remote`` files
        #: are data of OUT that the driver did not copy.
        self.store = store
        self.own = own_dir(out)
        self.workdir = workdir
        self.allow_foreign = allow_foreign
        self.prev = read_manifest(out) or {}
        prev_shards = [s.get("path") for s in self.prev.get("shards", []) if isinstance(s, dict)]
        self.owned: set[str] = {r for r in [*self.prev.get("owned", []), *prev_shards] if is_data_rel(r)}
        self.foreign: list[str] = []
        if not self.prev and (out / "_dcurate" / MANIFEST).is_file():
            # An output of dcurate before OUT/.dcurate existed: its data files (and stats.json)
            # are dcurate's; they are replaced like any earlier run's shards.
            self.owned = set(self._data_files())
            log.info("%s was written by an older dcurate (OUT/_dcurate); its shards are replaced, and "
                     "%s/_dcurate can be deleted", out, out)

    def check_foreign(self) -> None:
        """Refuse data files dcurate did not write (unless --allow-foreign)."""
        self.foreign = [p for p in self._data_files() if p not in self.owned]
        if self.foreign and not self.allow_foreign:
            more = f" and {len(self.foreign) - 1} more" if len(self.foreign) > 1 else ""
            raise RecipeError(
                f"{self.out} holds data files dcurate did not write ({self.foreign[0]}{more}); "
                "choose an empty or new output folder, or pass --allow-foreign to leave them there"
            )

    def _data_files(self) -> list[str]:
        """OUT's data files, also those held on the store only."""
        held = [r for r in (self.store.remote if self.store is not None else {}) if is_data_rel(r)]
        return sorted(set(data_files(self.out)) | set(held))

    def rel(self, path: str) -> str:
        return os.path.relpath(path, self.out)

    def claim(self, paths: list[str], manifest: dict[str, Any]) -> None:
        """Record ``paths`` as dcurate's own before writing them (so a crash leaves them known)."""
        new = {self.rel(p) for p in paths} - self.owned
        clash = sorted(new & set(self.foreign))
        if clash:
            raise RecipeError(f"{self.out / clash[0]}: this run would overwrite a data file dcurate did not write")
        if new or not (self.own / MANIFEST).exists():
            self.owned |= new
            self.write_manifest(dict(manifest, status="running", shards=[]))

    def write_manifest(self, manifest: dict[str, Any]) -> None:
        manifest = dict(manifest, owned=sorted(self.owned), foreign=self.foreign,
                        workdir=str(self.workdir))
        write_json(str(self.own / MANIFEST), manifest)

    def finish(self, shards: list[dict[str, Any]], manifest: dict[str, Any]) -> None:
        """Remove shards of earlier runs, then record exactly this run's shards."""
        current = {s["path"] for s in shards}
        root = self.out.resolve()
        for rel in sorted(self.owned - current):
            if not is_data_rel(rel):
                continue
            p = self.out / rel
            if p.is_file() and not p.is_symlink() and root in p.resolve().parents:
                p.unlink()
                _prune_empty(p.parent, self.out)
            elif self.store is not None and rel in self.store.remote:
                self.store.discard(rel)
        self.owned = set(current)
        self.write_manifest(dict(manifest, status="complete", shards=shards))


def is_data_rel(rel: object) -> bool:
    """A relative path to a data file under OUT (never absolute, never through '..')."""
    if not isinstance(rel, str) or not rel or os.path.isabs(rel):
        return False
    return not any(x.startswith(("_", ".")) for x in Path(rel).parts)


def _prune_empty(folder: Path, stop: Path) -> None:
    while folder != stop and stop in folder.parents:
        try:
            folder.rmdir()
        except OSError:
            return
        folder = folder.parent


# -- verify and clean ------------------------------------------------------------------------------


def verify(out: str | Path) -> list[str]:
    """Problems with OUT (empty when complete and consistent). NotAnOutput when OUT is not a
    dcurate output or its manifest is unreadable."""
    out = Path(out)
    if not out.is_dir():
        raise NotAnOutput(f"{out}: no such folder")
    m = read_manifest(out)
    if m is None:
        raise NotAnOutput(f"{out}: not a dcurate output (no {OWN}/{MANIFEST})")
    problems = []
    if m.get("status") != "complete":
        problems.append(f"{out}: the last run did not complete (re-run it to finish)")
    shards = m.get("shards", [])
    listed = set()
    rows = 0
    for s in shards:
        try:
            rel, size, checksum, n = s["path"], int(s["bytes"]), s["checksum"], int(s["rows"])
        except (KeyError, TypeError, ValueError):
            raise NotAnOutput(f"{own_dir(out) / MANIFEST}: malformed shard entry") from None
        listed.add(rel)
        rows += n
        p = out / rel
        if not p.is_file():
            problems.append(f"{p}: missing (listed in the manifest)")
            continue
        if p.stat().st_size != size:
            problems.append(f"{p}: size {p.stat().st_size} differs from the manifest's {size}")
        elif file_checksum(str(p)) != checksum:
            problems.append(f"{p}: checksum differs from the manifest's (the file changed)")
    allowed = set(m.get("foreign", []))
    for rel in data_files(out):
        if rel in listed or rel in allowed:
            continue
        what = "stale shard of an earlier run" if rel in set(m.get("owned", [])) else "data file dcurate did not write"
        problems.append(f"{out / rel}: {what}")
    stats_path = own_dir(out) / "stats.json"
    try:
        stats = json.loads(stats_path.read_text())
        if int(stats.get("docs_out", -1)) != rows:
            problems.append(f"{stats_path}: docs_out {stats.get('docs_out')} differs from the manifest's {rows} rows")
    except (OSError, ValueError, AttributeError, TypeError):
        problems.append(f"{stats_path}: missing or unreadable")
    return problems


def clean(out: str | Path) -> list[str]:
    """Remove the work folder's entries (markers, plans, intermediates) of OUT; return what was
    removed. Only folders dcurate created (tagged) are touched."""
    out = Path(out)
    m = read_manifest(out)
    if m is None:
        raise NotAnOutput(f"{out}: not a dcurate output (no {OWN}/{MANIFEST})")
    work = Path(m.get("workdir") or (own_dir(out) / "work"))
    removed: list[str] = []
    if not (work / WORK_TAG).is_file():
        return removed
    for name in WORK_ENTRIES:
        p = work / name
        if p.is_dir():
            shutil.rmtree(p)
            removed.append(str(p))
    return removed
