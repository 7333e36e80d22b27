"""The exceptions dcurate raises for problems a user can fix.

Every error that reaches the command line is a :class:`DcurateError`: the CLI prints its message
(which names the file, line/row and field where that applies) and exits with status 2, without a
traceback. Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations


class DcurateError(Exception):
    """Base class: a problem with the user's input, recipe, model or environment."""


class InputError(DcurateError):
    """Unreadable, malformed or inconsistent input data (names the file, line/row and field)."""


class RecipeError(DcurateError):
    """An invalid recipe or parameter (names the stage index, the key and what is allowed)."""


class ModelError(DcurateError):
    """A missing, corrupt or unsuitable model file (fastText, ARPA, ...)."""


class PlanError(DcurateError):
    """A stage's plan cannot be met (e.g. a mixture that needs more epochs than allowed)."""
