"""Path safety: nothing dcurate writes may be, contain or lie inside anything it reads.

Every input (file, directory, or the files a glob matches) is resolved with symlinks followed,
and every path dcurate will write (OUT, the work folder, ``--rejected``, ``--clusters``, model and
plan outputs, the stdin spool) is checked against all of them before any work starts.
"""

from __future__ import annotations

import glob as _glob
import os
import re
from collections.abc import Iterable
from pathlib import Path

from dcurate.core.errors import RecipeError

STDIN = "-"
#: URI schemes dcurate can write (an atomic publish and a conditional create exist for them); every
#: other scheme (gs://, hf://, ...) is read-only.
WRITABLE_SCHEMES = ("s3",)


_URI = re.compile(r"^([a-zA-Z][a-zA-Z0-9+.-]+)://(.*)$")


def _uri_path(path: str) -> Path | None:
    """An object-store URI as a path in a namespace of its own (``s3://b/out`` ->
    ``/\0s3/b/out``: no local path can equal it), so that a folder URI means its key prefix plus
    ``/`` (``s3://b/out2`` is not inside ``s3://b/out``); None for local paths and ``file://``."""
    m = _URI.match(path)
    if m is None or m.group(1).lower() == "file":
        return None
    return Path("/", "\0" + m.group(1).lower(), *[p for p in m.group(2).split("/") if p])


def resolve(path: str | os.PathLike) -> Path:
    """Absolute path with every symlink of its existing part followed (URIs: see _uri_path)."""
    uri = _uri_path(str(path))
    if uri is not None:
        return uri
    return Path(os.path.realpath(os.path.abspath(os.path.expanduser(str(path)))))


def input_paths(inputs: Iterable[str | os.PathLike]) -> list[tuple[str, Path]]:
    """(as given, resolved) for every input file or directory; globs are expanded."""
    out: list[tuple[str, Path]] = []
    for item in inputs:
        s = str(item)
        if s == STDIN:
            continue
        if any(c in s for c in "*?[") and _uri_path(s) is not None:
            # the folder the pattern lists: nothing may be written inside it
            base = s[: min(s.index(c) for c in "*?[" if c in s)].rsplit("/", 1)[0]
            out.append((s, resolve(base)))
            continue
        if any(c in s for c in "*?[") and not os.path.exists(s):
            for m in sorted(_glob.glob(s, recursive=True)):
                out.append((m, resolve(m)))
            continue
        out.append((s, resolve(s)))
    return out


def _relation(w: Path, r: Path) -> str | None:
    if w == r:
        return "is"
    if r in w.parents:
        return "is inside"
    if w in r.parents:
        return "contains"
    return None


def check_writes(inputs: Iterable[str | os.PathLike], writes: dict[str, str | os.PathLike | None]) -> None:
    """Refuse (a usage error: RecipeError, one line, exit 2) when a written path equals, is inside or contains an input.

    ``writes`` maps a label ("the output", "--workdir", ...) to the path written (None = unused).
    """
    for label, w in writes.items():
        check_writable(label, w)
    ins = input_paths(inputs)
    for label, w in writes.items():
        if w is None or str(w) == STDIN:
            continue
        wr = resolve(w)
        for given, r in ins:
            rel = _relation(wr, r)
            if rel is not None:
                raise RecipeError(f"refusing to write {label} {w}: it {rel} the input {given}")


def check_writable(label: str, path: str | os.PathLike | None) -> None:
    """Refuse (usage error) writing ``path`` to a URI scheme dcurate cannot write."""
    m = _URI.match(str(path)) if path is not None else None
    if m is None or m.group(1).lower() == "file" or m.group(1).lower() in WRITABLE_SCHEMES:
        return
    supported = ", ".join(f"{s}://" for s in WRITABLE_SCHEMES)
    raise RecipeError(f"refusing to write {label} {path}: {m.group(1).lower()}:// is read-only for dcurate "
                      f"(writes go to local paths or {supported}; reads take any supported URI)")


def check_not_inside(label: str, path: str | os.PathLike | None, other_label: str, other: str | os.PathLike | None) -> None:
    """Refuse ``path`` when it equals or lies inside ``other`` (or contains it)."""
    if path is None or other is None or str(path) == STDIN or str(other) == STDIN:
        return
    rel = _relation(resolve(path), resolve(other))
    if rel is not None:
        raise RecipeError(f"refusing {label} {path}: it {rel} {other_label} {other}")
