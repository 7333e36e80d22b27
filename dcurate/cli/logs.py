"""Logging flags accepted anywhere on the command line: ``-q/--quiet``, ``-v/--verbose`` and
``--log-format text|json``, and the logging set-up they choose.

``-v`` shows dcurate's debug messages but never the compiler logs of numba (megabytes of them);
``-q`` shows warnings and errors only (no progress, no summary); ``--log-format json`` writes
one JSON object per line (``time``, ``level``, ``message``) for cluster log collectors.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from dataclasses import dataclass

from dcurate.core.errors import RecipeError

#: Loggers of libraries that are never louder than warnings, whatever ``-v`` says.
QUIET_LIBRARIES = ("numba", "numba.core", "numba.core.ssa", "numba.core.byteflow", "numba.core.interpreter",
                   "urllib3", "matplotlib", "fsspec", "filelock", "ray")


@dataclass
class LogFlags:
    verbosity: int = 0  # -1 quiet, 0 normal, 1 verbose
    fmt: str = "text"


def extract(args: list[str]) -> tuple[list[str], LogFlags]:
    """Remove the logging flags from ``args`` (wherever they are, up to a ``--``)."""
    flags = LogFlags()
    out: list[str] = []
    i = 0
    while i < len(args):
        a = args[i]
        if a == "--":
            out.extend(args[i:])
            break
        if a in ("-q", "--quiet"):
            flags.verbosity = -1
        elif a in ("-v", "--verbose"):
            flags.verbosity = 1
        elif a == "--log-format" or a.startswith("--log-format="):
            if "=" in a:
                value = a.split("=", 1)[1]
            elif i + 1 < len(args):
                i += 1
                value = args[i]
            else:
                raise RecipeError("--log-format needs a value: text or json")
            if value not in ("text", "json"):
                raise RecipeError(f"--log-format must be text or json, not {value!r}")
            flags.fmt = value
        else:
            out.append(a)
        i += 1
    return out, flags


class JsonFormatter(logging.Formatter):
    """One JSON object per record; a record's ``data`` extra (e.g. the run summary) goes along."""

    json_lines = True

    def format(self, record: logging.LogRecord) -> str:
        obj = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        data = getattr(record, "data", None)
        if data is not None:
            obj["data"] = data
        return json.dumps(obj, ensure_ascii=False, default=str)


def configure(flags: LogFlags) -> None:
    """Set up the ``dcurate`` logger on stderr (idempotent: replaces its previous handler)."""
    level = {-1: logging.WARNING, 0: logging.INFO, 1: logging.DEBUG}[flags.verbosity]
    logger = logging.getLogger("dcurate")
    for h in list(logger.handlers):
        if getattr(h, "_dcurate", False):
            logger.removeHandler(h)
    handler = logging.StreamHandler(sys.stderr)
    handler._dcurate = True  # type: ignore[attr-defined]
    handler.setFormatter(JsonFormatter() if flags.fmt == "json" else logging.Formatter("dcurate: %(message)s"))
    logger.addHandler(handler)
    logger.setLevel(level)
    logger.propagate = False
    for name in QUIET_LIBRARIES:
        logging.getLogger(name).setLevel(logging.WARNING)
    if flags.verbosity > 0:
        logging.getLogger().setLevel(logging.INFO)  # other libraries' info, not their debug output
