"""Test-only fault injection: ignored unless ``DCURATE_FAULT`` is set (tests/test_faults.py).

``DCURATE_FAULT=PHASE:COUNT:ACTION`` makes a run fail at a precise point, so that the fault
matrix needs no sleeps to hit a phase. ``PHASE`` names the kind of task (``pass``, ``scan``,
``merge``, ``reshard``) or the driver's ``reduce``; a trailing number picks one pass index or scan
/ reduce round (``pass1``, ``scan0``, ``reduce2``), without it any matches. ``COUNT`` (1-based)
is the COUNT-th time the point is reached in the process that acts. ``ACTION``:

- ``kill-driver``: the driver kills itself with SIGKILL after its COUNT-th result of PHASE (for
  ``reduce``: before the plan of that round is written);
- ``sigint``: the same point, SIGINT (as Ctrl-C) instead;
- ``kill-worker``: the pool process running its COUNT-th task of PHASE kills itself with SIGKILL
  once the task's outputs are written and before its marker is (the point a resume must get
  right); the driver then leaves every task to the pool instead of running some itself (under
  Ray, the task's worker dies and Ray retries the task; with ``DCURATE_FAULT_ONCE=FILE`` only the
  first worker to reach the point, of any process, is killed: it creates FILE first);
- ``enospc``: the next atomic write (dcurate.io.atomic) of the COUNT-th task of PHASE fails with
  ENOSPC, as a full disk would (for ``reduce``: the plan write).

Never set it outside tests.
"""

from __future__ import annotations

import os
import re
import signal
from dataclasses import dataclass

ACTIONS = ("kill-driver", "sigint", "kill-worker", "enospc")
DRIVER_ACTIONS = ("kill-driver", "sigint")
_SPEC_RE = re.compile(r"^(pass|scan|reduce|merge|reshard)(\d*):(\d+):([a-z-]+)$")


@dataclass
class Fault:
    phase: str
    number: int | None
    count: int
    action: str
    seen: int = 0

    def matches(self, phase: str) -> bool:
        m = re.match(r"^([a-z]+)(\d*)$", phase)
        if m is None or m.group(1) != self.phase:
            return False
        return self.number is None or (m.group(2) != "" and int(m.group(2)) == self.number)


def parse(value: str) -> Fault:
    m = _SPEC_RE.match(value.strip())
    if m is None or m.group(4) not in ACTIONS or int(m.group(3)) < 1:
        raise ValueError(f"DCURATE_FAULT={value!r}: expected PHASE:COUNT:ACTION, ACTION one of {', '.join(ACTIONS)}")
    return Fault(m.group(1), int(m.group(2)) if m.group(2) else None, int(m.group(3)), m.group(4))


_FAULT: Fault | None = None
_LOADED = False
WORKER = False  # set in pool processes (dcurate.runner.executor)


def _fault() -> Fault | None:
    global _FAULT, _LOADED
    if not _LOADED:
        value = os.environ.get("DCURATE_FAULT")
        _FAULT = parse(value) if value else None
        _LOADED = True
    return _FAULT


def pool_only() -> bool:
    """Whether the driver leaves every task to the pool (so that ``kill-worker`` hits a worker)."""
    f = _fault()
    return f is not None and f.action == "kill-worker"


def _due(phase: str, actions: tuple[str, ...]) -> Fault | None:
    f = _fault()
    if f is None or f.action not in actions or not f.matches(phase):
        return None
    f.seen += 1
    return f if f.seen == f.count else None


def driver_point(phase: str) -> None:
    """The driver got one result of ``phase`` (or is about to write a reduce round's plan)."""
    f = _due(phase, DRIVER_ACTIONS + (("enospc",) if phase.startswith("reduce") else ()))
    if f is None:
        return
    if f.action == "enospc":
        _arm_enospc()
    else:
        os.kill(os.getpid(), signal.SIGKILL if f.action == "kill-driver" else signal.SIGINT)


def task_start(phase: str) -> None:
    """A worker starts a task of ``phase``."""
    if _due(phase, ("enospc",)) is not None:
        _arm_enospc()


def task_written(phase: str) -> None:
    """A worker wrote a task's outputs and is about to write its marker."""
    f = _fault()
    if f is not None and f.action == "kill-worker" and WORKER and _due(phase, ("kill-worker",)) is not None:
        once = os.environ.get("DCURATE_FAULT_ONCE")
        if once:
            try:
                os.close(os.open(once, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
            except FileExistsError:
                return  # another worker was killed already
        os.kill(os.getpid(), signal.SIGKILL)


def _arm_enospc() -> None:
    from dcurate.io import atomic

    atomic.fail_next_write()
