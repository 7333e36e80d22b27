"""The exceptions dcurate raises for problems a user can fix, and the exit codes they map to.

Every error that reaches the command line is printed as one line, ``dcurate: error: ...`` (naming
the file, line/row and field where that applies), without a traceback. Exit codes:

- 0 success
- 1 a data or run error (:class:`InputError`, :class:`ModelError`, :class:`PlanError`,
  :class:`RunError`; also a full disk, a read-only output, a killed worker)
- 2 a usage error (:class:`RecipeError`: a bad flag, recipe or parameter)
- 130 interrupted (Ctrl-C)
- 141 the reader of standard output went away (``dcurate ... - | head``): quiet exit
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_DATA = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130
EXIT_BROKEN_PIPE = 141  # the reader of stdout went away (128 + SIGPIPE, as a shell reports it)


class DcurateError(Exception):
    """Base class: a problem with the user's input, recipe, model or environment."""

    exit_code = EXIT_DATA


class InputError(DcurateError):
    """Unreadable, malformed or inconsistent input data (names the file, line/row and field)."""


class RecipeError(DcurateError):
    """An invalid recipe, flag or parameter (names the stage index, the key and what is allowed)."""

    exit_code = EXIT_USAGE


class ModelError(DcurateError):
    """A missing, corrupt or unsuitable model file (fastText, ARPA, ...)."""


class PlanError(DcurateError):
    """A stage's plan cannot be met (e.g. a mixture that needs more epochs than allowed)."""


class RunError(DcurateError):
    """The run itself failed (a worker was killed, the disk is full, ...); re-running resumes."""


def explain(exc: BaseException, output: str | None = None) -> tuple[str, int] | None:
    """One line and an exit code for an exception that is the environment's fault rather than a
    bug in dcurate (a full disk, a read-only folder, a killed worker, ...), or None. ``output``
    names the run's output for an OS error that names no file."""
    import errno

    if isinstance(exc, DcurateError):
        return str(exc), exc.exit_code
    if isinstance(exc, MemoryError):
        return "out of memory; use fewer --workers (or a smaller --split-size) and re-run to resume", EXIT_DATA
    if isinstance(exc, RecursionError):
        return "data or expression nested too deeply to process", EXIT_DATA
    if isinstance(exc, EOFError):
        return "unexpected end of file (an empty or truncated file); re-run with --force to recompute", EXIT_DATA
    if type(exc).__name__ == "BrokenProcessPool":
        return "a worker was killed (out of memory?); re-run to resume", EXIT_DATA
    if not isinstance(exc, OSError):
        return None
    where = exc.filename if exc.filename is not None else (f"the output {output}" if output else "a file")
    code = exc.errno
    if code == errno.ENOSPC:
        return f"no space left on device writing {where}; free space and re-run to resume", EXIT_DATA
    if code == errno.EDQUOT:
        return f"disk quota exceeded writing {where}; free space and re-run to resume", EXIT_DATA
    if code == errno.EROFS:
        return f"cannot write {where}: read-only file system (choose a writable output folder)", EXIT_DATA
    if code in (errno.EACCES, errno.EPERM):
        return f"permission denied: {where}", EXIT_DATA
    if code == errno.ENOENT:
        return f"{where}: no such file or directory (did it vanish during the run? re-run to resume)", EXIT_DATA
    if code == errno.ELOOP:
        return f"{where}: too many levels of symbolic links (a symlink loop)", EXIT_DATA
    if code == errno.ENOTDIR:
        return f"{where}: a path component is a file, not a directory", EXIT_DATA
    if code == errno.EISDIR:
        return f"{where}: is a directory, not a file", EXIT_DATA
    if code == errno.EEXIST:
        return f"{where}: already exists", EXIT_DATA
    if code == errno.EIO:
        return f"input/output error on {where} (a failing disk?)", EXIT_DATA
    return f"{where}: {exc.strerror or exc}", EXIT_DATA


def is_interrupt(e: BaseException | None) -> bool:
    """Ctrl-C, also when an import turned it into another error (class creation wraps what
    ``__set_name__`` raises in a RuntimeError)."""
    for _ in range(8):
        if e is None:
            return False
        if isinstance(e, KeyboardInterrupt):
            return True
        e = e.__cause__ or e.__context__
    return False
