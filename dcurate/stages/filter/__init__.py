"""filter: the stage (stage), Gopher/C4 text rules (rules) and --keep-if expressions (expr)."""

from collections.abc import Mapping
from typing import Any


def preload_modules(options: Mapping[str, Any]) -> list[str]:
    """Modules besides the stage's own that the pool's fork server warms for a filter stage with
    these options (recipe keys or CLI values): the text rules unless there are none
    (``preset: none`` and no ``rules``). Import-free: the console entry calls it at start-up."""
    if str(options.get("preset")) == "none" and not options.get("rules"):
        return []
    return ["dcurate.stages.filter.rules"]
