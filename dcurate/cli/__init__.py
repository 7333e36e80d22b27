"""The command line: the Typer app (app) and the console entry point (entry)."""

from __future__ import annotations

#: Set by the console entry (:mod:`dcurate.cli.entry`) before it imports :mod:`dcurate.cli.app` when
#: the line runs one stage's command (``dcurate dedup IN OUT``): the app then imports only that
#: stage's module and builds only its command, besides the commands that import no stage module.
#: ``None`` (an import from Python, ``dcurate --help``, ``dcurate run``): every command.
ONLY_STAGE: str | None = None
