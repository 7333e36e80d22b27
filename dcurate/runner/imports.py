"""Keep packages a command never uses from being imported by libraries' availability probes.

pyarrow imports pandas on its first ``pa.array`` call that could be a pandas object (~0.3 CPU s),
and numba imports scipy.linalg on its first compiled-function load only to look for BLAS
(~0.3 CPU s). A command that uses neither installs :class:`Absent` for them: importing them then
raises ImportError, which both libraries handle as "not installed". The CLI does it for its own
process and passes the list to the pool's fork server in ``DCURATE_ABSENT``
(:mod:`dcurate.runner.warmup`); ``DCURATE_ALL_IMPORTS=1`` turns it off.
"""

from __future__ import annotations

import os
import sys

__all__ = ["Absent", "hide"]


class Absent:
    """A meta-path finder and loader under which importing ``packages`` raises ImportError
    (lookups such as ``importlib.util.find_spec`` still succeed)."""

    def __init__(self, packages: tuple[str, ...]):
        self.packages = packages

    def find_spec(self, name: str, path=None, target=None):
        if name.split(".", 1)[0] in self.packages:
            from importlib.machinery import ModuleSpec

            return ModuleSpec(name, self)  # type: ignore[arg-type]  # a Loader by protocol
        return None

    def create_module(self, spec):
        raise ImportError(f"{spec.name} is not used by this command")

    def exec_module(self, module) -> None:  # pragma: no cover - create_module raises first
        raise ImportError(module.__name__)


def hide(packages: tuple[str, ...]) -> bool:
    """Install :class:`Absent` for those of ``packages`` not imported yet (unless
    ``DCURATE_ALL_IMPORTS`` is set); record them in ``DCURATE_ABSENT`` for the fork server."""
    if os.environ.get("DCURATE_ALL_IMPORTS") is not None:
        return False
    todo = tuple(p for p in packages if p not in sys.modules)
    if not todo:
        return False
    sys.meta_path.insert(0, Absent(todo))  # type: ignore[arg-type]
    os.environ["DCURATE_ABSENT"] = ",".join(todo)
    return True
