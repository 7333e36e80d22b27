"""Tasks on nodes that do not share the driver's disk: the store is the only channel.

A run whose OUT or ``--workdir`` is on object storage works in local staging folders mirrored to
the store (:mod:`dcurate.runner.remote`). Tasks name their files by staging paths, and a staging
path is a function of the folder's URI only, so the same path is valid on every node. On the
driver's node (the local pool, a private Ray instance, or a Ray node that happens to share the
driver's disk) tasks find the files there. On any other node :func:`run_on_node` makes the node's
own staging folder hold what the task needs, then hands back what it wrote:

1. **prefetch**: every staging path the task object mentions (its input piece, plan, the files a
   reduce fan-out names) is downloaded from the store; a mentioned folder (a stage's work folder)
   brings its files, except the per-piece files (``NNNNNN-NNNN...``) of other pieces;
2. the task runs; a file it still misses (it raised naming a staging path that the store has) is
   downloaded and the task run again (tasks write their outputs under final names only when
   complete, so a second run is safe);
3. **push**: every file of the node's staging folders that is not known to be on the store is
   published (data first, then markers and plans, the order of the driver's own mirror), and the
   files the task deleted among those it read are deleted from the store;
4. the result goes back wrapped with the list of files pushed and deleted, and the driver copies
   them into its own staging folder (:meth:`NodeStaging.absorb`), so the driver's view stays whole.

Which node is which: the driver writes a random token beside each staging folder; a worker that
reads the same token shares the driver's disk and runs the task as it is. A file known to be on the
store carries the modification time :data:`SYNCED_NS` on the node (downloaded or published by any
task of the node), so concurrent tasks on one node never publish a file twice.
"""

from __future__ import annotations

import dataclasses
import fcntl
import logging
import os
import re
import secrets
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow.fs as pafs

from dcurate.io import storage
from dcurate.runner.remote import SYNCED_NS, _order, _skip_name, driver_copies

log = logging.getLogger("dcurate")

#: Kinds of files (:func:`_kind`) the driver's own steps read: copied as soon as a task publishes one.
_DRIVER_READS: set[str] = set()
#: A path component naming one piece's work (``000003-0000``, ``000003-0000.keys.npz``).
_PIECE = re.compile(r"^\d{6}-\d{4}")
#: A numbered part of a piece's work (``c00003``: its fourth chunk).
_NUMBERED = re.compile(r"^([a-z]*)\d{3,}$")
_PATH_IN_TEXT = re.compile(r"(/[^\s'\"\],)]+)")
#: Downloads of files a task still missed before giving up.
MAX_LATE_PULLS = 64


@dataclass
class NodeOutcome:
    """A task's result from a node without the driver's disk, with the files it changed."""

    result: Any
    pushed: list[tuple[int, str, int]] = field(default_factory=list)  # (root, relative name, size)
    deleted: list[tuple[int, str]] = field(default_factory=list)


@dataclass
class NodeStaging:
    """The driver's staging folders as tasks on other nodes see them (shipped with every task)."""

    roots: list[tuple[str, str]]  # (folder URI, local staging folder) per mirrored folder
    token: str
    #: Folders never downloaded as a whole (OUT and the work folder themselves).
    no_pull: tuple[str, ...] = ()
    #: The driver keeps files on the store only (set at each dispatch): tasks on its own node then
    #: copy what they name first, as tasks on other nodes do (code may test whether a file exists).
    lazy: bool = False
    #: Driver side: [files, bytes] published by tasks on other nodes, and those the driver copied.
    seen: list[int] = field(default_factory=lambda: [0, 0])
    copied: list[int] = field(default_factory=lambda: [0, 0])

    @classmethod
    def for_mirrors(cls, mirrors: list[Any], no_pull: list[str]) -> NodeStaging:
        token = secrets.token_hex(16)
        roots = [(m.uri, str(m.local)) for m in mirrors]
        for _uri, local in roots:
            _write_token(local, token)
        return cls(roots, token, tuple(os.path.abspath(p) for p in no_pull))

    # -- which node ---------------------------------------------------------------------------
    def shared(self) -> bool:
        """True on a node that sees the driver's staging folders (read the driver's token)."""
        try:
            with open(_token_path(self.roots[0][1])) as f:
                return f.read().strip() == self.token
        except OSError:
            return False

    def close(self) -> None:
        if self.seen[0]:
            log.info("tasks on other nodes published %d files (%s bytes); the driver copied %d of them "
                     "(%s bytes), the rest stays on the store only", self.seen[0], f"{self.seen[1]:,}",
                     self.copied[0], f"{self.copied[1]:,}")
        for _uri, local in self.roots:
            try:
                os.remove(_token_path(local))
            except OSError:
                pass

    # -- worker side --------------------------------------------------------------------------
    def ensure_fresh(self) -> None:
        """The node's staging folders hold this run's files only: the first task of a run on a
        node empties what an earlier (killed, or differently configured) run left there, so none
        of it is published into this run's folders."""
        for _uri, local in self.roots:
            mark = local.rstrip("/") + ".run"
            try:
                with open(mark) as f:
                    if f.read().strip() == self.token:
                        continue
            except OSError:
                pass
            os.makedirs(os.path.dirname(mark), exist_ok=True)
            with open(local.rstrip("/") + ".lock", "a") as lk:
                fcntl.flock(lk, fcntl.LOCK_EX)  # one task of the node empties it, the others wait
                try:
                    with open(mark) as f:
                        if f.read().strip() == self.token:
                            continue
                except OSError:
                    pass
                shutil.rmtree(local, ignore_errors=True)
                os.makedirs(local, exist_ok=True)
                _write_token(mark[: -len(".run")], self.token, suffix=".run")

    def _root_of(self, path: str) -> int | None:
        for i, (_uri, local) in enumerate(self.roots):
            if path == local or path.startswith(local + os.sep):
                return i
        return None

    def _pull_file(self, root: int, rel: str, size: int | None = None) -> bool:
        """Download one object into the node's staging folder (unless there at that size)."""
        uri, local = self.roots[root]
        dest = os.path.join(local, rel)
        try:
            st = os.stat(dest)
            if size is None or st.st_size == size:
                return False
        except OSError:
            pass
        os.makedirs(os.path.dirname(dest), exist_ok=True)
        tmp = f"{os.path.dirname(dest)}/.{os.path.basename(dest)}.dctmp-{os.getpid()}"
        try:
            with storage.open_read(f"{uri}/{rel}") as src, open(tmp, "wb") as out:
                shutil.copyfileobj(src, out, 1 << 22)
            os.utime(tmp, ns=(SYNCED_NS, SYNCED_NS))
            os.replace(tmp, dest)
        finally:
            if os.path.exists(tmp):
                os.remove(tmp)
        return True

    def _pull_path(self, path: str, key: str | None, need: set[tuple[int, str]]) -> int:
        """Download the object at ``path``, or the files under it when it is a folder (other
        pieces' files left out). Adds what the task needs to ``need``; returns the downloads."""
        root = self._root_of(path)
        if root is None or path in self.no_pull or path == self.roots[root][1]:
            return 0
        uri, local = self.roots[root]
        rel = os.path.relpath(path, local).replace(os.sep, "/")
        fs, inner = storage.filesystem(f"{uri}/{rel}")
        info = fs.get_file_info(inner)
        if info.type == pafs.FileType.File:
            need.add((root, rel))
            return int(self._pull_file(root, rel, info.size))
        if info.type != pafs.FileType.Directory:
            return 0
        n = 0
        for f in fs.get_file_info(pafs.FileSelector(inner, recursive=True, allow_not_found=True)):
            if f.type != pafs.FileType.File:
                continue
            below = f.path[len(inner):].lstrip("/")
            if _skip_name(below) or not _wanted(below, key):
                continue
            need.add((root, f"{rel}/{below}"))
            n += self._pull_file(root, f"{rel}/{below}", f.size)
        return n

    def prefetch(self, task: Any) -> set[tuple[int, str]]:
        """Download what the task names; the set of (root, name) it reads."""
        mentioned: set[str] = set()
        _mentions(task, [local for _u, local in self.roots], mentioned, 0)
        key = _piece_key(task)
        need: set[tuple[int, str]] = set()
        n = sum(self._pull_path(p, key, need) for p in sorted(mentioned))
        log.debug("node prefetch: %d files downloaded for piece %s", n, key)
        return need

    def push(self, need: set[tuple[int, str]]) -> NodeOutcome:
        """Publish the node's files not yet on the store; delete the task's inputs it removed."""
        out = NodeOutcome(None)
        todo: list[tuple[tuple[int, str], int, str]] = []
        for root, (_uri, local) in enumerate(self.roots):
            for dirpath, _dirs, names in os.walk(local):
                for n in names:
                    full = os.path.join(dirpath, n)
                    rel = os.path.relpath(full, local).replace(os.sep, "/")
                    if _skip_name(rel):
                        continue
                    try:
                        st = os.stat(full)
                    except OSError:
                        continue
                    if st.st_mtime_ns != SYNCED_NS:
                        todo.append((_order(rel), root, rel))
        for _o, root, rel in sorted(todo):
            uri, local = self.roots[root]
            full = os.path.join(local, rel)
            try:
                with open(full, "rb") as src, storage.publish(f"{uri}/{rel}") as dst:
                    shutil.copyfileobj(src, dst, 1 << 22)
                os.utime(full, ns=(SYNCED_NS, SYNCED_NS))
                size = os.path.getsize(full)
            except FileNotFoundError:
                continue  # removed meanwhile by another task of this node
            out.pushed.append((root, rel, size))
        for root, rel in sorted(need):
            if not os.path.exists(os.path.join(self.roots[root][1], rel)):
                storage.remove(f"{self.roots[root][0]}/{rel}")
                out.deleted.append((root, rel))
        return out

    # -- driver side --------------------------------------------------------------------------
    def absorb(self, outcome: NodeOutcome, mirrors: list[Any]) -> Any:
        """Take in what a task on another node published: the driver copies the small files and
        the ones it reads itself, and records the others as on the store only."""
        for root, rel, size in outcome.pushed:
            m = mirrors[root]
            m.record(rel, size)
            self.seen[0] += 1
            self.seen[1] += size
            if driver_copies(rel, size) or _kind(rel) in _DRIVER_READS:
                m.fetch(m.local / rel)
                self.copied[0] += 1
                self.copied[1] += size
        for root, rel in outcome.deleted:
            m = mirrors[root]
            try:
                os.remove(m.local / rel)
            except OSError:
                pass
            m.state.pop(rel, None)
            m.remote.pop(rel, None)
        return outcome.result


def late_pulls(fn: Any, pull: Any) -> Any:
    """``fn()``, run again each time it failed on a missing staging file that ``pull(path)`` could
    copy from the store (tasks and reduces write their outputs whole, so a re-run is safe)."""
    tried: set[str] = set()
    for _ in range(MAX_LATE_PULLS):
        try:
            return fn()
        except Exception as e:  # noqa: BLE001 - re-raised unless the store had the missing file
            names = [getattr(e, "filename", None), *_PATH_IN_TEXT.findall(str(e))]
            paths = [os.path.abspath(n.rstrip(":;,.")) for n in names if isinstance(n, str) and n.strip()]
            fresh = [p for p in paths if p not in tried and not os.path.exists(p)]
            tried.update(fresh)
            if not any(pull(p) for p in fresh):
                raise
    return fn()


def driver_call(mirrors: list[Any], fn: Any, mentions: Any = None) -> Any:
    """Run a driver-side step (a prepare, a reduce, a finish) whose files may be on the store only:
    the files (not folders) ``mentions`` names are copied first; when the step fails on a file the
    store holds, that file and the other pieces' files of its kind are copied and the step runs
    again (once per kind: from then on the driver copies such files as soon as a task publishes
    them). A reduce that only hands folder names to its fanned-out tasks copies nothing."""
    if not mirrors:
        return fn()
    found: set[str] = set()
    if any(m.remote for m in mirrors):
        _mentions(mentions, [str(m.local) for m in mirrors], found, 0)
    for path in sorted(found):
        for m in mirrors:
            rel = m.rel(path)
            if rel is not None and rel in m.remote:
                m.fetch(path)

    def pull(path: str) -> bool:
        got = 0
        for m in mirrors:
            rel = m.rel(path)
            if rel is None:
                continue
            kind = _kind(rel)
            _DRIVER_READS.add(kind)
            got += m.fetch(path)
            got += sum(m.fetch(m.local / r) for r in [r for r in m.remote if _kind(r) == kind])
        return got > 0

    return late_pulls(fn, pull)


def _kind(rel: str) -> str:
    """A file's name with its piece keys left out: ``stages/s/*.keys.npz`` for
    ``stages/s/000003-0000.keys.npz``."""
    return "/".join("*" + p[11:] if _PIECE.match(p) else _NUMBERED.sub(r"\1#", p) for p in rel.split("/"))


def run_on_node(staging: NodeStaging | None, fn: Any, item: Any) -> Any:
    """Run ``fn(item)``: as it is on the driver's disk (copying from the store only what the
    driver holds no copy of), through the store on any other node."""
    if staging is None:
        return fn(item)
    need: set[tuple[int, str]] = set()
    if staging.shared():
        if staging.lazy:
            need = staging.prefetch(item)
        return late_pulls(lambda: fn(item), lambda p: bool(staging._pull_path(p, None, need)))
    staging.ensure_fresh()
    need = staging.prefetch(item)
    result = late_pulls(lambda: fn(item), lambda p: bool(staging._pull_path(p, None, need)))
    out = staging.push(need)
    out.result = result
    return out


def _token_path(local: str, suffix: str = ".node") -> str:
    return local.rstrip("/") + suffix


def _write_token(local: str, token: str, suffix: str = ".node") -> None:
    path = _token_path(local, suffix)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path + ".tmp", "w") as f:
        f.write(token + "\n")
    os.replace(path + ".tmp", path)


def _wanted(below: str, key: str | None) -> bool:
    """A file under a mentioned folder: shared files always, per-piece ones of this piece only."""
    for part in below.split("/"):
        if _PIECE.match(part):
            return key is not None and part.startswith(key)
    return True


def _piece_key(task: Any) -> str | None:
    """The key of the piece a pass or scan task works on (None for other tasks)."""
    if isinstance(task, tuple) and len(task) == 2 and isinstance(task[0], int):
        task = task[1]
    src = getattr(task, "source", None)
    piece = getattr(src, "piece", None)
    if piece is None:
        return None
    return f"{piece.shard.index:06d}-{piece.index:04d}"


def _mentions(obj: Any, roots: list[str], out: set[str], depth: int) -> None:
    """Collect the strings and paths in ``obj`` (dataclasses, containers) under a staging folder."""
    if depth > 12 or obj is None or isinstance(obj, (int, float, bool, bytes)):
        return
    if isinstance(obj, (str, Path)):
        s = os.path.abspath(str(obj)) if isinstance(obj, Path) or obj.startswith("/") else None
        if s is not None and any(s == r or s.startswith(r + os.sep) for r in roots):
            out.add(s)
        return
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        for f in dataclasses.fields(obj):
            _mentions(getattr(obj, f.name, None), roots, out, depth + 1)
    elif isinstance(obj, dict):
        for k, v in obj.items():
            _mentions(k, roots, out, depth + 1)
            _mentions(v, roots, out, depth + 1)
    elif isinstance(obj, (list, tuple, set, frozenset)):
        for v in obj:
            _mentions(v, roots, out, depth + 1)

